/* hello_app [A B] [--quote NONCE]: create the hello enclave, ECALL add(A, B) (the enclave prints
 * through an OCALL), print the sum; with --quote, print the enclave's quote bundle for the
 * verifier's NONCE (text, 1-64 bytes); destroy the enclave. */
#include "libc.h"
#include "he_urts.h"
#include "hello.h"

#define HELLO_QUOTE_MAX (16 * 1024)

static long print(struct he_ms *ms)
{
    if (ms->in_size > ms->size)
        return -1;
    int n = (int)strnlen((const char *)ms->data, ms->in_size);
    printf("hello_app: OCALL print: %.*s\n", n, (const char *)ms->data);
    return n;
}

static const he_ocall_fn ocalls[] = {[HELLO_OCALL_PRINT] = print};

int main(int argc, char **argv)
{
    struct hello_add_args args = {2, 40};
    const char *nonce = NULL;
    if (argc >= 3 && !strcmp(argv[argc - 2], "--quote")) {
        nonce = argv[argc - 1];
        argc -= 2;
    }
    if (argc == 3) {
        args.a = strtoul(argv[1], NULL, 0);
        args.b = strtoul(argv[2], NULL, 0);
    } else if (argc != 1) {
        printf("usage: hello_app [A B] [--quote NONCE]\n");
        return 2;
    }
    struct he_enclave e;
    long status = he_enclave_create(&e, "/enclaves/hello.bin", ocalls, 1, "hello_app");
    if (status)
        return 1;
    memcpy(e.ms->data, &args, sizeof(args));
    e.ms->in_size = sizeof(args);
    status = he_ecall(&e, HELLO_ECALL_ADD, e.ms);
    if (status) {
        printf("hello_app: ECALL add failed: %s (%#lx)\n", he_status_name(status), status);
    } else {
        uint64_t sum;
        memcpy(&sum, e.ms->data, sizeof(sum));
        printf("hello_app: ECALL add(%lu, %lu) = %lu\n", (unsigned long)args.a,
               (unsigned long)args.b, (unsigned long)sum);
    }
    if (!status && nonce) {
        static uint8_t quote[HELLO_QUOTE_MAX];
        size_t length = 0;
        status = he_quote(&e, nonce, strlen(nonce), quote, sizeof(quote), &length);
        printf("hello_app: quote for nonce \"%s\": %s, %lu bytes\n", nonce,
               he_status_name(status), (unsigned long)length);
        if (!status)
            he_print_quote("hello_app", quote, length);
    }
    he_enclave_destroy(&e);
    printf("hello_app: enclave destroyed\n");
    return status ? 1 : 0;
}
