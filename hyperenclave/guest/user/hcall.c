/* hcall CODE [ARG0 [ARG1]]: VMCALL from CPL 3 with RAX = CODE, RDI = ARG0, RSI = ARG1, then
 * prints RAX. Numbers are C literals (0x... or decimal, '-' allowed). */
#include "libc.h"

static unsigned long number(const char *s)
{
    return s[0] == '-' ? -strtoul(s + 1, NULL, 0) : strtoul(s, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        printf("usage: hcall CODE [ARG0 [ARG1]]\n");
        return 2;
    }
    unsigned long code = number(argv[1]);
    unsigned long arg0 = argc > 2 ? number(argv[2]) : 0, arg1 = argc > 3 ? number(argv[3]) : 0;
    long ret;
    __asm__ volatile("vmcall" : "=a"(ret) : "a"(code), "D"(arg0), "S"(arg1) : "memory");
    printf("hcall: %#lx(%#lx, %#lx) = %ld (%#lx)\n", code, arg0, arg1, ret, ret);
    return 0;
}
