/*
 * /dev/hyper_enclave: the enclave device of the host driver (kernel/drivers/he_enclave.c), with
 * HyperEnclave's ioctl numbers (its driver's ioctl.h) in Linux's _IOW encoding. Shared by the
 * driver and user space (user/enclave_load.c), like Linux's uapi asm/sgx.h.
 *
 *   fd = open("/dev/hyper_enclave", O_RDWR);
 *   va = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, fd, 0);
 *   base = (va + size - 1) & ~(size - 1);         user space picks a size-aligned ELRANGE
 *   ioctl(fd, HE_IOC_ENCLAVE_CREATE, &create);      SECS.BASEADDR = base, inside the mapping
 *   ioctl(fd, HE_IOC_ENCLAVE_ADD_PAGE, &add);       once per page
 *   ioctl(fd, HE_IOC_ENCLAVE_INIT, &init);
 *   close(fd);                                      the last close (or exit) destroys it
 *
 * One enclave per open file. The mmap only reserves the range; ADD_PAGE maps each page to its
 * EPC page. Results: 0; -ENODEV when the monitor does not run; -EINVAL for a bad argument or
 * state, or when the leaf faulted with #GP; -EFAULT for a bad pointer or a #PF; -ENOMEM when no
 * EPC page is left; or a positive SGX error code (e.g. EINIT's SGX_INVALID_MEASUREMENT).
 */
#ifndef HE_IOCTL_H
#define HE_IOCTL_H

#include <stdint.h>
#include "uapi.h"

#define HE_IOC_MAGIC 0xA4

struct he_enclave_create {
    uint64_t src;               /* user pointer to a 4 KiB SECS (struct sgx_secs) */
};

struct he_enclave_add_page {
    uint64_t addr;              /* page in ELRANGE */
    uint64_t src;               /* user pointer to its 4 KiB of contents */
    uint64_t secinfo;           /* user pointer to a struct sgx_secinfo */
    uint64_t flags;             /* HE_ADD_PAGE_EXTEND */
};
#define HE_ADD_PAGE_EXTEND 1    /* EEXTEND (measure) all of the page */

struct he_enclave_init {
    uint64_t addr;              /* the enclave's base */
    uint64_t sigstruct;         /* user pointer to a SIGSTRUCT (SGX_SIGSTRUCT_SIZE bytes) */
};

#define HE_IOC_ENCLAVE_CREATE   _IOW(HE_IOC_MAGIC, 0x07, struct he_enclave_create)
#define HE_IOC_ENCLAVE_ADD_PAGE _IOW(HE_IOC_MAGIC, 0x08, struct he_enclave_add_page)
#define HE_IOC_ENCLAVE_INIT     _IOW(HE_IOC_MAGIC, 0x09, struct he_enclave_init)
/* Linux's SGX_IOC_ENCLAVE_ADD_PAGES: the pages [addr, addr + length) from src, one SECINFO for
 * all, added in the kernel; `count` comes back with how many were added (also on failure). */
struct he_enclave_add_pages {
    uint64_t src;
    uint64_t addr;
    uint64_t length;            /* bytes, a non-zero multiple of 4096 */
    uint64_t secinfo;
    uint64_t flags;             /* HE_ADD_PAGE_EXTEND */
    uint64_t count;             /* out */
};
#define HE_IOC_ENCLAVE_ADD_PAGES _IOW(HE_IOC_MAGIC, 0x0A, struct he_enclave_add_pages)
/* Share [addr, addr + size) of the caller (present, writable pages of ordinary memory) with its
 * initialized enclave at the same addresses: the marshalling buffer (HC_SHARED_MEMORY_ADD). */
struct he_enclave_shared_memory {
    uint64_t addr;
    uint64_t size;
};
#define HE_IOC_ADD_SHARED_MEMORY _IOW(HE_IOC_MAGIC, 0x0C, struct he_enclave_shared_memory)
/* Take back exactly a range ADD_SHARED_MEMORY shared (HC_SHARED_MEMORY_REMOVE): the enclave's
 * accesses to it fault from then on. munmap of shared memory needs no call: the driver tells
 * the monitor itself (HC 0x103/0x104 from its mmu notifier). */
#define HE_IOC_REMOVE_SHARED_MEMORY _IOW(HE_IOC_MAGIC, 0x0D, struct he_enclave_shared_memory)
/* Emulator extension (HyperEnclave's SDK uses signals instead): an exception that an AEX
 * delivers at `aep` in the calling process resumes it at `handler` with RDI = vector,
 * RSI = error code, RDX = the (page-aligned) CR2 of a #PF, instead of killing it, like Linux's
 * exception fixup for __vdso_sgx_enter_enclave. The untrusted runtime registers its AEP. */
struct he_exception_fixup {
    uint64_t aep;
    uint64_t handler;
};
#define HE_IOC_SET_EXCEPTION_FIXUP _IOW(HE_IOC_MAGIC, 0x30, struct he_exception_fixup)

/* ---- the SGX structures the ioctls carry (SDM Vol. 3D; Python: hyperenclave/vmm/sgx.py) ---- */
struct sgx_secs {
    uint64_t size;              /* ELRANGE size, a power of two */
    uint64_t base;              /* ELRANGE base, aligned to size */
    uint32_t ssa_frame_size;    /* pages */
    uint32_t misc_select;
    uint8_t reserved1[16];
    uint64_t ms_buf_size;       /* HyperEnclave: marshalling buffer per TCS */
    uint64_t attributes;        /* ATTRIBUTES.FLAGS */
    uint64_t xfrm;              /* ATTRIBUTES.XFRM */
    uint8_t reserved2[4096 - 64];   /* measurement and identity: 0 at ECREATE */
};
_Static_assert(sizeof(struct sgx_secs) == 4096, "SECS is one page");

struct sgx_secinfo {
    uint64_t flags;             /* R/W/X | page type << SGX_SECINFO_TYPE_SHIFT */
    uint8_t reserved[56];
} __attribute__((aligned(64)));

#define SGX_SECINFO_R           0x1
#define SGX_SECINFO_W           0x2
#define SGX_SECINFO_X           0x4
#define SGX_SECINFO_TYPE_SHIFT  8
#define SGX_PAGE_TYPE_SECS      0
#define SGX_PAGE_TYPE_TCS       1

#define SGX_SIGSTRUCT_SIZE          1808
#define SGX_SIGSTRUCT_ENCLAVEHASH   960     /* offset of the signed MRENCLAVE (32 bytes) */

/* The names of the SGX error codes the enclave leaves return. */
static inline const char *sgx_error_name(long code)
{
    switch (code) {
    case 1: return "SGX_INVALID_SIG_STRUCT";
    case 2: return "SGX_INVALID_ATTRIBUTE";
    case 3: return "SGX_BLKSTATE";
    case 4: return "SGX_INVALID_MEASUREMENT";
    case 5: return "SGX_NOTBLOCKABLE";
    case 6: return "SGX_PG_INVLD";
    case 7: return "SGX_EPC_PAGE_CONFLICT";
    case 8: return "SGX_INVALID_SIGNATURE";
    case 9: return "SGX_MAC_COMPARE_FAIL";
    case 10: return "SGX_PAGE_NOT_BLOCKED";
    case 11: return "SGX_NOT_TRACKED";
    case 12: return "SGX_VA_SLOT_OCCUPIED";
    case 13: return "SGX_CHILD_PRESENT";
    case 14: return "SGX_ENCLAVE_ACT";
    case 15: return "SGX_ENTRYEPOCH_LOCKED";
    case 16: return "SGX_INVALID_EINITTOKEN";
    case 17: return "SGX_PREV_TRK_INCMPL";
    case 18: return "SGX_PG_IS_SECS";
    case 19: return "SGX_PAGE_ATTRIBUTES_MISMATCH";
    case 20: return "SGX_PAGE_NOT_MODIFIABLE";
    case 21: return "SGX_PAGE_NOT_DEBUGGABLE";
    case 25: return "SGX_INVALID_COUNTER";
    case 26: return "SGX_PG_NONEPC";
    case 27: return "SGX_TRACK_NOT_REQUIRED";
    case 32: return "SGX_INVALID_CPUSVN";
    case 64: return "SGX_INVALID_ISVSVN";
    case 128: return "SGX_UNMASKED_EVENT";
    case 256: return "SGX_INVALID_KEYNAME";
    default: return "SGX error";
    }
}

#endif
