/* Dereferences NULL: the kernel must report a segfault, kill this process and go on. */
#include "libc.h"

int main(void)
{
    printf("segv: reading from address 0 (pid %d)\n", getpid());
    volatile int *p = (volatile int *)0;
    int v = *p;
    printf("segv: survived?! read %d\n", v);
    return 1;
}
