/*
 * The boot protocol between the platform firmware and the guest (docs/boot-protocol.md).
 * Mirrored in hyperenclave/platform/firmware/bootparam.py. Usable from C and from GNU as (.S).
 */
#ifndef HYPERENCLAVE_BOOTPARAM_H
#define HYPERENCLAVE_BOOTPARAM_H

#ifdef __ASSEMBLER__
#define _BP_U64(x) x
#else
#define _BP_U64(x) x##ULL
#endif

/* "HTEBOO01" read as a little-endian u64 */
#define BOOT_PARAMS_MAGIC       _BP_U64(0x31304F4F42455448)

/* Fixed physical addresses (memory map of the contract). */
#define BOOT_PARAMS_ADDR        0x1000
#define BOOT_CMDLINE_ADDR       0x2000
#define BOOT_CMDLINE_MAX        0x1000
#define BOOT_LOADER_ADDR        0x7000
#define BOOT_FIRMWARE_AREA      0x10000   /* 0x10000-0x1ffff: firmware page tables, GDT, stack */
#define BOOT_EVENTLOG_AREA      0x80000   /* 0x80000-0x9ffff: TCG event log */
#define BOOT_KERNEL_PADDR       0x100000
#define BOOT_INITRD_PADDR       0x4000000
#define TPM_CRB_BASE            0xFED40000

/* Byte offsets inside struct boot_params (for assembly). */
#define BP_MAGIC                0
#define BP_KERNEL_ENTRY         8
#define BP_CMDLINE_ADDR         16
#define BP_INITRD_ADDR          24
#define BP_INITRD_SIZE          32
#define BP_EVENTLOG_ADDR        40
#define BP_EVENTLOG_SIZE        48
#define BP_EVENTLOG_MAX         56
#define BP_TSC_KHZ              64
#define BP_E820_COUNT           72
#define BP_E820_TABLE           80
#define BP_E820_ENTRY_SIZE      24

#define E820_MAX_ENTRIES        32

/* e820 types (ACPI address range types; Linux names in comments) */
#define E820_TYPE_RAM           1   /* usable */
#define E820_TYPE_RESERVED      2   /* reserved */
#define E820_TYPE_ACPI          3   /* ACPI data */
#define E820_TYPE_NVS           4   /* ACPI NVS */
#define E820_TYPE_UNUSABLE      5   /* unusable */
#define E820_TYPE_PMEM          7   /* persistent (type 7) */
#define E820_TYPE_PRAM          12  /* persistent (type 12) */

#ifndef __ASSEMBLER__
#include <stdint.h>

struct boot_e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
} __attribute__((packed));

struct boot_params {
    uint64_t magic;          /* BOOT_PARAMS_MAGIC */
    uint64_t kernel_entry;   /* ELF e_entry */
    uint64_t cmdline_addr;   /* physical, NUL-terminated */
    uint64_t initrd_addr;    /* physical, page aligned */
    uint64_t initrd_size;
    uint64_t eventlog_addr;  /* physical address of the TCG log */
    uint64_t eventlog_size;  /* bytes used */
    uint64_t eventlog_max;   /* bytes available */
    uint64_t tsc_khz;        /* virtual TSC frequency */
    uint32_t e820_count;
    uint32_t reserved;
    struct boot_e820_entry e820[E820_MAX_ENTRIES];
} __attribute__((packed));

_Static_assert(sizeof(struct boot_e820_entry) == BP_E820_ENTRY_SIZE, "e820 entry size");
_Static_assert(__builtin_offsetof(struct boot_params, tsc_khz) == BP_TSC_KHZ, "tsc_khz offset");
_Static_assert(__builtin_offsetof(struct boot_params, e820) == BP_E820_TABLE, "e820 offset");
_Static_assert(sizeof(struct boot_params) == 80 + 32 * 24, "boot_params size");
#endif

#endif
