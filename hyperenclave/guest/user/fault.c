/* fault [pf|wp|gp|ud|de|unmap|kernel|oops]: trigger a fault (default pf, a NULL write).
 * "oops" crashes the kernel through /dev/sysrq-trigger; "kernel" passes a kernel pointer to write(). */
#include "libc.h"

int main(int argc, char **argv)
{
    const char *kind = argc > 1 ? argv[1] : "pf";
    printf("fault: triggering %s\n", kind);
    if (!strcmp(kind, "gp"))
        __asm__ volatile("hlt");                      /* privileged: #GP(0) */
    else if (!strcmp(kind, "ud"))
        __asm__ volatile("ud2");
    else if (!strcmp(kind, "de"))
        __asm__ volatile("xorl %%ecx, %%ecx; movl $1, %%eax; xorl %%edx, %%edx; divl %%ecx"
                         ::: "eax", "ecx", "edx");
    else if (!strcmp(kind, "wp"))
        *(volatile int *)(uintptr_t)main = 0;          /* write to read-only text */
    else if (!strcmp(kind, "kernel"))
        write(1, (void *)0xffffffff80100000UL, 16);     /* kernel pointer: -EFAULT */
    else if (!strcmp(kind, "unmap")) {                  /* use after munmap: stale TLB? */
        volatile char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        m[0] = 1;
        munmap((void *)m, 4096);
        m[0] = 2;
    } else if (!strcmp(kind, "oops")) {
        int fd = open("/dev/sysrq-trigger", O_WRONLY);
        write(fd, "c", 1);
    } else
        *(volatile int *)0 = 1;
    printf("fault: nothing happened\n");
    return 0;
}
