/* The sealer: seals text with EGETKEY's SEAL key (he_seal_data) and opens such blobs again,
 * refusing any it cannot authenticate. */
#include "he_trts.h"
#include "sealer.h"

_Static_assert(SEALER_MAX_BLOB == SEALER_MAX_TEXT + HE_SEALED_OVERHEAD, "sealer.h overhead");

static long input_size(struct he_ms *ms, uint64_t *n)
{
    return he_copy_from_untrusted(n, (uintptr_t)&ms->in_size, sizeof(*n));
}

static long seal(struct he_ms *ms)
{
    uint8_t in[sizeof(struct sealer_seal_args) + SEALER_MAX_TEXT], blob[SEALER_MAX_BLOB];
    struct sealer_seal_args *args = (struct sealer_seal_args *)in;
    uint64_t n;
    size_t length;
    long status = input_size(ms, &n);
    if (status || n < sizeof(*args) || n > sizeof(in))
        return SGX_ERROR_INVALID_PARAMETER;
    if ((status = he_ms_in(ms, in, n)))
        return status;
    if (args->policy > UINT16_MAX)
        return SGX_ERROR_INVALID_PARAMETER;
    status = he_seal_data((uint16_t)args->policy, args->text, n - sizeof(*args), blob,
                          sizeof(blob), &length);
    return status ? status : he_ms_out(ms, blob, length);
}

static long unseal(struct he_ms *ms)
{
    uint8_t blob[SEALER_MAX_BLOB], text[SEALER_MAX_TEXT];
    uint64_t n;
    size_t length;
    long status = input_size(ms, &n);
    if (status || n > sizeof(blob))
        return SGX_ERROR_INVALID_PARAMETER;
    if ((status = he_ms_in(ms, blob, n)))
        return status;
    status = he_unseal_data(blob, n, text, sizeof(text), &length);
    return status ? status : he_ms_out(ms, text, length);
}

HE_ECALL_TABLE(seal, unseal);
