/*
 * Sealing: SEAL keys from EGETKEY and the sealed-blob format (he_trts.h has the format and why).
 * Like the SGX SDK's sgx_seal_data: the ISVSVN/CPUSVN to seal under come from the enclave's own
 * REPORT, KEYREQUEST asks for the SDK's default masks, and each blob gets a random KEYID.
 */
#include "he_trts.h"

#define EGETKEY 1
#define KEYNAME_SEAL 4
#define KEYPOLICIES (SGX_KEYPOLICY_MRENCLAVE | SGX_KEYPOLICY_MRSIGNER)
/* the SGX SDK's TSEAL_DEFAULT_FLAGSMASK (INIT, DEBUG and the reserved high bits) and
 * TSEAL_DEFAULT_MISCMASK: a debug enclave never gets a production enclave's keys */
#define FLAGS_MASK 0xFF0000000000000BULL
#define MISC_MASK 0xF0000000U
/* EGETKEY's RAX codes (SDM) */
#define SGX_INVALID_ATTRIBUTE 2
#define SGX_INVALID_CPUSVN 32
#define SGX_INVALID_ISVSVN 64
#define SGX_INVALID_KEYNAME 256
#define REPORT_CPUSVN 0
#define REPORT_ISVSVN 258
#define RDRAND_RETRIES 10

struct keyrequest {
    uint16_t key_name;
    uint16_t key_policy;
    uint16_t isv_svn;
    uint16_t reserved1;
    uint8_t cpu_svn[16];
    uint64_t attribute_flags_mask;
    uint64_t attribute_xfrm_mask;
    uint8_t key_id[32];
    uint32_t misc_mask;
    uint16_t config_svn;
    uint8_t reserved2[434];
};
_Static_assert(sizeof(struct keyrequest) == 512 && offsetof(struct keyrequest, cpu_svn) == 8 &&
               offsetof(struct keyrequest, key_id) == 40 &&
               offsetof(struct keyrequest, misc_mask) == 72, "KEYREQUEST layout");

static const char ENC_LABEL[] = "HE seal v1 encryption key";
static const char MAC_LABEL[] = "HE seal v1 MAC key";

static void wipe(void *p, size_t n)
{
    memset(p, 0, n);
    __asm__ volatile("" : : "r"(p) : "memory");
}

static long egetkey_status(uint64_t rax)
{
    switch (rax) {
    case 0: return SGX_SUCCESS;
    case SGX_INVALID_ATTRIBUTE: return SGX_ERROR_INVALID_ATTRIBUTE;
    case SGX_INVALID_CPUSVN: return SGX_ERROR_INVALID_CPUSVN;
    case SGX_INVALID_ISVSVN: return SGX_ERROR_INVALID_ISVSVN;
    case SGX_INVALID_KEYNAME: return SGX_ERROR_INVALID_KEYNAME;
    default: return SGX_ERROR_UNEXPECTED;
    }
}

/* EGETKEY(SEAL) for exactly these identity fields. */
static long seal_key(uint16_t policy, uint16_t isv_svn, const uint8_t cpu_svn[16],
                     const uint8_t key_id[32], uint8_t key[16])
{
    struct keyrequest request __attribute__((aligned(512)));
    uint8_t out[16] __attribute__((aligned(16)));
    uint64_t rax;
    if (!policy || policy & ~KEYPOLICIES)
        return SGX_ERROR_INVALID_PARAMETER;
    memset(&request, 0, sizeof(request));
    request.key_name = KEYNAME_SEAL;
    request.key_policy = policy;
    request.isv_svn = isv_svn;
    memcpy(request.cpu_svn, cpu_svn, sizeof(request.cpu_svn));
    request.attribute_flags_mask = FLAGS_MASK;
    request.misc_mask = MISC_MASK;
    memcpy(request.key_id, key_id, sizeof(request.key_id));
    __asm__ volatile("enclu" : "=a"(rax) : "a"((uint64_t)EGETKEY), "b"(&request), "c"(out)
                     : "memory", "cc");
    long status = egetkey_status(rax);
    if (!status)
        memcpy(key, out, sizeof(out));
    wipe(out, sizeof(out));
    return status;
}

/* This enclave's ISVSVN and the platform's CPUSVN, from a REPORT to itself. */
static long self_svns(uint16_t *isv_svn, uint8_t cpu_svn[16])
{
    static const uint8_t target[SGX_TARGETINFO_SIZE], data[SGX_REPORT_DATA_SIZE];
    uint8_t report[SGX_REPORT_SIZE];
    long status = he_report(target, data, report);
    if (status)
        return status;
    memcpy(isv_svn, report + REPORT_ISVSVN, sizeof(*isv_svn));
    memcpy(cpu_svn, report + REPORT_CPUSVN, 16);
    return SGX_SUCCESS;
}

long he_get_seal_key(uint16_t policy, const uint8_t key_id[32], uint8_t key[16])
{
    uint16_t isv_svn;
    uint8_t cpu_svn[16];
    if (!he_is_within_enclave(key_id, 32) || !he_is_within_enclave(key, 16))
        return SGX_ERROR_INVALID_PARAMETER;
    long status = self_svns(&isv_svn, cpu_svn);
    return status ? status : seal_key(policy, isv_svn, cpu_svn, key_id, key);
}

static int rdrand64(uint64_t *value)
{
    for (int i = 0; i < RDRAND_RETRIES; i++) {
        uint8_t ok;
        __asm__ volatile("rdrand %0; setc %1" : "=r"(*value), "=qm"(ok) : : "cc");
        if (ok)
            return 1;
    }
    return 0;
}

/* The blob's encryption and MAC keys, from the SEAL key its header names. */
static long blob_keys(const struct he_sealed_header *h, uint8_t enc[16], uint8_t mac[16])
{
    uint8_t key_id[32] = {0}, key[16];
    memcpy(key_id, h->key_id, sizeof(h->key_id));
    long status = seal_key(h->key_policy, h->isv_svn, h->cpu_svn, key_id, key);
    if (!status) {
        he_aes128_cmac(key, (const uint8_t *)ENC_LABEL, sizeof(ENC_LABEL) - 1, enc);
        he_aes128_cmac(key, (const uint8_t *)MAC_LABEL, sizeof(MAC_LABEL) - 1, mac);
    }
    wipe(key, sizeof(key));
    return status;
}

static const uint8_t COUNTER0[HE_AES_BLOCK];

long he_seal_data(uint16_t policy, const void *data, size_t n, void *blob, size_t blob_size,
                  size_t *blob_length)
{
    uint8_t *out = blob;
    struct he_sealed_header h = {.magic = HE_SEALED_MAGIC, .key_policy = policy,
                                 .payload_size = (uint32_t)n};
    uint8_t enc[16], mac[16];
    if (n > UINT32_MAX - HE_SEALED_OVERHEAD || blob_size < n + HE_SEALED_OVERHEAD ||
        (n && !he_is_within_enclave(data, n)) || !he_is_within_enclave(blob, blob_size) ||
        !he_is_within_enclave(blob_length, sizeof(*blob_length)) ||
        ((uintptr_t)data < (uintptr_t)blob + blob_size && (uintptr_t)blob < (uintptr_t)data + n))
        return SGX_ERROR_INVALID_PARAMETER;
    for (size_t i = 0; i < sizeof(h.key_id); i += 8) {
        uint64_t r;
        if (!rdrand64(&r))
            return SGX_ERROR_UNEXPECTED;
        memcpy(h.key_id + i, &r, 8);
    }
    long status = self_svns(&h.isv_svn, h.cpu_svn);
    if (!status)
        status = blob_keys(&h, enc, mac);
    if (!status) {
        memcpy(out, &h, sizeof(h));
        he_aes128_ctr(enc, COUNTER0, data, out + sizeof(h), n);
        he_aes128_cmac(mac, out, sizeof(h) + n, out + sizeof(h) + n);
        *blob_length = n + HE_SEALED_OVERHEAD;
    }
    wipe(enc, sizeof(enc));
    wipe(mac, sizeof(mac));
    return status;
}

long he_unseal_data(const void *blob, size_t blob_size, void *out, size_t out_size, size_t *n)
{
    const uint8_t *in = blob;
    struct he_sealed_header h;
    uint8_t enc[16], mac[16], tag[HE_SEALED_TAG_SIZE];
    if (blob_size < HE_SEALED_OVERHEAD || !he_is_within_enclave(blob, blob_size) ||
        !he_is_within_enclave(n, sizeof(*n)))
        return SGX_ERROR_INVALID_PARAMETER;
    memcpy(&h, in, sizeof(h));
    size_t payload = blob_size - HE_SEALED_OVERHEAD;
    if (h.magic != HE_SEALED_MAGIC || h.payload_size != payload || out_size < payload ||
        (payload && !he_is_within_enclave(out, payload)) ||
        ((uintptr_t)out < (uintptr_t)in + blob_size && (uintptr_t)in < (uintptr_t)out + payload))
        return SGX_ERROR_INVALID_PARAMETER;
    long status = blob_keys(&h, enc, mac);
    if (!status) {
        he_aes128_cmac(mac, in, sizeof(h) + payload, tag);
        if (!he_equal_ct(tag, in + sizeof(h) + payload, sizeof(tag)))
            status = SGX_ERROR_MAC_MISMATCH;
    }
    if (!status) {
        he_aes128_ctr(enc, COUNTER0, in + sizeof(h), out, payload);
        *n = payload;
    }
    wipe(enc, sizeof(enc));
    wipe(mac, sizeof(mac));
    return status;
}
