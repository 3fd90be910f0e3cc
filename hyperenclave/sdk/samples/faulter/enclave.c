/* The faulter: ECALLs that raise an exception inside the enclave. Each is an AEX; the app's
 * runtime enters again with CSSA = 1 and the trusted runtime's SSA path aborts the enclave. */
#include "he_trts.h"
#include "faulter.h"

static long nothing(struct he_ms *ms) { (void)ms; return SGX_SUCCESS; }

static long ud2(struct he_ms *ms)
{
    (void)ms;
    __asm__ volatile("ud2");
    return SGX_ERROR_UNEXPECTED;
}

static long read_null(struct he_ms *ms)
{
    (void)ms;
    uint64_t value;
    __asm__ volatile("mov 0, %0" : "=r"(value) : : "memory");
    (void)value;
    return SGX_ERROR_UNEXPECTED;
}

static long divide(struct he_ms *ms)
{
    (void)ms;
    uint64_t zero = 0, q = 1;
    __asm__ volatile("xor %%edx, %%edx\n\tdiv %1" : "+a"(q) : "r"(zero) : "rdx");
    (void)q;
    return SGX_ERROR_UNEXPECTED;
}

HE_ECALL_TABLE(nothing, ud2, read_null, divide);
