/*
 * /dev/he_attack: an LKDTM-like test module. User space writes one command line; the driver
 * carries it out in kernel mode (CPL 0), prints "he_attack: Performing <command>" and then the
 * result line, which read() returns. It lets tests try what a malicious host kernel could do
 * to the monitor and the EPC once the hypervisor has demoted it.
 *
 *   read PA [LEN]              read LEN (64, at most 4096) bytes through the direct map
 *   write PA VALUE             write a u64 (PA 8-byte aligned) through the direct map
 *   exec PA                    call the code at __va(PA)
 *   alias_read PA [LEN]        the same through a new kernel mapping of PA (fresh virtual
 *   alias_write PA VALUE       address, 4 KiB page), i.e. remapped host page tables
 *   remap VA PA                point the caller's user page VA at PA (keeping U/W)
 *   alias VA SRC               point the caller's user page VA at the frame its page SRC maps
 *   dma_read PA LEN            DMA engine: PA -> a kernel buffer pre-filled with 0xAA
 *   dma_write PA VALUE         DMA engine: a kernel buffer holding the u64 VALUE -> PA
 *   hypercall CODE ARG0 ARG1   VMCALL from CPL 0; prints RAX
 *   hypercall_loop N CODE      N VMCALLs from CPL 0 (the exit-cost benchmark)
 *   triple_fault               load an empty IDT and fault: the CPU shuts down
 *
 * Addresses (PA, VA) are hex, "0x" optional; LEN, VALUE, CODE and ARGs are C literals (0x...
 * or decimal). A malformed command fails write() with -EINVAL; a fault is an oops that kills
 * the writer.
 */
#include "kernel.h"
#include "fs.h"
#include "mm.h"
#include "hyperenclave.h"

#define MAX_LEN      4096
#define SHOW_BYTES   64
/* Unused kernel addresses for alias mappings: the GiB after the kernel image, under the PML4
 * entry that every process's page table shares. */
#define ALIAS_BASE   0xffffffffc0000000UL
#define ALIAS_PAGES  512

static char result[256];
static u8 scratch[MAX_LEN];
static unsigned int alias_next;

static void set_result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_result(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(result, sizeof(result), fmt, ap);
    va_end(ap);
}

static bool parse(const char *s, unsigned int base, u64 *v)
{
    const char *end;
    *v = (u64)simple_strtoll(s, &end, base);
    return end != s && !*end;
}

/* "<hex of the first 64 bytes>[...] all zero|NONZERO" */
static void describe(char *out, size_t size, const u8 *p, u64 len)
{
    size_t pos = 0;
    bool zero = true;
    for (u64 i = 0; i < len; i++) {
        if (i < SHOW_BYTES)
            pos += snprintf(out + pos, size - pos, "%02x", p[i]);
        zero &= !p[i];
    }
    snprintf(out + pos, size - pos, "%s %s", len > SHOW_BYTES ? "..." : "",
             zero ? "all zero" : "NONZERO");
}

/* "<what> len <n>: <bytes> all zero|NONZERO"; what is "read PA" or "alias_read PA via VA" */
static void read_bytes(const char *what, const volatile u8 *src, u64 len)
{
    char text[2 * SHOW_BYTES + 16];
    for (u64 i = 0; i < len; i++)
        scratch[i] = src[i];
    describe(text, sizeof(text), scratch, len);
    set_result("%s len %lu: %s", what, len, text);
}

static u64 alias_map(u64 pa)
{
    u64 va = ALIAS_BASE + (u64)(alias_next++ % ALIAS_PAGES) * PAGE_SIZE;
    if (map_page(__va(kernel_pml4_pa), va, pa & PAGE_MASK, PTE_W))   /* also invlpg */
        return 0;
    return va;
}

static int do_remap(u64 va, u64 pa)
{
    u64 *pte = va < USER_SPACE_END ? lookup_pte(current->pml4, va) : NULL;
    if (!pte || !(*pte & PTE_U)) {
        set_result("remap %#lx: not a user page of %s[%d]", va, current->comm, current->pid);
        return -EFAULT;
    }
    u64 old = *pte;
    *pte = (pa & PTE_ADDR) | (old & (PTE_P | PTE_U | PTE_W));   /* no longer PTE_OWNED */
    invlpg(va);
    if (old & PTE_OWNED)
        free_page(old & PTE_ADDR);
    set_result("remap %#lx -> %#lx (was %#lx)", va & PAGE_MASK, pa & PAGE_MASK, old & PTE_ADDR);
    return 0;
}

/* ---- the DMA engine (include/hyperenclave.h) ---- */
static void dma_wr(u32 reg, u32 v) { outl(DMA_BASE + reg, v); }
static u32 dma_rd(u32 reg) { return inl(DMA_BASE + reg); }

/* one copy; "status DONE" or "status FAULT at <addr> reason <n> (...)" into out */
static void dma_copy(u64 src, u64 dst, u32 len, char *out, size_t size)
{
    dma_wr(DMA_SRC_LO, (u32)src);
    dma_wr(DMA_SRC_HI, (u32)(src >> 32));
    dma_wr(DMA_DST_LO, (u32)dst);
    dma_wr(DMA_DST_HI, (u32)(dst >> 32));
    dma_wr(DMA_LEN, len);
    dma_wr(DMA_CMD, DMA_CMD_COPY);
    u32 status = dma_rd(DMA_STATUS);
    for (int i = 0; i < 1000 && !(status & (DMA_STATUS_DONE | DMA_STATUS_FAULT)); i++)
        status = dma_rd(DMA_STATUS);
    if (status == DMA_STATUS_DONE) {
        snprintf(out, size, "status DONE");
    } else if (status == DMA_STATUS_FAULT) {
        u64 addr = dma_rd(DMA_FAULT_LO) | (u64)dma_rd(DMA_FAULT_HI) << 32;
        u32 reason = dma_rd(DMA_FAULT_REASON);
        snprintf(out, size, "status FAULT at %#lx reason %#x (%s)", addr, reason,
                 reason == 5 ? "write denied" : reason == 6 ? "read denied" :
                 reason == 0x100 ? "master abort" : "?");
    } else {
        snprintf(out, size, "status %#x (no DMA engine?)", status);
    }
}

static int do_dma(bool write, u64 pa, u64 arg)
{
    char status[96], text[2 * SHOW_BYTES + 16];
    u64 buf = alloc_page();
    if (!buf) {
        set_result("dma: out of memory");
        return -ENOMEM;
    }
    u8 *p = __va(buf);
    if (write) {
        memcpy(p, &arg, sizeof(arg));
        dma_copy(buf, pa, sizeof(arg), status, sizeof(status));
        set_result("dma_write %#lx value %#lx: %s", pa, arg, status);
    } else {
        memset(p, 0xAA, arg);
        dma_copy(pa, buf, (u32)arg, status, sizeof(status));
        bool unchanged = true;
        for (u64 i = 0; i < arg; i++)
            unchanged &= p[i] == 0xAA;
        if (unchanged)
            snprintf(text, sizeof(text), "unchanged");
        else
            describe(text, sizeof(text), p, arg);
        set_result("dma_read %#lx len %lu: %s, buffer %s", pa, arg, status, text);
    }
    free_page(buf);
    return 0;
}

static int run(int argc, const char *argv[])
{
    const char *cmd = argc ? argv[0] : "";
    char what[64];
    u64 a = 0, b = 0, c = 0;
    bool ok = argc >= 2 && parse(argv[1], 16, &a);

    if (!strcmp(cmd, "triple_fault") && argc == 1) {
        static const struct { u16 limit; u64 base; } __attribute__((packed)) empty = {0, 0};
        __asm__ volatile("cli; lidt %0; ud2" : : "m"(empty));
    }
    if (!strcmp(cmd, "read") || !strcmp(cmd, "alias_read")) {
        b = SHOW_BYTES;
        ok &= argc <= 3 && (argc < 3 || parse(argv[2], 0, &b)) && b && b <= MAX_LEN;
        if (!ok)
            goto usage;
        if (cmd[0] == 'r') {
            snprintf(what, sizeof(what), "read %#lx", a);
            read_bytes(what, __va(a), b);
            return 0;
        }
        u64 va = alias_map(a);
        if (!va) {
            set_result("alias_read %#lx: out of memory for page tables", a);
            return -ENOMEM;
        }
        snprintf(what, sizeof(what), "alias_read %#lx via %#lx", a, va);
        read_bytes(what, (const volatile u8 *)(va + (a & ~PAGE_MASK)),
                   MIN(b, PAGE_SIZE - (a & ~PAGE_MASK)));
        unmap_page(__va(kernel_pml4_pa), va);
        return 0;
    }
    if (!strcmp(cmd, "write") || !strcmp(cmd, "alias_write")) {
        if (!ok || argc != 3 || !parse(argv[2], 0, &b) || (a & 7))
            goto usage;
        u64 va = (u64)__va(a);
        snprintf(what, sizeof(what), "write %#lx", a);
        if (cmd[0] == 'a') {
            va = alias_map(a);
            if (!va) {
                set_result("alias_write %#lx: out of memory for page tables", a);
                return -ENOMEM;
            }
            snprintf(what, sizeof(what), "alias_write %#lx via %#lx", a, va);
            va += a & ~PAGE_MASK;
        }
        volatile u64 *p = (volatile u64 *)va;
        *p = b;
        set_result("%s value %#lx: reads back %#lx", what, b, *p);
        if (cmd[0] == 'a')
            unmap_page(__va(kernel_pml4_pa), va & PAGE_MASK);
        return 0;
    }
    if (!strcmp(cmd, "exec")) {
        if (!ok || argc != 2)
            goto usage;
        long (*fn)(void) = (long (*)(void))__va(a);
        long ret = fn();
        set_result("exec %#lx: returned %#lx", a, ret);
        return 0;
    }
    if (!strcmp(cmd, "remap")) {
        if (!ok || argc != 3 || !parse(argv[2], 16, &b))
            goto usage;
        return do_remap(a, b);
    }
    if (!strcmp(cmd, "alias")) {
        if (!ok || argc != 3 || !parse(argv[2], 16, &b))
            goto usage;
        u64 *src = b < USER_SPACE_END ? lookup_pte(current->pml4, b) : NULL;
        if (!src || !(*src & PTE_P)) {
            set_result("alias %#lx: %#lx is not mapped", a, b);
            return -EFAULT;
        }
        return do_remap(a, *src & PTE_ADDR);
    }
    if (!strcmp(cmd, "dma_read") || !strcmp(cmd, "dma_write")) {
        bool write = cmd[4] == 'w';
        if (!ok || argc != 3 || !parse(argv[2], 0, &b) || (!write && (!b || b > MAX_LEN)))
            goto usage;
        return do_dma(write, a, b);
    }
    if (!strcmp(cmd, "hypercall")) {
        if (argc != 4 || !parse(argv[1], 0, &a) || !parse(argv[2], 0, &b) ||
            !parse(argv[3], 0, &c))
            goto usage;
        long ret = hypercall2(a, b, c);
        set_result("hypercall %#lx(%#lx, %#lx) = %ld (%#lx)", a, b, c, ret, ret);
        return 0;
    }
    if (!strcmp(cmd, "hypercall_loop")) {     /* for the exit-cost benchmark */
        if (argc != 3 || !parse(argv[1], 0, &a) || !parse(argv[2], 0, &b))
            goto usage;
        long ret = 0;
        u64 t0 = rdtsc();
        for (u64 i = 0; i < a; i++)
            ret = hypercall2(b, 0, 0);
        set_result("hypercall_loop %lu x %#lx = %ld in %lu TSC cycles", a, b, ret, rdtsc() - t0);
        return 0;
    }
usage:
    set_result("bad command; use read PA [LEN] | write PA VALUE | exec PA | alias_read PA [LEN] "
               "| alias_write PA VALUE | remap VA PA | alias VA SRC | dma_read PA LEN | dma_write PA VALUE | "
               "hypercall CODE ARG0 ARG1 | hypercall_loop N CODE | triple_fault");
    return -EINVAL;
}

static long he_attack_write(struct file *f, const char *ubuf, u64 count)
{
    (void)f;
    char line[128];
    const char *argv[5];
    if (!count || count >= sizeof(line))
        return -EINVAL;
    if (copy_from_user(line, ubuf, count))
        return -EFAULT;
    line[count] = 0;
    if (line[count - 1] == '\n')
        line[count - 1] = 0;
    printk("he_attack: Performing %s\n", line);
    int err = run(split_args(line, argv, ARRAY_SIZE(argv)), argv);
    printk("he_attack: %s\n", result);
    return err ? err : (long)count;
}

static long he_attack_read(struct file *f, char *ubuf, u64 count)
{
    u64 len = strlen(result);
    if (f->pos >= len)
        return 0;
    u64 n = MIN(count, len - f->pos);
    if (copy_to_user(ubuf, result + f->pos, n))
        return -EFAULT;
    f->pos += n;
    return (long)n;
}

static const struct file_operations he_attack_fops = {
    .read = he_attack_read,
    .write = he_attack_write,
};

static int he_attack_init(void)
{
    return register_device("/dev/he_attack", &he_attack_fops, NULL);
}
device_initcall(he_attack_init);
