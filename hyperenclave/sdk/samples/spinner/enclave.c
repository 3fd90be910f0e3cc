/* The spinner enclave: ECALL 0 runs a long loop (preempted by timer AEXs, continued by
 * ERESUME) and returns its checksum. */
#include "he_trts.h"
#include "spinner.h"

static long spin(struct he_ms *ms)
{
    uint64_t iterations;
    long status = he_ms_in(ms, &iterations, sizeof(iterations));
    if (status)
        return status;
    uint64_t sum = spinner_checksum(SPINNER_SEED, iterations);
    return he_ms_out(ms, &sum, sizeof(sum));
}

HE_ECALL_TABLE(spin);
