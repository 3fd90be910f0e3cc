/* Physical page allocator, e820, page tables. */
#ifndef KERNEL_MM_H
#define KERNEL_MM_H

#include "kernel.h"

/* ---- e820 (kernel/mm/e820.c) ---- */
#define E820_TABLE_MAX 128
struct e820_entry {
    u64 addr;
    u64 size;
    u32 type;
};
struct e820_table {
    u32 nr;
    struct e820_entry map[E820_TABLE_MAX];
};
extern struct e820_table e820_firmware;   /* as the firmware reported it */
extern struct e820_table e820_table;      /* after memmap= */
extern u64 memmap_reserved_start, memmap_reserved_size;   /* the first memmap=SIZE$START */
void e820_init(void);
void e820_add_user_range(u64 start, u64 size, u32 type);   /* from memmap= */
void e820_finish(void);                   /* print the user-defined map */
u64 e820_end_of_ram(void);
bool e820_overlaps_ram(const struct e820_table *t, u64 start, u64 end);
bool e820_covers(const struct e820_table *t, u64 start, u64 end, u32 type);
const char *e820_type_name(u32 type);

/* ---- page allocator (kernel/mm/page_alloc.c) ---- */
void page_alloc_init(void);
u64 alloc_pages(u64 count);     /* physical address of `count` zeroed contiguous pages, 0 if none */
u64 alloc_page(void);
void free_pages(u64 pa, u64 count);
void free_page(u64 pa);
void reserve_pages(u64 start, u64 end);
u64 nr_free_pages(void);
u64 nr_total_pages(void);

/* ---- page tables (kernel/mm/paging.c) ---- */
#define PTE_P      (1UL << 0)
#define PTE_W      (1UL << 1)
#define PTE_U      (1UL << 2)
#define PTE_PWT    (1UL << 3)
#define PTE_PCD    (1UL << 4)
#define PTE_A      (1UL << 5)
#define PTE_D      (1UL << 6)
#define PTE_PS     (1UL << 7)
#define PTE_G      (1UL << 8)
#define PTE_OWNED  (1UL << 9)    /* software bit: the page belongs to the mm and is freed with it */
#define PTE_NX     (1UL << 63)
#define PTE_ADDR   0x000ffffffffff000UL

extern u64 kernel_pml4_pa;
void paging_init(void);
u64 *pgd_alloc(void);                              /* new PML4 sharing the kernel half; virt */
void pgd_free(u64 *pml4);                          /* frees the user half and PTE_OWNED pages */
int map_page(u64 *pml4, u64 va, u64 pa, u64 flags);   /* 4 KiB mapping; 0 or -ENOMEM */
u64 *lookup_pte(u64 *pml4, u64 va);                 /* leaf 4 KiB PTE or NULL */
u64 unmap_page(u64 *pml4, u64 va);                  /* returns the old PTE */
/* Translate a user address in `pml4`; returns the physical address or ~0 when not mapped
 * with the needed rights (user, and writable if `write`). */
u64 user_virt_to_phys(u64 *pml4, u64 va, bool write);

/* ---- MMU notifiers (kernel/mm/mmu_notifier.c): hear about changes to a user page table ---- */
struct mmu_notifier;
struct mmu_notifier_ops {
    void (*invalidate_range_start)(struct mmu_notifier *mn, u64 start, u64 end);
    void (*invalidate_range_end)(struct mmu_notifier *mn, u64 start, u64 end);
};
struct mmu_notifier {
    const struct mmu_notifier_ops *ops;
    u64 *pml4;                  /* the page table it watches */
    struct mmu_notifier *next;
};
void mmu_notifier_register(struct mmu_notifier *mn, u64 *pml4);
void mmu_notifier_unregister(struct mmu_notifier *mn);
/* Around a change of [start, end) in `pml4` (munmap): the pages may be freed in between. */
void mmu_notifier_invalidate_range_start(u64 *pml4, u64 start, u64 end);
void mmu_notifier_invalidate_range_end(u64 *pml4, u64 start, u64 end);

/* MMIO below 4 GiB is in the direct map, uncached (PCD|PWT) where there is no RAM. */
static inline volatile void *ioremap(u64 pa) { return (volatile void *)__va(pa); }
static inline u32 readl(const volatile void *a) { return *(const volatile u32 *)a; }
static inline void writel(u32 v, volatile void *a) { *(volatile u32 *)a = v; }
static inline u64 readq(const volatile void *a) { return *(const volatile u64 *)a; }
static inline void writeq(u64 v, volatile void *a) { *(volatile u64 *)a = v; }

#endif
