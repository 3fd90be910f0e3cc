/* TPM 2.0 over the CRB interface, and measurements recorded in the firmware's TCG event log. */
#ifndef KERNEL_TPM_H
#define KERNEL_TPM_H

#include "kernel.h"

#define SHA256_DIGEST_SIZE 32
#define EV_COMPACT_HASH    0xC
#define IMA_PCR            10

void sha256(const void *data, u64 len, u8 out[SHA256_DIGEST_SIZE]);

/* Send a raw TPM2 command; returns the response code (0 = success) or a negative errno. */
long tpm_transmit(const u8 *cmd, u32 len, u8 *rsp, u32 rsp_max);
/* TPM2_PCR_Extend of the SHA-256 bank. */
long tpm_pcr_extend(u32 pcr, const u8 digest[SHA256_DIGEST_SIZE]);
/* Extend `digest` into `pcr` and append the matching TCG_PCR_EVENT2 to the event log. */
long tpm_measure(u32 pcr, u32 event_type, const u8 digest[SHA256_DIGEST_SIZE],
                 const void *event, u32 event_len);

#endif
