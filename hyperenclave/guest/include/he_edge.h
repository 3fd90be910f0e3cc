/*
 * The edge ABI between an app and its enclave: what the untrusted runtime (user/urts/) and the
 * trusted runtime (hyperenclave/sdk/trts/) agree on, after the SGX SDK's.
 *
 * Entering (the app, through the real ENCLU instruction):
 *   EENTER  RAX = 2, RBX = TCS, RCX = AEP,
 *           RDI = ECALL index, or HE_ECMD_ORET to return from an OCALL,
 *           RSI = the marshalling area (struct he_ms) for an ECALL; for ORET, the OCALL's
 *                 return value (its results are in the marshalling area).
 *   ERESUME RAX = 3, RBX = TCS, RCX = AEP: at the AEP after an AEX.
 *   An EENTER that finds CSSA > 0 (an exception was not handled: the AEX left its state in
 *   SSA[CSSA - 1]) takes the trusted runtime's SSA path whatever RDI says: the enclave reads
 *   the exception from the SSA, marks itself crashed and EEXITs with ERET; every later ECALL
 *   gets SGX_ERROR_ENCLAVE_CRASHED.
 * Leaving (the enclave, EEXIT: RAX = 4, RBX = the app's return address):
 *   RDI = HE_OCALL_ERET: the ECALL is over, RSI = its status (SGX_SUCCESS or an SGX_ERROR_*),
 *         RDX = GPRSGX.EXITINFO of the exception when the status is SGX_ERROR_ENCLAVE_CRASHED;
 *   RDI = an OCALL index: RSI = the marshalling area with the OCALL's arguments; the app serves
 *         it and enters again with HE_ECMD_ORET.
 *   Every other general-purpose register is zero, RSP/RBP are the app's again.
 * While an OCALL is pending the only way in is ORET: an ECALL made from inside an OCALL gets
 * SGX_ERROR_ECALL_NOT_ALLOWED (no nested ECALLs).
 *
 * The marshalling area lives in the marshalling buffer the app shared with the enclave
 * (HE_IOC_ADD_SHARED_MEMORY). The enclave copies the header in once, checks that the whole
 * area lies outside ELRANGE and does not wrap, and from then on copies only within it.
 *
 * Enclave image metadata (written by `hyperenclave-sign`, measured): the global
 * `he_enclave_config` and one thread-data page per TCS, at FS base = GS base = enclave base +
 * TCS.OFSBASGX = TCS.OGSBASGX. The trusted runtime finds its thread through GS.
 */
#ifndef HE_EDGE_H
#define HE_EDGE_H

#include <stdint.h>

#define HE_ECMD_ORET    (-2L)       /* EENTER RDI: return from an OCALL */
#define HE_ECALL_REPORT (-3L)       /* EENTER RDI: the runtime's own ECALL: struct
                                       he_report_request in, the 432-byte REPORT out */
#define HE_OCALL_ERET   (-1L)       /* EEXIT RDI: the ECALL returns */

/* Statuses, with the SGX SDK's values (sgx_error.h). */
#define SGX_SUCCESS                     0x0000
#define SGX_ERROR_UNEXPECTED            0x0001
#define SGX_ERROR_INVALID_PARAMETER     0x0002
#define SGX_ERROR_OUT_OF_MEMORY         0x0003
#define SGX_ERROR_ENCLAVE_LOST          0x0004
#define SGX_ERROR_INVALID_STATE         0x0005
#define SGX_ERROR_INVALID_FUNCTION      0x1001
#define SGX_ERROR_ENCLAVE_CRASHED       0x1006
#define SGX_ERROR_ECALL_NOT_ALLOWED     0x1007
#define SGX_ERROR_OCALL_NOT_ALLOWED     0x1008
#define SGX_ERROR_INVALID_ENCLAVE       0x2001
#define SGX_ERROR_INVALID_SIGNATURE     0x2003
#define SGX_ERROR_NO_DEVICE             0x2006
#define SGX_ERROR_MAC_MISMATCH          0x3001  /* a sealed blob's tag does not verify */
#define SGX_ERROR_INVALID_ATTRIBUTE     0x3002
#define SGX_ERROR_INVALID_CPUSVN        0x3003
#define SGX_ERROR_INVALID_ISVSVN        0x3004
#define SGX_ERROR_INVALID_KEYNAME       0x3005

static inline const char *he_status_name(long status)
{
    switch (status) {
    case SGX_SUCCESS: return "SGX_SUCCESS";
    case SGX_ERROR_UNEXPECTED: return "SGX_ERROR_UNEXPECTED";
    case SGX_ERROR_INVALID_PARAMETER: return "SGX_ERROR_INVALID_PARAMETER";
    case SGX_ERROR_OUT_OF_MEMORY: return "SGX_ERROR_OUT_OF_MEMORY";
    case SGX_ERROR_ENCLAVE_LOST: return "SGX_ERROR_ENCLAVE_LOST";
    case SGX_ERROR_INVALID_STATE: return "SGX_ERROR_INVALID_STATE";
    case SGX_ERROR_INVALID_FUNCTION: return "SGX_ERROR_INVALID_FUNCTION";
    case SGX_ERROR_ENCLAVE_CRASHED: return "SGX_ERROR_ENCLAVE_CRASHED";
    case SGX_ERROR_ECALL_NOT_ALLOWED: return "SGX_ERROR_ECALL_NOT_ALLOWED";
    case SGX_ERROR_OCALL_NOT_ALLOWED: return "SGX_ERROR_OCALL_NOT_ALLOWED";
    case SGX_ERROR_INVALID_ENCLAVE: return "SGX_ERROR_INVALID_ENCLAVE";
    case SGX_ERROR_INVALID_SIGNATURE: return "SGX_ERROR_INVALID_SIGNATURE";
    case SGX_ERROR_NO_DEVICE: return "SGX_ERROR_NO_DEVICE";
    case SGX_ERROR_MAC_MISMATCH: return "SGX_ERROR_MAC_MISMATCH";
    case SGX_ERROR_INVALID_ATTRIBUTE: return "SGX_ERROR_INVALID_ATTRIBUTE";
    case SGX_ERROR_INVALID_CPUSVN: return "SGX_ERROR_INVALID_CPUSVN";
    case SGX_ERROR_INVALID_ISVSVN: return "SGX_ERROR_INVALID_ISVSVN";
    case SGX_ERROR_INVALID_KEYNAME: return "SGX_ERROR_INVALID_KEYNAME";
    default: return "unknown status";
    }
}

/* KEYREQUEST.KEYPOLICY (sgx_key.h): which identity a SEAL key binds. */
#define SGX_KEYPOLICY_MRENCLAVE 0x0001
#define SGX_KEYPOLICY_MRSIGNER  0x0002

/* A marshalling area: this header, then `size` bytes of arguments and results. */
struct he_ms {
    uint64_t size;              /* bytes of data[] (the area's capacity) */
    uint64_t index;             /* the ECALL or OCALL it carries (informational) */
    uint64_t in_size;           /* argument bytes at data[0] */
    uint64_t out_size;          /* result bytes at data[0], written by the callee */
    uint8_t data[];
};
_Static_assert(sizeof(struct he_ms) == 32, "marshalling header");

/* HE_ECALL_REPORT's input: EREPORT for `target_info` (e.g. HyperEnclave's pseudo-QE, whose
 * quote hypercall turns the REPORT into a quote) carrying `report_data`. */
#define SGX_TARGETINFO_SIZE 512
#define SGX_REPORT_DATA_SIZE 64
#define SGX_REPORT_SIZE 432
struct he_report_request {
    uint8_t target_info[SGX_TARGETINFO_SIZE];
    uint8_t report_data[SGX_REPORT_DATA_SIZE];
};

/* The global `he_enclave_config` of every enclave, filled in by the signer before measuring. */
#define HE_CONFIG_MAGIC 0x4749464e4f434548ULL       /* "HECONFIG" */
struct he_enclave_config {
    uint64_t magic;             /* HE_CONFIG_MAGIC */
    uint64_t enclave_size;      /* SECS.SIZE: ELRANGE is [base, base + enclave_size) */
    uint64_t heap_offset;       /* the heap pages, from the enclave base */
    uint64_t heap_size;
    uint64_t tcs_count;
};
_Static_assert(sizeof(struct he_enclave_config) == 40, "enclave config");

/* The thread-data page of a TCS. The signer writes the first five fields (offsets from the
 * enclave base); the trusted runtime keeps the rest. */
struct he_thread_data {
    uint64_t self;              /*  0: this page */
    uint64_t stack_top;         /*  8: one past the highest stack byte */
    uint64_t stack_limit;       /* 16: the lowest stack byte */
    uint64_t ssa;               /* 24: SSA frame 0 (TCS.OSSA) */
    uint64_t ssa_frame_size;    /* 32: pages per SSA frame (SECS.SSAFRAMESIZE) */
    uint64_t ursp;              /* 40: the app's RSP, RBP and return address at the last entry */
    uint64_t urbp;              /* 48 */
    uint64_t uret;              /* 56 */
    uint64_t ocall_rsp;         /* 64: the suspended ECALL's stack while an OCALL runs, or 0 */
    uint64_t ms_start;          /* 72: the current marshalling area [ms_start, ms_end) */
    uint64_t ms_end;            /* 80 */
};
#define HE_TD_SIGNED_FIELDS 5

#endif
