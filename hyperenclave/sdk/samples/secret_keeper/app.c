/* secret_keeper_app SECRET [--hold SECONDS] [GUESS...]: provision the secret keeper with SECRET
 * (then wipe our copy), print where the secret lives, keep the enclave alive for SECONDS (while
 * the host attacks it), check each GUESS, and show that the enclave's bounds-checked copies
 * refuse pointers into ELRANGE or outside the marshalling area. */
#include "libc.h"
#include "he_urts.h"
#include "secret_keeper.h"

static struct he_enclave e;

static long call(long index, const void *in, uint64_t in_size)
{
    memcpy(e.ms->data, in, in_size);
    e.ms->in_size = in_size;
    return he_ecall(&e, index, e.ms);
}

/* ECALL echo from `src`: SGX_SUCCESS only if the enclave copied from there. */
static void echo(const char *what, uint64_t src, uint64_t length)
{
    struct sk_echo req = {src, length};
    long status = call(SK_ECALL_ECHO, &req, sizeof(req));
    printf("secret_keeper_app: ECALL echo from %#lx (%s): %s\n", (unsigned long)src, what,
           he_status_name(status));
}

int main(int argc, char **argv)
{
    unsigned int hold = 0;
    if (argc >= 4 && !strcmp(argv[2], "--hold")) {
        hold = (unsigned int)strtoul(argv[3], NULL, 0);
        argv[3] = argv[1];              /* SECRET GUESS... from here on */
        argv += 2;
        argc -= 2;
    }
    if (argc < 2) {
        printf("usage: secret_keeper_app SECRET [--hold SECONDS] [GUESS...]\n");
        return 2;
    }
    if (he_enclave_create(&e, "/enclaves/secret_keeper.bin", NULL, 0, "secret_keeper_app"))
        return 1;
    size_t n = strlen(argv[1]);
    long status = call(SK_ECALL_PROVISION, argv[1], n);
    memset(argv[1], 0, n);
    memset(e.ms->data, 0, n);
    printf("secret_keeper_app: provisioned a %lu-byte secret: %s\n", (unsigned long)n,
           he_status_name(status));
    struct sk_where w = {0, 0};
    if (!status && !(status = call(SK_ECALL_WHERE, NULL, 0)))
        memcpy(&w, e.ms->data, sizeof(w));
    printf("secret_keeper_app: the secret lives at %#lx (%lu bytes) in ELRANGE [%#lx-%#lx]\n",
           (unsigned long)w.address, (unsigned long)w.length, (unsigned long)e.base,
           (unsigned long)(e.base + e.size - 1));
    if (hold) {
        printf("secret_keeper_app: holding the enclave for %u s\n", hold);
        sleep(hold);
    }
    for (int i = 2; i < argc && !status; i++) {
        status = call(SK_ECALL_CHECK, argv[i], strlen(argv[i]));
        uint64_t right = 0;
        memcpy(&right, e.ms->data, sizeof(right));
        printf("secret_keeper_app: guess \"%s\": %s\n", argv[i],
               status ? he_status_name(status) : right ? "right" : "wrong");
    }
    /* inside the marshalling area: copied; into ELRANGE or elsewhere in the app: refused */
    struct sk_echo *req = (struct sk_echo *)e.ms->data;
    echo("the marshalling area", (uint64_t)(req + 1), 8);
    echo("the secret, inside ELRANGE", w.address, w.length);
    echo("the app's stack, outside the marshalling area", (uint64_t)&w, sizeof(w));
    echo("wrapping around", ~0UL - 3, 8);
    /* a marshalling area inside ELRANGE: refused before any ECALL runs */
    status = he_ecall(&e, SK_ECALL_WHERE, (struct he_ms *)w.address);
    printf("secret_keeper_app: ECALL with the marshalling area at %#lx (inside ELRANGE): %s\n",
           (unsigned long)w.address, he_status_name(status));
    he_enclave_destroy(&e);
    return 0;
}
