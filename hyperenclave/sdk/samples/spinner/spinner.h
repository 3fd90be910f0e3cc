/* The spinner enclave's edge functions (app: app.c): a long loop for AEX tests. */
#ifndef SPINNER_H
#define SPINNER_H
#include <stdint.h>

#define SPINNER_ECALL_SPIN 0    /* in: uint64_t iterations; out: uint64_t checksum */

/* The checksum of `iterations` rounds of a 64-bit LCG with an xorshift, from `seed`. */
static inline uint64_t spinner_checksum(uint64_t seed, uint64_t iterations)
{
    uint64_t x = seed;
    for (uint64_t i = 0; i < iterations; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        x ^= x >> 29;
    }
    return x;
}
#define SPINNER_SEED 0x5eed
#endif
