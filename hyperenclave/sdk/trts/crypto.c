/*
 * AES-128 (FIPS-197) with AES-NI, CTR (SP 800-38A) and CMAC (SP 800-38B / RFC 4493); API in
 * he_crypto.h.
 *
 * Enclaves are compiled -mno-sse, so the compiler never touches XMM registers on its own: the
 * AES-NI instructions live in inline asm blocks that load what they need from memory, store the
 * result and zero every XMM register they used before they end. Key material stays in XMM only
 * inside one block (this emulator's AEX saves and scrubs only the general-purpose registers, so
 * that window is the one an interrupt could expose). Built for the host (SSE enabled), the same
 * blocks declare the XMM registers as clobbered.
 */
#include <stddef.h>
#include <stdint.h>
#include "he_crypto.h"

void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);

#ifdef __SSE__
#define XMM_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3",
#else
#define XMM_CLOBBERS
#endif

/* The 11 round keys; 16-byte aligned for the legacy-SSE memory operands of aesenc. */
struct schedule {
    uint8_t rk[11][HE_AES_BLOCK];
} __attribute__((aligned(16)));

static void wipe(void *p, size_t n)
{
    memset(p, 0, n);
    __asm__ volatile("" : : "r"(p) : "memory");     /* the stores are not dead */
}

/* One round of the AES-128 key expansion (FIPS-197 5.2): xmm1 = the previous round key. */
#define EXPAND(rcon, offset)                                                                  \
    "aeskeygenassist $" #rcon ", %%xmm1, %%xmm2\n\t"                                          \
    "pshufd $0xff, %%xmm2, %%xmm2\n\t"                                                        \
    "movdqa %%xmm1, %%xmm3\n\t"                                                               \
    "pslldq $4, %%xmm3\n\tpxor %%xmm3, %%xmm1\n\t"                                            \
    "pslldq $4, %%xmm3\n\tpxor %%xmm3, %%xmm1\n\t"                                            \
    "pslldq $4, %%xmm3\n\tpxor %%xmm3, %%xmm1\n\t"                                            \
    "pxor %%xmm2, %%xmm1\n\t"                                                                 \
    "movdqa %%xmm1, " #offset "(%[rk])\n\t"

static void expand_key(const uint8_t key[HE_AES128_KEY], struct schedule *ks)
{
    __asm__ volatile(
        "movdqu (%[key]), %%xmm1\n\t"
        "movdqa %%xmm1, (%[rk])\n\t"
        EXPAND(0x01, 16) EXPAND(0x02, 32) EXPAND(0x04, 48) EXPAND(0x08, 64)
        EXPAND(0x10, 80) EXPAND(0x20, 96) EXPAND(0x40, 112) EXPAND(0x80, 128)
        EXPAND(0x1b, 144) EXPAND(0x36, 160)
        "pxor %%xmm1, %%xmm1\n\tpxor %%xmm2, %%xmm2\n\tpxor %%xmm3, %%xmm3"
        : : [key] "r"(key), [rk] "r"(ks->rk) : XMM_CLOBBERS "memory");
}

static void encrypt_block(const struct schedule *ks, const uint8_t in[HE_AES_BLOCK],
                          uint8_t out[HE_AES_BLOCK])
{
    __asm__ volatile(
        "movdqu (%[in]), %%xmm0\n\t"
        "pxor (%[rk]), %%xmm0\n\t"
        "aesenc 16(%[rk]), %%xmm0\n\taesenc 32(%[rk]), %%xmm0\n\t"
        "aesenc 48(%[rk]), %%xmm0\n\taesenc 64(%[rk]), %%xmm0\n\t"
        "aesenc 80(%[rk]), %%xmm0\n\taesenc 96(%[rk]), %%xmm0\n\t"
        "aesenc 112(%[rk]), %%xmm0\n\taesenc 128(%[rk]), %%xmm0\n\t"
        "aesenc 144(%[rk]), %%xmm0\n\t"
        "aesenclast 160(%[rk]), %%xmm0\n\t"
        "movdqu %%xmm0, (%[out])\n\t"
        "pxor %%xmm0, %%xmm0"
        : : [in] "r"(in), [out] "r"(out), [rk] "r"(ks->rk) : XMM_CLOBBERS "memory");
}

void he_aes128_encrypt(const uint8_t key[HE_AES128_KEY], const uint8_t in[HE_AES_BLOCK],
                       uint8_t out[HE_AES_BLOCK])
{
    struct schedule ks;
    expand_key(key, &ks);
    encrypt_block(&ks, in, out);
    wipe(&ks, sizeof(ks));
}

void he_aes128_ctr(const uint8_t key[HE_AES128_KEY], const uint8_t counter[HE_AES_BLOCK],
                   const uint8_t *in, uint8_t *out, size_t n)
{
    struct schedule ks;
    uint8_t ctr[HE_AES_BLOCK], stream[HE_AES_BLOCK];
    expand_key(key, &ks);
    memcpy(ctr, counter, sizeof(ctr));
    for (size_t done = 0; done < n; done += HE_AES_BLOCK) {
        encrypt_block(&ks, ctr, stream);
        size_t chunk = n - done < HE_AES_BLOCK ? n - done : HE_AES_BLOCK;
        for (size_t i = 0; i < chunk; i++)
            out[done + i] = in[done + i] ^ stream[i];
        for (int i = HE_AES_BLOCK - 1; i >= 0 && ++ctr[i] == 0; i--)
            ;
    }
    wipe(&ks, sizeof(ks));
    wipe(stream, sizeof(stream));
}

/* The CMAC subkey doubling in GF(2^128) (RFC 4493 2.3): a big-endian shift left by one, with
 * the constant 0x87 folded in when a bit falls off. */
static void double_block(uint8_t b[HE_AES_BLOCK])
{
    uint8_t carry = b[0] >> 7;
    for (int i = 0; i < HE_AES_BLOCK - 1; i++)
        b[i] = (uint8_t)(b[i] << 1 | b[i + 1] >> 7);
    b[HE_AES_BLOCK - 1] = (uint8_t)(b[HE_AES_BLOCK - 1] << 1) ^ (uint8_t)(-carry & 0x87);
}

void he_aes128_cmac(const uint8_t key[HE_AES128_KEY], const uint8_t *data, size_t n,
                    uint8_t mac[HE_AES_BLOCK])
{
    struct schedule ks;
    uint8_t subkey[HE_AES_BLOCK] = {0}, x[HE_AES_BLOCK] = {0};
    expand_key(key, &ks);
    encrypt_block(&ks, subkey, subkey);         /* L = AES(K, 0^128) */
    double_block(subkey);                       /* K1 */
    /* every block but the last (a complete one if n is a multiple of 16 and not 0) */
    size_t last = n ? (n - 1) / HE_AES_BLOCK * HE_AES_BLOCK : 0;
    for (size_t off = 0; off < last; off += HE_AES_BLOCK) {
        for (int i = 0; i < HE_AES_BLOCK; i++)
            x[i] ^= data[off + i];
        encrypt_block(&ks, x, x);
    }
    size_t tail = n - last;
    if (tail < HE_AES_BLOCK) {
        double_block(subkey);                   /* K2, and the block padded with 10* */
        x[tail] ^= 0x80;
    }
    for (size_t i = 0; i < tail; i++)
        x[i] ^= data[last + i];
    for (int i = 0; i < HE_AES_BLOCK; i++)
        x[i] ^= subkey[i];
    encrypt_block(&ks, x, mac);
    wipe(&ks, sizeof(ks));
    wipe(subkey, sizeof(subkey));
    wipe(x, sizeof(x));
}

int he_equal_ct(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *p = a, *q = b;
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= p[i] ^ q[i];
    return diff == 0;
}
