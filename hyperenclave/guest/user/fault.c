/* fault [pf|wp|gp|ud|de]: trigger a fault in user mode (default pf). */
#include "libc.h"

int main(int argc, char **argv)
{
    const char *kind = argc > 1 ? argv[1] : "pf";
    printf("fault: triggering %s\n", kind);
    if (!strcmp(kind, "gp"))
        __asm__ volatile("hlt");                      /* privileged: #GP(0) */
    else if (!strcmp(kind, "ud"))
        __asm__ volatile("ud2");
    else if (!strcmp(kind, "de")) {
        volatile int zero = 0;
        printf("%d\n", 1 / zero);
    } else if (!strcmp(kind, "wp"))
        *(volatile int *)(uintptr_t)main = 0;          /* write to read-only text */
    else if (!strcmp(kind, "kernel"))
        write(1, (void *)0xffffffff80100000UL, 16);     /* kernel pointer: -EFAULT */
    else
        *(volatile int *)0 = 1;
    printf("fault: nothing happened\n");
    return 0;
}
