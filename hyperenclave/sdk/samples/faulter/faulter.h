/* The faulter enclave's edge functions (app: app.c): ECALLs that fault inside the enclave. */
#ifndef FAULTER_H
#define FAULTER_H

#define FAULTER_ECALL_NOTHING   0   /* returns SGX_SUCCESS */
#define FAULTER_ECALL_UD2       1   /* #UD */
#define FAULTER_ECALL_READ_NULL 2   /* #PF: reads address 0, outside ELRANGE */
#define FAULTER_ECALL_DIVIDE    3   /* #DE */
#endif
