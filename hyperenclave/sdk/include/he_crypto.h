/*
 * AES-128 with AES-NI for enclave code (hyperenclave/sdk/trts/crypto.c, linked into every
 * enclave): the block cipher, CTR mode (NIST SP 800-38A) and CMAC (SP 800-38B, RFC 4493).
 * Freestanding; the same file builds for the host, where tests check it against the standards'
 * vectors. Buffers may overlap only where noted; no alignment is required.
 */
#ifndef HE_CRYPTO_H
#define HE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define HE_AES_BLOCK 16
#define HE_AES128_KEY 16

/* out = AES-128(key, in); in and out may be the same block. */
void he_aes128_encrypt(const uint8_t key[HE_AES128_KEY], const uint8_t in[HE_AES_BLOCK],
                       uint8_t out[HE_AES_BLOCK]);
/* CTR mode from the counter block `counter` (incremented as one 128-bit big-endian number):
 * encrypts or decrypts n bytes; in and out may be the same buffer. */
void he_aes128_ctr(const uint8_t key[HE_AES128_KEY], const uint8_t counter[HE_AES_BLOCK],
                   const uint8_t *in, uint8_t *out, size_t n);
/* mac = AES-CMAC(key, data[0:n]). */
void he_aes128_cmac(const uint8_t key[HE_AES128_KEY], const uint8_t *data, size_t n,
                    uint8_t mac[HE_AES_BLOCK]);
/* 1 if a[0:n] == b[0:n], in time that depends only on n. */
int he_equal_ct(const void *a, const void *b, size_t n);

#endif
