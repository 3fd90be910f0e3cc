/* fault_app KIND: an ECALL that works, then ECALL KIND (1 = ud2, 2 = read address 0,
 * 3 = divide by zero), which faults inside the enclave: the runtime reports the exception the
 * enclave read from its SSA, every later ECALL is refused, and the app carries on. */
#include "libc.h"
#include "he_urts.h"
#include "faulter.h"

int main(int argc, char **argv)
{
    long kind = argc > 1 ? (long)strtoul(argv[1], NULL, 0) : FAULTER_ECALL_UD2;
    struct he_enclave e;
    if (he_enclave_create(&e, "/enclaves/faulter.bin", NULL, 0, "fault_app"))
        return 1;
    e.ms->in_size = 0;
    long status = he_ecall(&e, FAULTER_ECALL_NOTHING, e.ms);
    printf("fault_app: ECALL nothing: %s\n", he_status_name(status));
    status = he_ecall(&e, kind, e.ms);
    printf("fault_app: ECALL %ld: %s, EXITINFO %#lx (vector %lu), last host exception "
           "vector %ld\n", kind, he_status_name(status), (unsigned long)e.exitinfo,
           (unsigned long)(e.exitinfo & 0xff), he_last_exception);
    status = he_ecall(&e, FAULTER_ECALL_NOTHING, e.ms);
    printf("fault_app: ECALL nothing afterwards: %s\n", he_status_name(status));
    he_enclave_destroy(&e);
    printf("fault_app: enclave destroyed, the app goes on\n");
    return 0;
}
