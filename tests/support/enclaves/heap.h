/* The heap test enclave's edge (heap.c, heap_app.c). */
#ifndef HEAP_TEST_H
#define HEAP_TEST_H
#include <stdint.h>

#define HEAP_MAX_BLOCKS 512
#define HEAP_BIG (8192 - 64)        /* nearly all of the test's 8 KiB heap */

struct heap_report {
    uint64_t blocks;                /* 100-byte blocks that fit */
    uint64_t in_enclave;            /* of them, inside ELRANGE */
    uint64_t big_before_merge;      /* a HEAP_BIG block with every other block freed */
    uint64_t big_after_merge;       /* ... with all freed */
};
#endif
