/* cpuidloop N: executes exactly N CPUID instructions (leaf 0) with nothing in between that
 * could leave the guest, then prints "cpuidloop: done N" (to count CPUID exits). */
#include "libc.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        printf("usage: cpuidloop N\n");
        return 2;
    }
    unsigned long n = strtoul(argv[1], NULL, 0), left = n;
    if (left)
        __asm__ volatile("1: xorl %%eax, %%eax\n\t"
                         "xorl %%ecx, %%ecx\n\t"
                         "cpuid\n\t"
                         "dec %0\n\t"
                         "jnz 1b"
                         : "+r"(left) : : "rax", "rbx", "rcx", "rdx", "memory");
    printf("cpuidloop: done %lu\n", n);
    return 0;
}
