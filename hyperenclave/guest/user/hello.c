/* The first user program: greets, shows its arguments and does a small computation. */
#include "libc.h"

static unsigned long fib(unsigned n)
{
    unsigned long a = 0, b = 1;
    while (n--) {
        unsigned long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

int main(int argc, char **argv)
{
    printf("Hello from user space, pid %d\n", getpid());
    for (int i = 1; i < argc; i++)
        printf("argv[%d] = %s\n", i, argv[i]);
    unsigned long sum = 0;
    for (unsigned long i = 1; i <= 100; i++)
        sum += i * i;
    printf("hello: sum of squares 1..100 = %lu, fib(50) = %lu\n", sum, fib(50));
    return 0;
}
