/* sealer_app [--mrsigner] [--enclave PATH] seal TEXT...: seal TEXT (the words joined by
 * spaces) in the sealer enclave and print the blob in hex; policy MRENCLAVE (only this enclave
 * can open it) unless --mrsigner (every enclave of its signer can).
 * sealer_app [--enclave PATH] unseal HEX: have the enclave open the blob (which names its own
 * policy) and print its text, or the status it refused with (SGX_ERROR_MAC_MISMATCH for a
 * modified blob or another enclave's).
 * Exit status 0, 1 if the enclave refused, 2 for bad arguments. */
#include "libc.h"
#include "he_urts.h"
#include "sealer.h"

static const char USAGE[] =
    "usage: sealer_app [--mrsigner] [--enclave PATH] seal TEXT... | unseal HEX\n";

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* HEX -> bytes; the length, or -1 if it is not whole bytes of hex that fit in `max`. */
static long from_hex(const char *hex, uint8_t *out, size_t max)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > max)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (long)(n / 2);
}

/* TEXT... joined by single spaces; its length, or -1 if longer than SEALER_MAX_TEXT. */
static long join(int argc, char **argv, char *out)
{
    size_t n = 0;
    for (int i = 0; i < argc; i++) {
        size_t word = strlen(argv[i]) + (i > 0);
        if (n + word > SEALER_MAX_TEXT)
            return -1;
        if (i > 0)
            out[n++] = ' ';
        memcpy(out + n, argv[i], word - (i > 0));
        n += word - (i > 0);
    }
    return (long)n;
}

static int report(const char *what, long status)
{
    printf("sealer_app: %s failed: %s (%#lx)\n", what, he_status_name(status), status);
    return 1;
}

int main(int argc, char **argv)
{
    uint64_t policy = SGX_KEYPOLICY_MRENCLAVE;
    const char *path = "/enclaves/sealer.bin";
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        if (!strcmp(argv[i], "--mrsigner"))
            policy = SGX_KEYPOLICY_MRSIGNER;
        else if (!strcmp(argv[i], "--enclave") && i + 1 < argc)
            path = argv[++i];
        else
            break;
    }
    int sealing = i + 2 <= argc && !strcmp(argv[i], "seal");
    if (!sealing && !(i + 2 == argc && !strcmp(argv[i], "unseal"))) {
        printf("%s", USAGE);
        return 2;
    }
    static uint8_t in[sizeof(struct sealer_seal_args) + SEALER_MAX_BLOB];
    long n;
    if (sealing) {
        ((struct sealer_seal_args *)in)->policy = policy;
        n = join(argc - i - 1, argv + i + 1, (char *)in + sizeof(struct sealer_seal_args));
        if (n < 0) {
            printf("sealer_app: the text is too long (at most %d bytes)\n", SEALER_MAX_TEXT);
            return 2;
        }
        n += sizeof(struct sealer_seal_args);
    } else if ((n = from_hex(argv[i + 1], in, SEALER_MAX_BLOB)) < 0) {
        printf("sealer_app: not a sealed blob: expected up to %d bytes in hex\n",
               SEALER_MAX_BLOB);
        return 2;
    }
    struct he_enclave e;
    if (he_enclave_create(&e, path, NULL, 0, "sealer_app"))
        return 1;
    memcpy(e.ms->data, in, (size_t)n);
    e.ms->in_size = (uint64_t)n;
    long status = he_ecall(&e, sealing ? SEALER_ECALL_SEAL : SEALER_ECALL_UNSEAL, e.ms);
    size_t out = e.ms->out_size < SEALER_MAX_BLOB ? e.ms->out_size : SEALER_MAX_BLOB;
    if (status) {
        he_enclave_destroy(&e);
        return report(sealing ? "seal" : "unseal", status);
    }
    if (sealing) {
        static const char digits[] = "0123456789abcdef";
        char hex[2 * SEALER_MAX_BLOB + 1];
        for (size_t k = 0; k < out; k++) {
            hex[2 * k] = digits[e.ms->data[k] >> 4];
            hex[2 * k + 1] = digits[e.ms->data[k] & 15];
        }
        hex[2 * out] = 0;
        printf("sealer_app: sealed %s\n", hex);
    } else {
        printf("sealer_app: unsealed \"%.*s\"\n", (int)out, (const char *)e.ms->data);
    }
    he_enclave_destroy(&e);
    return 0;
}
