/* sleep [milliseconds] (default 100): nanosleep, then report the elapsed time. */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long ms = argc > 1 ? strtoul(argv[1], NULL, 0) : 100;
    struct timespec a, b, req = {(long)(ms / 1000), (long)(ms % 1000) * 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &a);
    nanosleep(&req, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long el = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("sleep: slept %lu ms (asked %lu ms)\n", (unsigned long)el, ms);
    return 0;
}
