/*
 * What the hyper_enclave driver (kernel/drivers/hyper_enclave.c) tells other drivers about the
 * running monitor, e.g. an enclave driver that hands out EPC pages.
 */
#ifndef KERNEL_HYPER_ENCLAVE_H
#define KERNEL_HYPER_ENCLAVE_H

#include "kernel.h"

struct he_layout {
    u64 hv_phys, hv_size;        /* monitor memory: image, per-CPU areas, heap */
    u64 epc_phys, epc_size;      /* the rest of the reserved range */
};

struct pt_regs;

/* An exception an AEX delivered at the current process's registered AEP: resume its enclave
 * runtime at its fixup (RDI = vector, RSI = error code, RDX = CR2 for a #PF) instead of
 * signalling, like Linux's fixup_vdso_exception() for __vdso_sgx_enter_enclave. */
bool he_enclave_fixup_exception(struct pt_regs *r);

/* true between a successful enable and the next disable */
bool hyper_enclave_enabled(void);
/* the running monitor's memory and EPC, or NULL when it is not enabled */
const struct he_layout *hyper_enclave_layout(void);

#endif
