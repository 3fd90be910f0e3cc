/* spinner_app [ITERATIONS]: the spinner ECALL, its result next to the same loop run outside
 * the enclave, and how many AEXs the ECALL took. */
#include "libc.h"
#include "he_urts.h"
#include "spinner.h"

int main(int argc, char **argv)
{
    uint64_t iterations = argc > 1 ? strtoul(argv[1], NULL, 0) : 10000000;
    struct he_enclave e;
    if (he_enclave_create(&e, "/enclaves/spinner.bin", NULL, 0, "spinner_app"))
        return 1;
    memcpy(e.ms->data, &iterations, sizeof(iterations));
    e.ms->in_size = sizeof(iterations);
    long status = he_ecall(&e, SPINNER_ECALL_SPIN, e.ms);
    uint64_t inside = 0, outside = spinner_checksum(SPINNER_SEED, iterations);
    memcpy(&inside, e.ms->data, sizeof(inside));
    he_enclave_destroy(&e);
    if (status) {
        printf("spinner_app: ECALL spin failed: %s (%#lx)\n", he_status_name(status), status);
        return 1;
    }
    printf("spinner_app: %lu iterations: checksum %#lx in the enclave after %lu AEX, %#lx "
           "outside: %s\n", (unsigned long)iterations, (unsigned long)inside, e.aex_count,
           (unsigned long)outside, inside == outside ? "equal" : "DIFFERENT");
    return inside == outside ? 0 : 1;
}
