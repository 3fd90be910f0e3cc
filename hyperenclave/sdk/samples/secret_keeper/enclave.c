/* The secret keeper: holds a secret provisioned once (on the enclave heap); answers whether a
 * guess is right and where the secret lives (for attack tests), never the secret itself. */
#include "he_trts.h"
#include "secret_keeper.h"

static uint8_t *secret;
static uint64_t secret_length;

static long provision(struct he_ms *ms)
{
    uint64_t n;
    if (secret_length || he_copy_from_untrusted(&n, (uintptr_t)&ms->in_size, sizeof(n)) ||
        n == 0 || n > SK_MAX_SECRET)
        return SGX_ERROR_INVALID_PARAMETER;
    secret = he_malloc(n);
    if (!secret)
        return SGX_ERROR_OUT_OF_MEMORY;
    long status = he_ms_in(ms, secret, n);
    if (!status)
        secret_length = n;
    else
        he_free(secret);
    return status;
}

static long check(struct he_ms *ms)
{
    uint8_t guess[SK_MAX_SECRET];
    uint64_t n, right = 0;
    if (!secret_length)
        return SGX_ERROR_INVALID_STATE;
    if (he_copy_from_untrusted(&n, (uintptr_t)&ms->in_size, sizeof(n)) || n > SK_MAX_SECRET)
        return SGX_ERROR_INVALID_PARAMETER;
    long status = he_ms_in(ms, guess, n);
    if (status)
        return status;
    if (n == secret_length) {
        uint8_t diff = 0;               /* constant time: every byte is compared */
        for (uint64_t i = 0; i < n; i++)
            diff |= guess[i] ^ secret[i];
        right = diff == 0;
    }
    return he_ms_out(ms, &right, sizeof(right));
}

static long where(struct he_ms *ms)
{
    struct sk_where w = {(uintptr_t)secret, secret_length};
    return he_ms_out(ms, &w, sizeof(w));
}

static long echo(struct he_ms *ms)
{
    struct sk_echo req;
    uint8_t copy[SK_MAX_SECRET];
    long status = he_ms_in(ms, &req, sizeof(req));
    if (status)
        return status;
    if (req.length > sizeof(copy))
        return SGX_ERROR_INVALID_PARAMETER;
    status = he_copy_from_untrusted(copy, req.src, req.length);
    if (status)
        return status;
    return he_ms_out(ms, copy, req.length);
}

HE_ECALL_TABLE(provision, check, where, echo);
