/* The hello enclave: ECALL 0 adds two numbers and tells the app about it through OCALL 0
 * (print a string). */
#include "he_trts.h"
#include "hello.h"

static long add(struct he_ms *ms)
{
    struct hello_add_args args;
    long status = he_ms_in(ms, &args, sizeof(args));
    if (status)
        return status;
    uint64_t sum = args.a + args.b;
    char line[96];
    int n = snprintf(line, sizeof(line), "hello from the enclave: %lu + %lu = %lu",
                     (unsigned long)args.a, (unsigned long)args.b, (unsigned long)sum);
    long printed;
    status = he_ocall(HELLO_OCALL_PRINT, line, (size_t)n + 1, NULL, 0, &printed);
    if (status)
        return status;
    return he_ms_out(ms, &sum, sizeof(sum));
}

HE_ECALL_TABLE(add);
