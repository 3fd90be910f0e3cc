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

/* The heap (the pages the signer's config gave it). */
void *he_malloc(size_t size);
void he_free(void *p);

#endif
