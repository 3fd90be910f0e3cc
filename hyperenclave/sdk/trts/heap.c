/*
 * The enclave heap: first fit over the pages the signer reserved (he_enclave_config.heap_*),
 * blocks with a size header, split on allocation and merged with free neighbours on free.
 */
#include "he_trts.h"

extern struct he_enclave_config he_enclave_config;

struct block {
    uint64_t size;              /* bytes including this header, a multiple of 16 */
    uint64_t free;
};

static volatile int heap_lock;
static int heap_ready;

static struct block *heap_start(void)
{
    return (struct block *)(he_enclave_base() + he_enclave_config.heap_offset);
}

static struct block *heap_end(void)
{
    return (struct block *)((char *)heap_start() + he_enclave_config.heap_size);
}

static struct block *next(struct block *b) { return (struct block *)((char *)b + b->size); }

void *he_malloc(size_t size)
{
    if (!size || size > he_enclave_config.heap_size)
        return NULL;
    uint64_t need = (size + sizeof(struct block) + 15) & ~15UL;
    void *found = NULL;
    while (__atomic_exchange_n(&heap_lock, 1, __ATOMIC_ACQUIRE))
        ;
    if (!heap_ready && he_enclave_config.heap_size >= sizeof(struct block)) {
        *heap_start() = (struct block){he_enclave_config.heap_size & ~15UL, 1};
        heap_ready = 1;
    }
    for (struct block *b = heap_start(); heap_ready && b < heap_end(); b = next(b)) {
        if (!b->free || b->size < need)
            continue;
        if (b->size - need >= 2 * sizeof(struct block)) {
            struct block *rest = (struct block *)((char *)b + need);
            *rest = (struct block){b->size - need, 1};
            b->size = need;
        }
        b->free = 0;
        found = b + 1;
        break;
    }
    __atomic_store_n(&heap_lock, 0, __ATOMIC_RELEASE);
    return found;
}

void he_free(void *p)
{
    if (!p)
        return;
    while (__atomic_exchange_n(&heap_lock, 1, __ATOMIC_ACQUIRE))
        ;
    ((struct block *)p - 1)->free = 1;
    for (struct block *b = heap_start(); b < heap_end(); b = next(b))
        while (b->free && next(b) < heap_end() && next(b)->free)
            b->size += next(b)->size;
    __atomic_store_n(&heap_lock, 0, __ATOMIC_RELEASE);
}
