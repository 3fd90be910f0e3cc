/* Prints the CPU vendor, VMX support and the hypervisor signature from CPUID leaf 0x40000000. */
#include "libc.h"

static int printable(const char *s, int n)
{
    int any = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] == 0)
            continue;
        if (s[i] < 0x20 || s[i] > 0x7e)
            return 0;
        any = 1;
    }
    return any;
}

int main(void)
{
    uint32_t r[4];
    char vendor[13], sig[13];
    cpuid(0, 0, r);
    memcpy(vendor, &r[1], 4);
    memcpy(vendor + 4, &r[3], 4);
    memcpy(vendor + 8, &r[2], 4);
    vendor[12] = 0;
    printf("cpuid: vendor %s, max basic leaf %#x\n", vendor, r[0]);
    cpuid(1, 0, r);
    int hv = (r[2] >> 31) & 1;
    printf("cpuid: hypervisor present bit %d\n", hv);
    printf("cpuid: vmx supported %d\n", (r[2] >> 5) & 1);
    cpuid(0x40000000, 0, r);
    memcpy(sig, &r[1], 4);
    memcpy(sig + 4, &r[2], 4);
    memcpy(sig + 8, &r[3], 4);
    sig[12] = 0;
    if (printable(sig, 12))
        printf("cpuid: hypervisor signature \"%s\" (max leaf %#x)\n", sig, r[0]);
    else
        printf("cpuid: hypervisor signature none\n");
    return 0;
}
