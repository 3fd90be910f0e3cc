/*
 * SYSCALL entry setup and the system call table (Linux x86-64 numbers).
 * To add a call: write `long sys_foo(u64 a1, ...)` and add `[__NR_foo] = SYSCALL(sys_foo)`
 * below, or call register_syscall(nr, fn) from a driver's initcall.
 */
#include "kernel.h"
#include "sched.h"
#include "syscall.h"
#include "fs.h"
#include "mm.h"

#define SYSCALL(fn) ((syscall_fn_t)(void *)(fn))

static long sys_read(u64 fd, u64 buf, u64 count)
{
    struct file *f = fd_get((int)fd);
    if (!f)
        return -EBADF;
    if (!f->f_op->read)
        return -EINVAL;
    if ((f->flags & O_ACCMODE) == O_WRONLY)
        return -EBADF;
    return f->f_op->read(f, (char *)buf, count);
}

static long sys_write(u64 fd, u64 buf, u64 count)
{
    struct file *f = fd_get((int)fd);
    if (!f)
        return -EBADF;
    if (!f->f_op->write)
        return -EINVAL;
    if ((f->flags & O_ACCMODE) == O_RDONLY)
        return -EBADF;
    return f->f_op->write(f, (const char *)buf, count);
}

static long sys_open(u64 upath, u64 flags, u64 mode)
{
    (void)mode;
    char path[128];
    long n = strncpy_from_user(path, (const char *)upath, sizeof(path));
    if (n < 0)
        return n;
    int err;
    struct file *f = file_open(path, (int)flags, &err);
    if (!f)
        return err;
    int fd = fd_install(current, f);
    if (fd < 0)
        file_put(f);
    return fd;
}

static long sys_close(u64 fd)
{
    if (fd >= NR_OPEN || !current->files[fd])
        return -EBADF;
    struct file *f = current->files[fd];
    current->files[fd] = NULL;
    file_put(f);
    return 0;
}

static long sys_lseek(u64 fd, u64 off, u64 whence)
{
    struct file *f = fd_get((int)fd);
    if (!f)
        return -EBADF;
    if (!f->data)
        return -ESPIPE;
    s64 pos;
    switch (whence) {
    case 0: pos = (s64)off; break;
    case 1: pos = (s64)f->pos + (s64)off; break;
    case 2: pos = (s64)f->size + (s64)off; break;
    default: return -EINVAL;
    }
    if (pos < 0)
        return -EINVAL;
    f->pos = (u64)pos;
    return pos;
}

static long sys_ioctl(u64 fd, u64 cmd, u64 arg)
{
    struct file *f = fd_get((int)fd);
    if (!f)
        return -EBADF;
    if (!f->f_op->ioctl)
        return -ENOTTY;
    return f->f_op->ioctl(f, (unsigned int)cmd, arg);
}

/* mmap: anonymous private memory, or the file's f_op->mmap (device memory) */
static long sys_mmap(u64 addr, u64 len, u64 prot, u64 flags, u64 fd, u64 off)
{
    if (!len || (off & (PAGE_SIZE - 1)))
        return -EINVAL;
    len = ALIGN_UP(len, PAGE_SIZE);
    if (flags & MAP_FIXED) {
        if ((addr & (PAGE_SIZE - 1)) || addr + len > USER_SPACE_END || addr + len < addr)
            return -EINVAL;
    } else {
        /* a device may choose the range (enclave ranges must not overlap across processes) */
        struct file *dev = (flags & MAP_ANONYMOUS) ? NULL : fd_get((int)fd);
        addr = dev && dev->f_op->get_unmapped_area ? dev->f_op->get_unmapped_area(dev, len) : 0;
        if (!addr) {
            addr = current->mmap_next;
            current->mmap_next += len + PAGE_SIZE;   /* leave a guard gap */
        }
    }
    if (flags & MAP_ANONYMOUS) {
        for (u64 va = addr; va < addr + len; va += PAGE_SIZE) {
            u64 *pte = lookup_pte(current->pml4, va);
            if (pte) {
                if (*pte & PTE_OWNED)
                    memset(__va(*pte & PTE_ADDR), 0, PAGE_SIZE);
                continue;
            }
            u64 pa = alloc_page();
            if (!pa || map_page(current->pml4, va, pa,
                                PTE_U | PTE_OWNED | ((prot & PROT_WRITE) ? PTE_W : 0))) {
                if (pa)
                    free_page(pa);
                return -ENOMEM;
            }
        }
        add_vma(current, addr, addr + len,
                VMA_ANON | ((prot & PROT_READ) ? VMA_READ : 0) | ((prot & PROT_WRITE) ? VMA_WRITE : 0) |
                    ((prot & PROT_EXEC) ? VMA_EXEC : 0));
        return (long)addr;
    }
    struct file *f = fd_get((int)fd);
    if (!f)
        return -EBADF;
    if (!f->f_op->mmap)
        return -ENODEV;
    long err = f->f_op->mmap(f, addr, len, (int)prot, (int)flags, off >> PAGE_SHIFT);
    if (err)
        return err;
    add_vma(current, addr, addr + len,
            ((prot & PROT_READ) ? VMA_READ : 0) | ((prot & PROT_WRITE) ? VMA_WRITE : 0) |
                ((prot & PROT_EXEC) ? VMA_EXEC : 0));
    return (long)addr;
}

static long sys_munmap(u64 addr, u64 len)
{
    if (addr & (PAGE_SIZE - 1))
        return -EINVAL;
    len = ALIGN_UP(len, PAGE_SIZE);
    mmu_notifier_invalidate_range_start(current->pml4, addr, addr + len);
    for (u64 va = addr; va < addr + len && va < USER_SPACE_END; va += PAGE_SIZE) {
        u64 old = unmap_page(current->pml4, va);
        if ((old & PTE_P) && (old & PTE_OWNED))
            free_page(old & PTE_ADDR);
    }
    mmu_notifier_invalidate_range_end(current->pml4, addr, addr + len);
    for (int i = 0; i < current->nr_vmas;) {          /* forget areas that are gone entirely */
        struct vma *v = &current->vmas[i];
        if (v->start >= addr && v->end <= addr + len)
            *v = current->vmas[--current->nr_vmas];
        else
            i++;
    }
    return 0;
}

static long sys_sched_yield(void)
{
    yield();
    return 0;
}

struct timespec64 {
    s64 tv_sec;
    s64 tv_nsec;
};

static long sys_nanosleep(u64 ureq, u64 urem)
{
    struct timespec64 ts;
    if (copy_from_user(&ts, (void *)ureq, sizeof(ts)))
        return -EFAULT;
    if (ts.tv_sec < 0 || ts.tv_nsec < 0 || ts.tv_nsec >= 1000000000)
        return -EINVAL;
    u64 ns = (u64)ts.tv_sec * 1000000000UL + (u64)ts.tv_nsec;
    current->wake_tsc = rdtsc() + ns_to_tsc(ns);
    while (rdtsc() < current->wake_tsc) {
        block_current(WAIT_SLEEP);
        if (current->pending_signal) {
            if (urem) {
                u64 now = rdtsc(), left = current->wake_tsc > now ? current->wake_tsc - now : 0;
                u64 lns = left * 1000000UL / tsc_khz;
                struct timespec64 r = {(s64)(lns / 1000000000UL), (s64)(lns % 1000000000UL)};
                copy_to_user((void *)urem, &r, sizeof(r));
            }
            return -EINTR;
        }
    }
    return 0;
}

static long sys_getpid(void)
{
    return current->pid;
}

static long sys_getppid(void)
{
    return current->parent;
}

static long sys_exit(u64 code)
{
    do_exit((int)code);
}

static long sys_clock_gettime(u64 clk, u64 uts)
{
    (void)clk;   /* every clock is the monotonic virtual TSC */
    u64 ns = ktime_get_ns();
    struct timespec64 ts = {(s64)(ns / 1000000000UL), (s64)(ns % 1000000000UL)};
    return copy_to_user((void *)uts, &ts, sizeof(ts));
}

struct new_utsname {
    char sysname[65], nodename[65], release[65], version[65], machine[65], domainname[65];
};

static long sys_uname(u64 ubuf)
{
    static const struct new_utsname u = {
        "Linux", "hyperenclave", UTS_RELEASE, "#1 SMP", "x86_64", "(none)",
    };
    return copy_to_user((void *)ubuf, &u, sizeof(u));
}

static syscall_fn_t sys_call_table[NR_SYSCALLS] = {
    [__NR_read] = SYSCALL(sys_read),
    [__NR_write] = SYSCALL(sys_write),
    [__NR_open] = SYSCALL(sys_open),
    [__NR_close] = SYSCALL(sys_close),
    [__NR_lseek] = SYSCALL(sys_lseek),
    [__NR_mmap] = SYSCALL(sys_mmap),
    [__NR_munmap] = SYSCALL(sys_munmap),
    [__NR_ioctl] = SYSCALL(sys_ioctl),
    [__NR_sched_yield] = SYSCALL(sys_sched_yield),
    [__NR_nanosleep] = SYSCALL(sys_nanosleep),
    [__NR_getpid] = SYSCALL(sys_getpid),
    [__NR_exit] = SYSCALL(sys_exit),
    [__NR_uname] = SYSCALL(sys_uname),
    [__NR_getppid] = SYSCALL(sys_getppid),
    [__NR_clock_gettime] = SYSCALL(sys_clock_gettime),
    [__NR_exit_group] = SYSCALL(sys_exit),
};

int register_syscall(unsigned int nr, syscall_fn_t fn)
{
    if (nr >= NR_SYSCALLS)
        return -EINVAL;
    if (sys_call_table[nr])
        return -EBUSY;
    sys_call_table[nr] = fn;
    return 0;
}

void do_syscall(struct pt_regs *regs)
{
    u64 nr = regs->vector;
    long ret = -ENOSYS;
    if (nr < NR_SYSCALLS && sys_call_table[nr])
        ret = sys_call_table[nr](regs->rdi, regs->rsi, regs->rdx, regs->r10, regs->r8, regs->r9);
    regs->rax = (u64)ret;
    check_pending_signal(regs);
}

void syscall_init(void)
{
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
    wrmsr(MSR_STAR, ((u64)__USER32_CS << 48) | ((u64)__KERNEL_CS << 32));
    wrmsr(MSR_LSTAR, (u64)syscall_entry);
    wrmsr(MSR_CSTAR, 0);
    wrmsr(MSR_SYSCALL_MASK, 0x47700);   /* TF DF IF IOPL NT AC */
}
