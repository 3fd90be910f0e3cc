/*
 * Physical page-frame allocator: a bitmap over [0, max_pfn), bit set = in use or reserved.
 * Free: the e820 RAM (after memmap=) minus the first MiB (firmware areas), the TCG log,
 * the kernel image and the initramfs.
 */
#include "mm.h"

#define MAX_PHYS_ADDR   (16UL << 30)              /* RAM above this is ignored */
#define MAX_PFN         (MAX_PHYS_ADDR >> PAGE_SHIFT)

static u64 bitmap[MAX_PFN / 64];
static u64 max_pfn;
static u64 free_count, total_count;
static u64 search_hint;

static inline u64 popcount64(u64 x)
{
    x = x - ((x >> 1) & 0x5555555555555555UL);
    x = (x & 0x3333333333333333UL) + ((x >> 2) & 0x3333333333333333UL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fUL;
    return (x * 0x0101010101010101UL) >> 56;
}

static inline bool test_pfn(u64 pfn) { return bitmap[pfn / 64] & (1UL << (pfn % 64)); }
static inline void set_pfn(u64 pfn) { bitmap[pfn / 64] |= 1UL << (pfn % 64); }
static inline void clear_pfn(u64 pfn) { bitmap[pfn / 64] &= ~(1UL << (pfn % 64)); }

/* mark [s, e) (pfns) used; returns how many were free before */
static u64 mark_used(u64 s, u64 e)
{
    u64 n = 0;
    if (e > max_pfn)
        e = max_pfn;
    for (u64 p = s; p < e;) {
        if (p % 64 == 0 && p + 64 <= e) {
            n += 64 - popcount64(bitmap[p / 64]);
            bitmap[p / 64] = ~0UL;
            p += 64;
        } else {
            if (!test_pfn(p)) {
                set_pfn(p);
                n++;
            }
            p++;
        }
    }
    return n;
}

static u64 mark_free(u64 s, u64 e)
{
    u64 n = 0;
    if (e > max_pfn)
        e = max_pfn;
    for (u64 p = s; p < e;) {
        if (p % 64 == 0 && p + 64 <= e) {
            n += popcount64(bitmap[p / 64]);
            bitmap[p / 64] = 0;
            p += 64;
        } else {
            if (test_pfn(p)) {
                clear_pfn(p);
                n++;
            }
            p++;
        }
    }
    return n;
}

void reserve_pages(u64 start, u64 end)
{
    free_count -= mark_used(start >> PAGE_SHIFT, ALIGN_UP(end, PAGE_SIZE) >> PAGE_SHIFT);
}

void page_alloc_init(void)
{
    u64 end = e820_end_of_ram();
    if (end > MAX_PHYS_ADDR) {
        printk("mm: RAM above %#lx ignored\n", (unsigned long)MAX_PHYS_ADDR);
        end = MAX_PHYS_ADDR;
    }
    max_pfn = end >> PAGE_SHIFT;
    memset(bitmap, 0xff, ALIGN_UP(max_pfn, 64) / 8);
    for (u32 i = 0; i < e820_table.nr; i++) {
        const struct e820_entry *e = &e820_table.map[i];
        if (e->type != E820_TYPE_RAM)
            continue;
        u64 s = ALIGN_UP(e->addr, PAGE_SIZE) >> PAGE_SHIFT;
        u64 t = ALIGN_DOWN(e->addr + e->size, PAGE_SIZE) >> PAGE_SHIFT;
        if (t > s) {
            u64 n = mark_free(s, t);
            free_count += n;
        }
    }
    total_count = free_count;
    /* the first MiB: null page, boot_params, command line, loader, firmware tables, TCG log */
    reserve_pages(0, 0x100000);
    if (boot_params.eventlog_addr && boot_params.eventlog_max)
        reserve_pages(boot_params.eventlog_addr, boot_params.eventlog_addr + boot_params.eventlog_max);
    reserve_pages(__pa_symbol(_text), __pa_symbol(_end));
    if (boot_params.initrd_size)
        reserve_pages(boot_params.initrd_addr, boot_params.initrd_addr + boot_params.initrd_size);
    search_hint = 0;

    u64 code = (u64)(_etext - _text), rodata = (u64)(__end_rodata - __start_rodata);
    u64 data = (u64)(_edata - _sdata), bss = (u64)(__bss_stop - __bss_start);
    printk("Memory: %luK/%luK available (%luK kernel code, %luK rwdata, %luK rodata, %luK bss, "
           "%luK reserved)\n",
           (unsigned long)(free_count * 4), (unsigned long)(total_count * 4),
           (unsigned long)(code >> 10), (unsigned long)(data >> 10), (unsigned long)(rodata >> 10),
           (unsigned long)(bss >> 10), (unsigned long)((total_count - free_count) * 4));
}

u64 alloc_pages(u64 count)
{
    if (!count)
        return 0;
    for (int pass = 0; pass < 2; pass++) {
        u64 start = pass == 0 ? search_hint : 0;
        u64 limit = pass == 0 ? max_pfn : search_hint + count;
        if (limit > max_pfn)
            limit = max_pfn;
        u64 run = 0;
        for (u64 p = start; p < limit; p++) {
            if (p % 64 == 0 && run == 0 && bitmap[p / 64] == ~0UL && p + 64 <= limit) {
                p += 63;
                continue;
            }
            if (test_pfn(p)) {
                run = 0;
                continue;
            }
            if (++run == count) {
                u64 first = p + 1 - count;
                mark_used(first, p + 1);
                free_count -= count;
                search_hint = p + 1;
                memset(__va(first << PAGE_SHIFT), 0, count * PAGE_SIZE);
                return first << PAGE_SHIFT;
            }
        }
    }
    return 0;
}

u64 alloc_page(void)
{
    return alloc_pages(1);
}

void free_pages(u64 pa, u64 count)
{
    u64 pfn = pa >> PAGE_SHIFT;
    for (u64 i = 0; i < count; i++) {
        if (pfn + i >= max_pfn || !test_pfn(pfn + i))
            panic("free_pages: bad page %#lx", (unsigned long)((pfn + i) << PAGE_SHIFT));
        clear_pfn(pfn + i);
    }
    free_count += count;
    if (pfn < search_hint)
        search_hint = pfn;
}

void free_page(u64 pa)
{
    free_pages(pa, 1);
}

u64 nr_free_pages(void) { return free_count; }
u64 nr_total_pages(void) { return total_count; }
