/*
 * The kernel's page tables:
 *   0xffff888000000000 + pa  direct map of [0, max(4 GiB, end of RAM)), 2 MiB pages;
 *                            2 MiB pages with no RAM in them (MMIO) are PCD|PWT
 *   0xffffffff80000000 + pa  kernel image, [0, 1 GiB) with 2 MiB pages
 *   lower half               nothing; each process gets its own user half (pgd_alloc)
 */
#include "mm.h"

#define PML4_INDEX(va) (((va) >> 39) & 511)
#define PDPT_INDEX(va) (((va) >> 30) & 511)
#define PD_INDEX(va)   (((va) >> 21) & 511)
#define PT_INDEX(va)   (((va) >> 12) & 511)

static u64 kernel_pml4[512] __aligned(4096);
static u64 kernel_pdpt_hi[512] __aligned(4096);
static u64 kernel_pd_hi[512] __aligned(4096);
u64 kernel_pml4_pa;

static u64 alloc_table(void)
{
    u64 pa = alloc_page();
    if (!pa)
        panic("paging: out of memory for page tables");
    return pa;
}

void paging_init(void)
{
    u64 end = e820_end_of_ram();
    u64 dm_end = end > (4UL << 30) ? ALIGN_UP(end, 1UL << 30) : (4UL << 30);
    u64 kflags = PTE_P | PTE_W | PTE_A | PTE_D;

    /* direct map */
    u64 pdpt_pa = alloc_table();
    u64 *pdpt = __va(pdpt_pa);
    for (u64 gib = 0; gib < dm_end >> 30; gib++) {
        u64 pd_pa = alloc_table();
        u64 *pd = __va(pd_pa);
        for (u64 i = 0; i < 512; i++) {
            u64 pa = (gib << 30) | (i << 21);
            u64 f = kflags | PTE_PS;
            if (!e820_overlaps_ram(&e820_firmware, pa, pa + (2UL << 20)))
                f |= PTE_PCD | PTE_PWT;     /* MMIO: uncached */
            pd[i] = pa | f;
        }
        pdpt[gib] = pd_pa | kflags;
    }
    kernel_pml4[PML4_INDEX(PAGE_OFFSET)] = pdpt_pa | kflags;

    /* kernel image */
    for (u64 i = 0; i < 512; i++)
        kernel_pd_hi[i] = (i << 21) | kflags | PTE_PS;
    kernel_pdpt_hi[PDPT_INDEX(KERNEL_VMA_BASE)] = __pa_symbol(kernel_pd_hi) | kflags;
    kernel_pml4[PML4_INDEX(KERNEL_VMA_BASE)] = __pa_symbol(kernel_pdpt_hi) | kflags;

    kernel_pml4_pa = __pa_symbol(kernel_pml4);
    write_cr3(kernel_pml4_pa);
    printk("x86/mm: direct map [mem %#018lx-%#018lx] at %#lx, kernel at %#lx, 2M pages\n",
           0UL, (unsigned long)(dm_end - 1), PAGE_OFFSET, KERNEL_VMA_BASE);
}

u64 *pgd_alloc(void)
{
    u64 pa = alloc_page();
    if (!pa)
        return NULL;
    u64 *pml4 = __va(pa);
    for (int i = 256; i < 512; i++)
        pml4[i] = kernel_pml4[i];
    return pml4;
}

static void free_level(u64 *table, int level)
{
    for (int i = 0; i < 512; i++) {
        u64 e = table[i];
        if (!(e & PTE_P))
            continue;
        u64 pa = e & PTE_ADDR;
        if (level == 1 || (e & PTE_PS)) {
            if ((e & PTE_OWNED) && level == 1)
                free_page(pa);
            continue;
        }
        free_level(__va(pa), level - 1);
        free_page(pa);
    }
}

void pgd_free(u64 *pml4)
{
    for (int i = 0; i < 256; i++) {
        u64 e = pml4[i];
        if (!(e & PTE_P))
            continue;
        free_level(__va(e & PTE_ADDR), 3);
        free_page(e & PTE_ADDR);
    }
    free_page(__pa(pml4));
}

static u64 *walk(u64 *pml4, u64 va, bool create)
{
    u64 *table = pml4;
    static const int shifts[3] = {39, 30, 21};
    for (int l = 0; l < 3; l++) {
        u64 *e = &table[(va >> shifts[l]) & 511];
        if (!(*e & PTE_P)) {
            if (!create)
                return NULL;
            u64 pa = alloc_page();
            if (!pa)
                return NULL;
            *e = pa | PTE_P | PTE_W | PTE_U;
        } else if (*e & PTE_PS) {
            return NULL;   /* large pages are only used in the kernel half */
        }
        table = __va(*e & PTE_ADDR);
    }
    return &table[PT_INDEX(va)];
}

int map_page(u64 *pml4, u64 va, u64 pa, u64 flags)
{
    u64 *pte = walk(pml4, va, true);
    if (!pte)
        return -ENOMEM;
    *pte = (pa & PTE_ADDR) | flags | PTE_P;
    invlpg(va);
    return 0;
}

u64 *lookup_pte(u64 *pml4, u64 va)
{
    u64 *pte = walk(pml4, va, false);
    if (!pte || !(*pte & PTE_P))
        return NULL;
    return pte;
}

u64 unmap_page(u64 *pml4, u64 va)
{
    u64 *pte = walk(pml4, va, false);
    if (!pte)
        return 0;
    u64 old = *pte;
    *pte = 0;
    invlpg(va);
    return old;
}

u64 user_virt_to_phys(u64 *pml4, u64 va, bool write)
{
    if (va >= USER_SPACE_END || !pml4)
        return ~0UL;
    u64 *pte = lookup_pte(pml4, va);
    if (!pte || !(*pte & PTE_U) || (write && !(*pte & PTE_W)))
        return ~0UL;
    return (*pte & PTE_ADDR) | (va & (PAGE_SIZE - 1));
}
