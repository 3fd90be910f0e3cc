/*
 * The trusted runtime's API for enclave code (hyperenclave/sdk/trts/, linked into every enclave;
 * the ABI with the app is in he_edge.h). An enclave defines its ECALL table:
 *
 *   static long add(struct he_ms *ms) { ... }
 *   HE_ECALL_TABLE(add, ...);                 ECALL i calls the i-th function
 *
 * An ECALL gets its marshalling area, which is untrusted memory the app can change at any time:
 * read the arguments with he_ms_in() (once, into enclave memory) and set the results with
 * he_ms_out(); never dereference `ms` directly. The function's return value is the ECALL's
 * status (SGX_SUCCESS or an SGX_ERROR_*).
 */
#ifndef HE_TRTS_H
#define HE_TRTS_H

#include <stddef.h>
#include <stdint.h>
#include "he_crypto.h"
#include "he_edge.h"
#include "lib.h"

typedef long (*he_ecall_fn)(struct he_ms *ms);

extern const he_ecall_fn he_ecall_table[];
extern const unsigned long he_ecall_count;

#define HE_ECALL_TABLE(...) \
    const he_ecall_fn he_ecall_table[] = {__VA_ARGS__}; \
    const unsigned long he_ecall_count = sizeof(he_ecall_table) / sizeof(he_ecall_table[0])

/* ELRANGE as this enclave sees it (the loader picked the base). */
uintptr_t he_enclave_base(void);
size_t he_enclave_size(void);
/* Whether all of [p, p + n) is inside / outside ELRANGE (false if the range wraps). */
int he_is_within_enclave(const void *p, size_t n);
int he_is_outside_enclave(const void *p, size_t n);

/* Bounds-checked copies with the current marshalling area: the untrusted range must not wrap,
 * must not touch ELRANGE and must stay inside the area. SGX_SUCCESS or
 * SGX_ERROR_INVALID_PARAMETER (nothing copied). */
long he_copy_from_untrusted(void *dst, uintptr_t src, size_t n);
long he_copy_to_untrusted(uintptr_t dst, const void *src, size_t n);
/* The ECALL's arguments (n <= in_size) and its results (sets out_size). */
long he_ms_in(struct he_ms *ms, void *dst, size_t n);
long he_ms_out(struct he_ms *ms, const void *src, size_t n);

/* OCALL `index` of the app's table with `in_size` argument bytes; up to `out_size` result
 * bytes come back into `out` and the app's return value into *ret. Returns a status. */
long he_ocall(unsigned long index, const void *in, size_t in_size, void *out, size_t out_size,
              long *ret);

/* EREPORT: a REPORT of this enclave for the enclave `target_info` names, carrying
 * `report_data` (SGX_TARGETINFO_SIZE, SGX_REPORT_DATA_SIZE and SGX_REPORT_SIZE bytes, anywhere in
 * enclave memory; the runtime aligns them as the instruction requires). An app gets the same
 * through the runtime's own ECALL HE_ECALL_REPORT. */
long he_report(const void *target_info, const void *report_data, void *report);

/* Sealing (trts/seal.c), after the SGX SDK's sgx_seal_data: data encrypted for this enclave
 * (SGX_KEYPOLICY_MRENCLAVE) or for every enclave of its signer (SGX_KEYPOLICY_MRSIGNER) on this
 * platform, with keys from EGETKEY(SEAL). A sealed blob is
 *
 *   struct he_sealed_header | ciphertext (payload_size bytes) | tag (16 bytes)
 *
 * The SEAL key binds the header's policy, ISVSVN, CPUSVN and KEYID (16 random bytes from RDRAND,
 * zero-extended to KEYREQUEST's 32, so every blob has its own key); two keys are derived from it
 * with AES-CMAC ("HE seal v1 encryption key" / "HE seal v1 MAC key"): AES-128-CTR encrypts the
 * payload from counter block 0 (the key is used once), AES-CMAC over header and ciphertext is
 * the tag (encrypt-then-MAC). Unsealing asks EGETKEY for the key the header names (so data
 * sealed by an older ISVSVN still opens), checks the tag in constant time and only then
 * decrypts: a modified blob, another enclave's under MRENCLAVE policy, or one sealed under
 * another platform root secret gives SGX_ERROR_MAC_MISMATCH. */
#define HE_SEALED_MAGIC 0x314c5348          /* "HSL1" */
#define HE_SEAL_KEY_ID_SIZE 16
#define HE_SEALED_TAG_SIZE 16
struct he_sealed_header {                   /* little-endian, covered by the tag */
    uint32_t magic;
    uint16_t key_policy;                    /* SGX_KEYPOLICY_* */
    uint16_t isv_svn;                       /* of the sealing enclave (its REPORT) */
    uint8_t cpu_svn[16];                    /* of the platform when sealed (the REPORT's) */
    uint8_t key_id[HE_SEAL_KEY_ID_SIZE];
    uint32_t payload_size;
};
_Static_assert(sizeof(struct he_sealed_header) == 44, "sealed blob header");
#define HE_SEALED_OVERHEAD (sizeof(struct he_sealed_header) + HE_SEALED_TAG_SIZE)

/* EGETKEY(SEAL) for `policy` (MRENCLAVE and/or MRSIGNER) with KEYREQUEST.KEYID = key_id, this
 * enclave's ISVSVN and the CPUSVN from its own REPORT, the SGX SDK's default attribute and
 * MISCSELECT masks. SGX_SUCCESS, SGX_ERROR_INVALID_PARAMETER, or EGETKEY's error as the SDK
 * names it (SGX_ERROR_INVALID_ISVSVN, ...). */
long he_get_seal_key(uint16_t policy, const uint8_t key_id[32], uint8_t key[16]);
/* Seal data[0:n] into blob (blob_size >= n + HE_SEALED_OVERHEAD; *blob_length set). All
 * buffers inside ELRANGE; data and blob must not overlap. */
long he_seal_data(uint16_t policy, const void *data, size_t n, void *blob, size_t blob_size,
                  size_t *blob_length);
/* Check and decrypt a blob into out (out_size >= its payload, no overlap; *n set). SGX_SUCCESS,
 * SGX_ERROR_INVALID_PARAMETER (not a blob, sizes), SGX_ERROR_MAC_MISMATCH, or EGETKEY's error
 * (SGX_ERROR_INVALID_ISVSVN for a blob of a newer version of the enclave). */
long he_unseal_data(const void *blob, size_t blob_size, void *out, size_t out_size, size_t *n);

/* The heap (the pages the signer's config gave it). */
void *he_malloc(size_t size);
void he_free(void *p);

#endif
