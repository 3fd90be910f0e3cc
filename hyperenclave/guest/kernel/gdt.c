/* GDT (Linux layout) and the 64-bit TSS: RSP0 for ring 3 -> 0, IST1 for #DF. */
#include "kernel.h"
#include "sched.h"

struct tss64 {
    u32 reserved0;
    u64 rsp[3];
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iomap_base;
} __attribute__((packed));

static struct tss64 tss __aligned(64);
static u8 df_stack[8192] __aligned(16);
static u8 nmi_stack[4096] __aligned(16);

static u64 gdt[16] __aligned(16) = {
    [0] = 0,
    [GDT_ENTRY_KERNEL32_CS] = 0x00cf9b000000ffffUL,   /* 0x08 kernel 32-bit code */
    [2] = 0x00af9b000000ffffUL,                       /* 0x10 kernel 64-bit code */
    [3] = 0x00cf93000000ffffUL,                       /* 0x18 kernel data */
    [4] = 0x00cffb000000ffffUL,                       /* 0x23 user 32-bit code */
    [5] = 0x00cff3000000ffffUL,                       /* 0x2b user data */
    [6] = 0x00affb000000ffffUL,                       /* 0x33 user 64-bit code */
    /* [8], [9]: TSS, filled in at run time */
};

struct desc_ptr {
    u16 limit;
    u64 base;
} __attribute__((packed));

void tss_set_rsp0(u64 rsp0)
{
    tss.rsp[0] = rsp0;
}

void gdt_init(void)
{
    u64 base = (u64)&tss;
    u64 limit = sizeof(tss) - 1;
    tss.iomap_base = sizeof(tss);    /* no I/O bitmap: ring 3 port I/O faults */
    tss.ist[0] = (u64)(df_stack + sizeof(df_stack));
    tss.ist[1] = (u64)(nmi_stack + sizeof(nmi_stack));
    gdt[GDT_ENTRY_TSS] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) |
                         (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt[GDT_ENTRY_TSS + 1] = base >> 32;

    struct desc_ptr gdtr = {sizeof(gdt) - 1, (u64)gdt};
    __asm__ volatile(
        "lgdt %0\n\t"
        "movl %2, %%eax\n\t"
        "movl %%eax, %%ds\n\t"
        "movl %%eax, %%es\n\t"
        "movl %%eax, %%ss\n\t"
        "xorl %%eax, %%eax\n\t"
        "movl %%eax, %%fs\n\t"
        "movl %%eax, %%gs\n\t"
        "pushq %1\n\t"
        "leaq 1f(%%rip), %%rax\n\t"
        "pushq %%rax\n\t"
        "lretq\n"
        "1:\n\t"
        "movw %3, %%ax\n\t"
        "ltr %%ax\n\t"
        :
        : "m"(gdtr), "i"(__KERNEL_CS), "i"(__KERNEL_DS), "i"(__TSS_SEL)
        : "rax", "memory");
}
