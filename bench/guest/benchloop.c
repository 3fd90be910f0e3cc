/* Runs bench_loop between two console lines the benchmark times. */
#include "libc.h"

unsigned long bench_loop(unsigned long iterations);

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 0) : 40000000UL;
    printf("bench: start %lu\n", n);
    unsigned long r = bench_loop(n);
    printf("bench: done %#lx\n", r);
    return 0;
}
