/* A pure compute loop for benchmarks: compute [iterations] (default 1000000) of xorshift64. */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 0) : 1000000UL;
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    uint64_t acc = 0;
    for (unsigned long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc += x * 6364136223846793005ULL + 1442695040888963407ULL;
    }
    printf("compute: %lu iterations, result %#018lx\n", n, (unsigned long)(x ^ acc));
    return 0;
}
