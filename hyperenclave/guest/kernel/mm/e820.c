/* The firmware's e820 memory map, and memmap= overrides ("user-defined physical RAM map"). */
#include "mm.h"

struct e820_table e820_firmware;
struct e820_table e820_table;
u64 memmap_reserved_start, memmap_reserved_size;
static bool user_defined;

const char *e820_type_name(u32 type)
{
    switch (type) {
    case E820_TYPE_RAM: return "usable";
    case E820_TYPE_RESERVED: return "reserved";
    case E820_TYPE_ACPI: return "ACPI data";
    case E820_TYPE_NVS: return "ACPI NVS";
    case E820_TYPE_UNUSABLE: return "unusable";
    case E820_TYPE_PMEM:
    case E820_TYPE_PRAM: return "persistent (type 12)";
    default: return "type ?";
    }
}

static void e820_print(const struct e820_table *t, const char *who)
{
    for (u32 i = 0; i < t->nr; i++) {
        const struct e820_entry *e = &t->map[i];
        if (e->type == E820_TYPE_PMEM)
            printk("%s: [mem %#018llx-%#018llx] persistent (type 7)\n", who,
                   (unsigned long long)e->addr, (unsigned long long)(e->addr + e->size - 1));
        else if (e->type <= E820_TYPE_UNUSABLE || e->type == E820_TYPE_PRAM)
            printk("%s: [mem %#018llx-%#018llx] %s\n", who, (unsigned long long)e->addr,
                   (unsigned long long)(e->addr + e->size - 1), e820_type_name(e->type));
        else
            printk("%s: [mem %#018llx-%#018llx] type %u\n", who, (unsigned long long)e->addr,
                   (unsigned long long)(e->addr + e->size - 1), e->type);
    }
}

static void e820_sort_merge(struct e820_table *t)
{
    /* insertion sort by address, then merge adjacent entries of the same type */
    for (u32 i = 1; i < t->nr; i++) {
        struct e820_entry e = t->map[i];
        u32 j = i;
        while (j > 0 && t->map[j - 1].addr > e.addr) {
            t->map[j] = t->map[j - 1];
            j--;
        }
        t->map[j] = e;
    }
    u32 out = 0;
    for (u32 i = 0; i < t->nr; i++) {
        if (!t->map[i].size)
            continue;
        if (out && t->map[out - 1].type == t->map[i].type &&
            t->map[out - 1].addr + t->map[out - 1].size == t->map[i].addr) {
            t->map[out - 1].size += t->map[i].size;
        } else {
            t->map[out++] = t->map[i];
        }
    }
    t->nr = out;
}

static void e820_push(struct e820_table *t, u64 addr, u64 size, u32 type)
{
    if (t->nr >= E820_TABLE_MAX || !size)
        return;
    t->map[t->nr].addr = addr;
    t->map[t->nr].size = size;
    t->map[t->nr].type = type;
    t->nr++;
}

/* Make [start, start+size) of `type`, cutting it out of whatever was there. */
static void e820_set_range(struct e820_table *t, u64 start, u64 size, u32 type)
{
    u64 end = start + size;
    u32 n = t->nr;
    for (u32 i = 0; i < n; i++) {
        struct e820_entry *e = &t->map[i];
        u64 es = e->addr, ee = e->addr + e->size;
        if (ee <= start || es >= end)
            continue;
        /* overlap: keep the parts outside [start, end) */
        u32 etype = e->type;
        e->size = 0;
        if (es < start)
            e820_push(t, es, start - es, etype);
        if (ee > end)
            e820_push(t, end, ee - end, etype);
    }
    e820_push(t, start, size, type);
    e820_sort_merge(t);
}

void e820_init(void)
{
    u32 n = boot_params.e820_count;
    if (n > E820_MAX_ENTRIES)
        n = E820_MAX_ENTRIES;
    e820_firmware.nr = 0;
    for (u32 i = 0; i < n; i++)
        e820_push(&e820_firmware, boot_params.e820[i].addr, boot_params.e820[i].size,
                  boot_params.e820[i].type);
    printk("BIOS-provided physical RAM map:\n");
    e820_print(&e820_firmware, "BIOS-e820");
    e820_table = e820_firmware;
    e820_sort_merge(&e820_table);
}

void e820_add_user_range(u64 start, u64 size, u32 type)
{
    if (!size)
        return;
    if (type == E820_TYPE_RESERVED && !memmap_reserved_size) {
        memmap_reserved_start = start;
        memmap_reserved_size = size;
    }
    e820_set_range(&e820_table, start, size, type);
    user_defined = true;
}

void e820_finish(void)
{
    if (user_defined) {
        printk("e820: user-defined physical RAM map:\n");
        e820_print(&e820_table, "user");
    }
}

u64 e820_end_of_ram(void)
{
    u64 end = 0;
    for (u32 i = 0; i < e820_table.nr; i++) {
        const struct e820_entry *e = &e820_table.map[i];
        if (e->type == E820_TYPE_RAM && e->addr + e->size > end)
            end = e->addr + e->size;
    }
    return end;
}

bool e820_overlaps_ram(const struct e820_table *t, u64 start, u64 end)
{
    for (u32 i = 0; i < t->nr; i++) {
        const struct e820_entry *e = &t->map[i];
        if (e->type == E820_TYPE_RAM && e->addr < end && e->addr + e->size > start)
            return true;
    }
    return false;
}

/* true when entries of `type` cover all of [start, end) (in any order, adjacent or overlapping) */
bool e820_covers(const struct e820_table *t, u64 start, u64 end, u32 type)
{
    for (bool progress = true; start < end && progress;) {
        progress = false;
        for (u32 i = 0; i < t->nr; i++) {
            const struct e820_entry *e = &t->map[i];
            if (e->type == type && e->addr <= start && e->addr + e->size > start) {
                start = e->addr + e->size;
                progress = true;
            }
        }
    }
    return start >= end;
}
