/* Core kernel definitions: types, memory layout, port/MSR helpers, printk. */
#ifndef KERNEL_KERNEL_H
#define KERNEL_KERNEL_H

#include <stdint.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include "lib.h"
#include "bootparam.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t s8;
typedef int16_t s16;
typedef int32_t s32;
typedef int64_t s64;

#define UTS_RELEASE "6.1.0-hyperenclave"

/* ---- virtual memory layout (Linux x86-64) ---- */
#define PAGE_SHIFT        12
#define PAGE_SIZE         4096UL
#define PAGE_MASK         (~(PAGE_SIZE - 1))
#define PAGE_OFFSET       0xffff888000000000UL   /* direct map of all physical memory */
#define KERNEL_VMA_BASE   0xffffffff80000000UL   /* kernel image: VMA = this + LMA */
#define USER_SPACE_END    0x0000800000000000UL
#define USER_STACK_TOP    0x00007ffffffff000UL
#define USER_STACK_PAGES  16
#define USER_MMAP_BASE    0x0000100000000000UL

#define __va(pa)          ((void *)((u64)(pa) + PAGE_OFFSET))
#define __pa(va)          ((u64)(va) - PAGE_OFFSET)
#define __pa_symbol(va)   ((u64)(va) - KERNEL_VMA_BASE)

#define ALIGN_UP(x, a)    (((u64)(x) + (a) - 1) & ~((u64)(a) - 1))
#define ALIGN_DOWN(x, a)  ((u64)(x) & ~((u64)(a) - 1))
#define ARRAY_SIZE(a)     (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)         ((a) < (b) ? (a) : (b))
#define MAX(a, b)         ((a) > (b) ? (a) : (b))
#define __unused          __attribute__((unused))
#define __noreturn        __attribute__((noreturn))
#define __aligned(n)      __attribute__((aligned(n)))
#define __section(s)      __attribute__((section(s)))
#define __used            __attribute__((used))

/* ---- segment selectors (Linux layout) ---- */
#define GDT_ENTRY_KERNEL32_CS 1
#define __KERNEL_CS       0x10
#define __KERNEL_DS       0x18
#define __USER32_CS       0x23
#define __USER_DS         0x2b
#define __USER_CS         0x33
#define GDT_ENTRY_TSS     8
#define __TSS_SEL         0x40

/* ---- MSRs ---- */
#define MSR_EFER          0xc0000080
#define MSR_STAR          0xc0000081
#define MSR_LSTAR         0xc0000082
#define MSR_CSTAR         0xc0000083
#define MSR_SYSCALL_MASK  0xc0000084
#define MSR_FS_BASE       0xc0000100
#define MSR_GS_BASE       0xc0000101
#define EFER_SCE          (1UL << 0)
#define EFER_LME          (1UL << 8)
#define EFER_NXE          (1UL << 11)

#define X86_EFLAGS_IF     0x200

/* ---- errno ---- */
#define EPERM    1
#define ENOENT   2
#define ESRCH    3
#define EINTR    4
#define EIO      5
#define ENOEXEC  8
#define EBADF    9
#define ECHILD   10
#define EAGAIN   11
#define ENOMEM   12
#define EFAULT   14
#define EBUSY    16
#define EEXIST   17
#define ENODEV   19
#define EINVAL   22
#define ENFILE   23
#define EMFILE   24
#define ENOTTY   25
#define ENOSPC   28
#define ESPIPE   29
#define ERANGE   34
#define ENAMETOOLONG 36
#define ENOSYS   38

/* ---- inline asm helpers ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline u64 rdmsr(u32 msr)
{
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}
static inline void wrmsr(u32 msr, u64 v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}
static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}
static inline void cpuid_count(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
static inline u64 read_cr0(void) { u64 v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline u64 read_cr2(void) { u64 v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline u64 read_cr3(void) { u64 v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static inline u64 read_cr4(void) { u64 v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr3(u64 v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
static inline void write_cr4(u64 v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }
static inline void invlpg(u64 va) { __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory"); }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline u64 read_rflags(void) { u64 f; __asm__ volatile("pushfq; popq %0" : "=r"(f)); return f; }
/* Wait for the next interrupt with IF=1, then return with IF=0 again. */
static inline void safe_halt(void) { __asm__ volatile("sti; hlt; cli" ::: "memory"); }

/* ---- printk / panic (kernel/printk.c) ---- */
void printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vprintk(const char *fmt, va_list ap);
void printk_raw(const char *s, size_t n);   /* no timestamps; bytes as is */
void __noreturn panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void __noreturn machine_power_off(void);
void __noreturn machine_restart(void);

/* ---- time (kernel/time.c) ---- */
#define HZ 100
extern volatile u64 jiffies;
extern u64 tsc_khz;
u64 ktime_get_ns(void);          /* ns since power-on, from the TSC */
u64 ns_to_tsc(u64 ns);
void time_init(void);
void timer_tick(void);

/* ---- boot (kernel/main.c) ---- */
extern struct boot_params boot_params;   /* copy of the firmware's */
extern char boot_command_line[BOOT_CMDLINE_MAX];

/* ---- kernel command line (kernel/cmdline.c) ---- */
struct kernel_param {
    const char *name;            /* "name" matches "name=..." and "name"; "prefix." matches any "prefix.x" */
    int (*setup)(const char *val);   /* val is NULL when there is no '='; a "prefix." parameter
                                        gets the rest of the token, "x=value" or "x" */
};
#define __PASTE2(a, b) a##b
#define __PASTE(a, b) __PASTE2(a, b)
#define __setup(str, fn) \
    static const struct kernel_param __PASTE(__setup_##fn##_, __LINE__) __used \
        __section(".setup_param") __aligned(8) = {str, fn}
void parse_cmdline(void);
u64 memparse(const char *s, const char **end);   /* "256M" -> bytes; K/M/G/T, 0x hex */
bool cmdline_has(const char *word);
extern bool cmdline_shell;
extern const char *cmdline_init;

/* ---- CPUs: the machine has one (docs/boot-protocol.md) ---- */
static inline unsigned int num_possible_cpus(void) { return 1; }
static inline unsigned int num_online_cpus(void) { return 1; }

/* split a line into argv in place (whitespace separated); kernel/main.c */
int split_args(char *s, const char *argv[], int max);

/* ---- initcalls: drivers register with device_initcall(fn) ---- */
typedef int (*initcall_t)(void);
#define device_initcall(fn) \
    static const initcall_t __initcall_##fn __used __section(".initcall") __aligned(8) = fn
void do_initcalls(void);

/* ---- UART (kernel/drivers/serial.c) ---- */
void serial_putc(char c);
void serial_init(void);
void serial_poll(void);   /* drain input (called from IRQ4 and the timer) */

/* ---- linker symbols ---- */
extern char _text[], _etext[], __start_rodata[], __end_rodata[], _sdata[], _edata[];
extern char __bss_start[], __bss_stop[], _end[];

#endif
