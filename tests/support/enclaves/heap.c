/* A test enclave for the trusted runtime's heap: ECALL 0 fills the heap with 100-byte blocks,
 * frees them, and checks that the freed blocks merged back into one that takes nearly the
 * whole heap. out: struct heap_report. */
#include "he_trts.h"
#include "heap.h"

static long exercise(struct he_ms *ms)
{
    static void *blocks[HEAP_MAX_BLOCKS];
    struct heap_report r = {0, 0, 0, 0};
    while (r.blocks < HEAP_MAX_BLOCKS && (blocks[r.blocks] = he_malloc(100))) {
        memset(blocks[r.blocks], 0xa5, 100);
        r.blocks++;
    }
    for (uint64_t i = 0; i < r.blocks; i++)
        r.in_enclave += he_is_within_enclave(blocks[i], 100);
    for (uint64_t i = 0; i < r.blocks; i += 2)      /* every other one first: no merging yet */
        he_free(blocks[i]);
    r.big_before_merge = he_malloc(HEAP_BIG) != NULL;
    for (uint64_t i = 1; i < r.blocks; i += 2)
        he_free(blocks[i]);
    void *big = he_malloc(HEAP_BIG);
    r.big_after_merge = big != NULL && he_is_within_enclave(big, HEAP_BIG);
    return he_ms_out(ms, &r, sizeof(r));
}

HE_ECALL_TABLE(exercise);
