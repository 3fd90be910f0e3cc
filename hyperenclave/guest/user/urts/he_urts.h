/*
 * The untrusted runtime: what a host program links to run enclaves signed by
 * `hyperenclave-sign` (ABI with the enclave: he_edge.h; bundle: he_enclave_file.h).
 *
 *   static long print(struct he_ms *ms) { ... }             an OCALL: ms->data holds its input
 *   static const he_ocall_fn ocalls[] = {print};
 *   struct he_enclave e;
 *   if (he_enclave_create(&e, "/hello.bin", ocalls, 1, "hello_app")) ...   load, init, share
 *   struct he_ms *ms = e.ms;                                 the marshalling area
 *   memcpy(ms->data, &args, sizeof(args)); ms->in_size = sizeof(args);
 *   long status = he_ecall(&e, 0, ms);                       SGX_SUCCESS or an SGX_ERROR_*
 *   he_enclave_destroy(&e);
 *
 * Failures are printed as "WHO: PATH: what failed: why" and returned as a status. One thread
 * per process uses an enclave, on its first TCS.
 */
#ifndef HE_URTS_H
#define HE_URTS_H

#include <stddef.h>
#include <stdint.h>
#include "he_edge.h"

#define HE_MAX_TCS 8

typedef long (*he_ocall_fn)(struct he_ms *ms);

struct he_enclave {
    const char *who, *path;             /* for messages */
    int dev;                            /* the open /dev/hyper_enclave: the enclave's handle */
    uint64_t base, size;                /* ELRANGE */
    uint64_t tcs[HE_MAX_TCS];           /* linear addresses of the TCSs, in bundle order */
    unsigned int nr_tcs;
    uint8_t mrenclave[32];
    struct he_ms *ms;                   /* the marshalling area (shared with the enclave) */
    uint64_t ms_buf_size;
    const he_ocall_fn *ocalls;
    size_t nr_ocalls;
    unsigned long aex_count;            /* AEXs taken during this enclave's ECALLs */
    uint64_t exitinfo;                  /* GPRSGX.EXITINFO after SGX_ERROR_ENCLAVE_CRASHED */
};

/* AEXs this process has taken (each followed by ERESUME at the AEP). */
extern volatile unsigned long he_aex_count;
/* The vector of the last exception the kernel handed to the runtime, or -1. */
extern volatile long he_last_exception;

/* Build the enclave of the bundle at `path` (ECREATE, EADD/EEXTEND, EINIT through the driver). */
long he_enclave_load(struct he_enclave *e, const char *path, const char *who);
/* he_enclave_load, then share a marshalling buffer of ms_buf_size bytes, take the OCALLs and
 * have the kernel hand exceptions at the AEP to the runtime (HE_IOC_SET_EXCEPTION_FIXUP). */
long he_enclave_create(struct he_enclave *e, const char *path, const he_ocall_fn *ocalls,
                       size_t nr_ocalls, const char *who);
/* ECALL `index` with the marshalling area `ms`, serving OCALLs until the enclave returns. */
long he_ecall(struct he_enclave *e, long index, struct he_ms *ms);
/* One EENTER of `tcs` with RDI/RSI through the real ENCLU instruction, until the enclave
 * EEXITs; the AEP counts each AEX in he_aex_count and ERESUMEs (the AEX left RAX = ERESUME,
 * RBX = TCS, RCX = AEP). The enclave hands back RDI, RSI and RDX; RSP/RBP must be restored by
 * it, every other register is clobbered. he_ecall's building block, also for hand-written
 * enclaves with their own conventions. */
void he_enclu_enter(uint64_t tcs, long *rdi, uint64_t *rsi, uint64_t *rdx);
/* Remote attestation: the enclave's REPORT (runtime ECALL HE_ECALL_REPORT) for HyperEnclave's
 * pseudo-QE with REPORTDATA = `nonce` (1-64 bytes, zero-padded), turned into a quote bundle by
 * the monitor's quote hypercall (0x8000_000d): up to `size` bytes at `out`, *length set. Returns
 * SGX_SUCCESS, the ECALL's status, or SGX_ERROR_UNEXPECTED after printing the hypercall's error. */
long he_quote(struct he_enclave *e, const void *nonce, size_t n, uint8_t *out, size_t size,
              size_t *length);
/* Print a quote bundle as "WHO: quote <hex>" lines (32 bytes each), for the verifier. */
void he_print_quote(const char *who, const uint8_t *quote, size_t length);
/* Close the enclave's device: the driver destroys it and scrubs its EPC pages. */
void he_enclave_destroy(struct he_enclave *e);

#endif
