/*
 * A signed enclave bundle ("HEENCL01"), written by the SDK's signer (hyperenclave/sdk/signer.py,
 * which documents the same format) and read by user/enclave_load.c. Little-endian, packed:
 *
 *   struct he_enclave_file_header                      64 bytes
 *   struct he_enclave_file_page[nr_pages]              24 bytes each, in EADD order
 *   page contents[nr_pages]                            4096 bytes each, same order
 *   SIGSTRUCT                                          1808 bytes
 *
 * The header holds what ECREATE needs besides BASEADDR (the loader picks the base); ISVPRODID and
 * ISVSVN are in the SIGSTRUCT, which EINIT copies them from.
 */
#ifndef HE_ENCLAVE_FILE_H
#define HE_ENCLAVE_FILE_H

#include <stdint.h>

#define HE_ENCLAVE_FILE_MAGIC "HEENCL01"

struct he_enclave_file_header {
    char magic[8];              /* HE_ENCLAVE_FILE_MAGIC, no NUL */
    uint64_t size;              /* SECS.SIZE: ELRANGE size, a power of two */
    uint64_t ms_buf_size;       /* SECS.MS_BUF_SIZE */
    uint64_t attributes;        /* SECS.ATTRIBUTES.FLAGS */
    uint64_t xfrm;              /* SECS.ATTRIBUTES.XFRM */
    uint32_t ssa_frame_size;    /* SECS.SSAFRAMESIZE, pages */
    uint32_t misc_select;       /* SECS.MISCSELECT */
    uint32_t nr_pages;
    uint32_t reserved[3];       /* 0 */
};
_Static_assert(sizeof(struct he_enclave_file_header) == 64, "bundle header");

struct he_enclave_file_page {
    uint64_t offset;            /* from the enclave base, page aligned */
    uint64_t secinfo;           /* SECINFO.FLAGS: R/W/X | page type << 8 */
    uint64_t flags;             /* HE_ENCLAVE_PAGE_MEASURED */
};
_Static_assert(sizeof(struct he_enclave_file_page) == 24, "bundle page entry");

#define HE_ENCLAVE_PAGE_MEASURED 1  /* EEXTEND the page (ADD_PAGE's HE_ADD_PAGE_EXTEND) */

#endif
