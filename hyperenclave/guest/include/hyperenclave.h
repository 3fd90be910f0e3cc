/*
 * The contract between the host's hyper_enclave driver and the monitor (HyperEnclave's
 * `header.rs` + `hypercall.h`), and the registers of the platform's DMA test engine.
 * Python mirrors: hyperenclave/vmm/image.py (header), hyperenclave/vmm/hypercall.py (codes),
 * hyperenclave/platform/devices/dma.py (DMA engine). Keep them in step.
 */
#ifndef HYPERENCLAVE_H
#define HYPERENCLAVE_H

#ifdef __ASSEMBLER__
#define HE_U64(x) x
#else
#include "lib.h"
#endif

/* ---------------------------------------------------------------- monitor image header */
/*
 * The monitor image file (/lib/firmware/hyperenclave-monitor.bin) is flat: this header at
 * offset 0, then the entry stub (arch_entry) at `entry_offset`, then the monitor's code
 * manifest. The driver measures the FILE as read (before it fills the driver fields), copies
 * it to the start of monitor memory, fills the driver fields in the copy, then calls
 * `entry(cpu_id)` (SysV ABI, interrupts off) on every CPU. entry returns 0 when the monitor
 * runs and the CPU continues as its guest, or a negative errno when the launch was refused.
 */
#define HE_SIGNATURE        "HYPERENC"
#define HE_VERSION          1
#define HE_HEADER_SIZE      0x100

#define HE_OFF_SIGNATURE        0x00    /* char[8] "HYPERENC" */
#define HE_OFF_VERSION          0x08    /* u32: must equal HE_VERSION */
#define HE_OFF_HEADER_SIZE      0x0C    /* u32: HE_HEADER_SIZE */
#define HE_OFF_IMAGE_SIZE       0x10    /* u64: bytes in the file */
#define HE_OFF_ENTRY            0x18    /* u64: offset of arch_entry in the image */
#define HE_OFF_PERCPU_SIZE      0x20    /* u64: per-CPU area (VMXON region, VMCS, stack) */
#define HE_OFF_HEAP_SIZE        0x28    /* u64: monitor heap (EPT/IOMMU tables, zero page) */
#define HE_OFF_CODE_DIGEST      0x30    /* u8[32]: SHA-256 of the monitor code manifest */
/* filled in by the driver in the copy in monitor memory (not measured, as in HyperEnclave) */
#define HE_OFF_MAX_CPUS         0x50    /* u32 */
#define HE_OFF_ONLINE_CPUS      0x54    /* u32 */
#define HE_OFF_HV_PHYS          0x58    /* u64: monitor memory start (= where the image is) */
#define HE_OFF_HV_SIZE          0x60    /* u64: monitor memory size (2 MiB multiple) */
#define HE_OFF_EPC_PHYS         0x68    /* u64: EPC start */
#define HE_OFF_EPC_SIZE         0x70    /* u64: EPC size */
#define HE_OFF_PERCPU_PHYS      0x78    /* u64: per-CPU areas start (page aligned, in hv memory) */
#define HE_OFF_TPM_MMIO         0x80    /* u64: TPM CRB base (0xFED40000) */
#define HE_OFF_TPM_TYPE         0x88    /* u32: 0 = TPM 2.0 CRB */
#define HE_OFF_FEATURE_MASK     0x8C    /* u32: hyper_enclave.feature_mask= */

/* IA32_VMX_BASIC[30:0] of the emulated CPU: VMXON and VMCS regions start with it. */
#define HE_VMCS_REVISION_ID 1

/* Monitor memory = [image | per-CPU areas | heap], rounded up to 2 MiB; the rest of the
 * reserved range is EPC. */
#define HE_HV_ALIGN         0x200000

/* ---------------------------------------------------------------- hypercalls */
/* VMCALL with RAX = code, RDI = arg0, RSI = arg1; the result comes back in RAX.
 * Supervisor codes (bits 31 and 30 clear) only from CPL 0, user codes only from CPL 3;
 * anything else gets #UD. Supervisor errors are negative errnos. */
#define HC_DISABLE              0x0     /* arg0 = 1: leave; the host runs natively again */
#define HC_ENCLAVE_CREATE       0x10
#define HC_ENCLAVE_ADD_PAGE     0x11
#define HC_ENCLAVE_INIT         0x12
#define HC_ENCLAVE_PREPARE_DESTROY 0x13
#define HC_ENCLAVE_FINISH_DESTROY  0x14
#define HC_TPM_CMD_SYNC         0x16
#define HC_RESET_STATS          0x100
#define HC_SHARED_MEMORY_ADD    0x101   /* arg0 = struct { u64 secs, start, end; } * */
#define HC_SHARED_MEMORY_REMOVE 0x102   /* arg0 = the same; exactly a range 0x101 shared */
#define HC_SHARED_MEMORY_INVALID_START 0x103   /* arg0 = the same; part of a shared range */
#define HC_SHARED_MEMORY_INVALID_END   0x104   /* arg0 = SECS EPC page; ends one 0x103 */
#define HC_INIT_CMRM            0x200   /* arg0 = struct he_mem_region *, arg1 = count */
#define HC_SET_INIT_CMRM_DONE   0x201

#define HC_USER_BITS            0xC0000000u
#define HC_ENCLAVE_ENTER        0x80000000u
#define HC_ENCLAVE_EXIT         0x80000001u
#define HC_ENCLAVE_RESUME       0x80000005u

/* Enclave leaves (answers in RAX as Linux's __encls: 0, an SGX error code, ENCLS_FAULT_FLAG |
 * vector where the SGX leaf would fault, or -errno for a pointer the monitor cannot use):
 *   HC_ENCLAVE_CREATE   arg0 = struct he_pageinfo * (srcpge = SECS, secinfo = PT_SECS),
 *                       arg1 = EPC page for the SECS
 *   HC_ENCLAVE_ADD_PAGE arg0 = struct he_pageinfo * (linaddr, srcpge, secinfo, secs = SECS EPC
 *                       page), arg1 = EPC page | HE_ADD_EXTEND to EEXTEND all of it
 *   HC_ENCLAVE_INIT     arg0 = SECS EPC page, arg1 = SIGSTRUCT * (page aligned)
 *   HC_ENCLAVE_PREPARE_DESTROY / HC_ENCLAVE_FINISH_DESTROY   arg0 = SECS EPC page */
#define HE_ADD_EXTEND       1
#define HE_ENCLS_FAULT_FLAG 0x40000000

#ifndef __ASSEMBLER__
struct he_pageinfo {            /* SGX PAGEINFO, 32-byte aligned */
    u64 linaddr;
    u64 srcpge;
    u64 secinfo;                /* 64-byte aligned SECINFO */
    u64 secs;
} __attribute__((aligned(32)));

struct he_mem_region {          /* HC_INIT_CMRM: convertible (normal) memory the host owns */
    u64 start;
    u64 size;
};

static inline long hypercall2(unsigned long code, unsigned long arg0, unsigned long arg1)
{
    long ret;
    __asm__ volatile("vmcall" : "=a"(ret) : "a"(code), "D"(arg0), "S"(arg1) : "memory");
    return ret;
}
#endif

/* ---------------------------------------------------------------- DMA test engine */
/* A bus-master copy engine on port I/O (32-bit registers). Its reads and writes are DMA:
 * they go through the IOMMU once the monitor runs. Program SRC, DST, LEN, write CMD=1, then
 * read STATUS: DONE, or FAULT with the blocked bus address in FAULT_LO/HI. */
#define DMA_BASE            0xD000
#define DMA_SRC_LO          0x00
#define DMA_SRC_HI          0x04
#define DMA_DST_LO          0x08
#define DMA_DST_HI          0x0C
#define DMA_LEN             0x10    /* bytes, at most 1 MiB */
#define DMA_CMD             0x14    /* write DMA_CMD_COPY to start */
#define DMA_STATUS          0x18
#define DMA_FAULT_LO        0x1C
#define DMA_FAULT_HI        0x20
#define DMA_FAULT_REASON    0x24    /* VT-d fault reason (5 = write denied, 6 = read denied) */
#define DMA_PORTS           0x28
#define DMA_CMD_COPY        1
#define DMA_STATUS_IDLE     0
#define DMA_STATUS_DONE     1
#define DMA_STATUS_FAULT    2
#define DMA_FAULT_BAD_LENGTH   0       /* FAULT_REASON: LEN over 1 MiB, nothing copied */
#define DMA_FAULT_MASTER_ABORT 0x100   /* FAULT_REASON: the address is not RAM */

#endif
