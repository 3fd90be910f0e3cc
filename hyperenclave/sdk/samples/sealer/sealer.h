/* The sealer's edge functions (app: app.c). Sealed blobs are the trusted runtime's format
 * (he_trts.h): HE_SEALED_OVERHEAD = 60 bytes around the text. */
#ifndef SEALER_H
#define SEALER_H
#include <stdint.h>

/* so that "/bin/sealer_app unseal HEX" of the largest blob fits the shell's 255-byte line */
#define SEALER_MAX_TEXT 48
#define SEALER_MAX_BLOB (SEALER_MAX_TEXT + 60)
#define SEALER_ECALL_SEAL   0   /* in: struct sealer_seal_args + text; out: the sealed blob */
#define SEALER_ECALL_UNSEAL 1   /* in: a sealed blob; out: its text */

struct sealer_seal_args {
    uint64_t policy;            /* SGX_KEYPOLICY_MRENCLAVE or SGX_KEYPOLICY_MRSIGNER */
    uint8_t text[];             /* up to SEALER_MAX_TEXT bytes, the rest of the input */
};
#endif
