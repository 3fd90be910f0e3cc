/*
 * Tasks and a round-robin scheduler. Task 0 is the kernel's own context (start_kernel, then
 * init/shell); user processes are pids 1, 2, ... The kernel runs with IF=0 except while idle
 * (safe_halt) and in user mode; the timer preempts user processes every TIMESLICE_TICKS.
 */
#include "kernel.h"
#include "sched.h"
#include "mm.h"
#include "fs.h"
#include "tpm.h"

static struct task tasks[NR_TASKS];
struct task *current;
u64 cpu_kstack_top;
int fg_pid;
static int next_pid = 1;
static int last_slot;

extern char boot_stack_top[];

void sched_init(void)
{
    struct task *t = &tasks[0];
    t->pid = 0;
    t->state = TASK_RUNNABLE;
    strlcpy(t->comm, "swapper/0", sizeof(t->comm));
    t->kstack_top = (u64)boot_stack_top;
    t->cr3 = kernel_pml4_pa;
    t->ticks_left = TIMESLICE_TICKS;
    current = t;
    cpu_kstack_top = t->kstack_top;
    tss_set_rsp0(t->kstack_top);
}

struct task *find_task(int pid)
{
    for (int i = 0; i < NR_TASKS; i++)
        if (tasks[i].state != TASK_UNUSED && tasks[i].pid == pid)
            return &tasks[i];
    return NULL;
}

static struct task *pick_next(void)
{
    int cur = (int)(current - tasks);
    for (int k = 1; k <= NR_TASKS; k++) {
        int i = (cur + k) % NR_TASKS;
        if (tasks[i].state == TASK_RUNNABLE)
            return &tasks[i];
    }
    return NULL;
}

static void context_switch(struct task *prev, struct task *next)
{
    current = next;
    cpu_kstack_top = next->kstack_top;
    tss_set_rsp0(next->kstack_top);
    if (read_cr3() != next->cr3)
        write_cr3(next->cr3);
    switch_to(&prev->ksp, next->ksp);
}

/* Run something else. Returns when `current` is chosen again. Idles with hlt when nothing
 * is runnable (the interrupt that wakes a task runs on the current kernel stack). */
void schedule(void)
{
    struct task *next;
    for (;;) {
        next = pick_next();
        if (next)
            break;
        safe_halt();
    }
    next->ticks_left = next->ticks_left > 0 ? next->ticks_left : TIMESLICE_TICKS;
    if (next != current)
        context_switch(current, next);
}

void yield(void)
{
    current->ticks_left = TIMESLICE_TICKS;
    schedule();
}

void block_current(enum wait_reason why)
{
    current->state = TASK_BLOCKED;
    current->wait = why;
    schedule();
}

void wake_up(enum wait_reason why)
{
    for (int i = 0; i < NR_TASKS; i++) {
        if (tasks[i].state == TASK_BLOCKED && tasks[i].wait == why) {
            tasks[i].state = TASK_RUNNABLE;
            tasks[i].wait = WAIT_NONE;
        }
    }
}

/* every timer tick: wake sleepers whose deadline passed */
void timer_tick(void)
{
    u64 now = rdtsc();
    for (int i = 0; i < NR_TASKS; i++) {
        struct task *t = &tasks[i];
        if (t->state == TASK_BLOCKED && t->wait == WAIT_SLEEP && now >= t->wake_tsc) {
            t->state = TASK_RUNNABLE;
            t->wait = WAIT_NONE;
        }
    }
}

struct vma *find_vma(struct task *t, u64 addr)
{
    for (int i = 0; i < t->nr_vmas; i++)
        if (addr >= t->vmas[i].start && addr < t->vmas[i].end)
            return &t->vmas[i];
    return NULL;
}

int add_vma(struct task *t, u64 start, u64 end, u32 flags)
{
    if (t->nr_vmas >= MAX_VMAS)
        return -ENOMEM;
    t->vmas[t->nr_vmas].start = start;
    t->vmas[t->nr_vmas].end = end;
    t->vmas[t->nr_vmas].flags = flags;
    t->nr_vmas++;
    return 0;
}

const char *signal_name(int sig)
{
    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    default: return "signal";
    }
}

/* ---- process creation ---- */
int elf_load(struct task *t, const u8 *image, u64 size, u64 *entry);   /* exec.c */
int setup_user_stack(struct task *t, int argc, const char *const argv[], u64 *sp);

static void free_task_resources(struct task *t)
{
    files_close_all(t);
    if (t->pml4) {
        if (read_cr3() == t->cr3)
            write_cr3(kernel_pml4_pa);
        pgd_free(t->pml4);
        t->pml4 = NULL;
    }
    if (t->kstack_pa) {
        free_pages(t->kstack_pa, KSTACK_PAGES);
        t->kstack_pa = 0;
    }
}

int task_spawn(const char *path, int argc, const char *const argv[])
{
    const u8 *image;
    u64 size;
    int err = initramfs_find(path, &image, &size);
    if (err)
        return err;
    struct task *t = NULL;
    for (int k = 1; k < NR_TASKS; k++) {
        int i = (last_slot + k) % NR_TASKS;
        if (i != 0 && tasks[i].state == TASK_UNUSED) {
            t = &tasks[i];
            last_slot = i;
            break;
        }
    }
    if (!t)
        return -EAGAIN;
    memset(t, 0, sizeof(*t));
    const char *base = strrchr(path, '/');
    strlcpy(t->comm, base ? base + 1 : path, sizeof(t->comm));
    strlcpy(t->path, path, sizeof(t->path));
    t->kstack_pa = alloc_pages(KSTACK_PAGES);
    t->pml4 = pgd_alloc();
    if (!t->kstack_pa || !t->pml4) {
        free_task_resources(t);
        return -ENOMEM;
    }
    t->cr3 = __pa(t->pml4);
    t->kstack_top = (u64)__va(t->kstack_pa) + KSTACK_PAGES * PAGE_SIZE;
    t->mmap_next = USER_MMAP_BASE;

    /* IMA-style: every program image is measured into PCR 10 before it runs. */
    u8 digest[SHA256_DIGEST_SIZE];
    sha256(image, size, digest);
    tpm_measure(IMA_PCR, EV_COMPACT_HASH, digest, path, strlen(path) + 1);

    u64 entry, sp;
    err = elf_load(t, image, size, &entry);
    if (!err)
        err = setup_user_stack(t, argc, argv, &sp);
    if (err) {
        free_task_resources(t);
        return err;
    }
    console_files_init(t);

    /* initial kernel stack: user frame at the top, a switch_to frame returning to ret_to_user */
    struct pt_regs *regs = (struct pt_regs *)(t->kstack_top - sizeof(struct pt_regs));
    memset(regs, 0, sizeof(*regs));
    regs->rip = entry;
    regs->cs = __USER_CS;
    regs->rflags = X86_EFLAGS_IF | 0x2;
    regs->rsp = sp;
    regs->ss = __USER_DS;
    u64 *ksp = (u64 *)regs;
    *--ksp = (u64)ret_to_user;
    for (int i = 0; i < 6; i++)
        *--ksp = 0;          /* rbp rbx r12-r15 */
    t->ksp = (u64)ksp;
    t->pid = next_pid++;
    t->parent = current->pid;
    t->ticks_left = TIMESLICE_TICKS;
    t->state = TASK_RUNNABLE;
    return t->pid;
}

/* Wait for `pid` to exit; reap it. Returns 0 or -ECHILD. */
int task_wait(int pid, int *status, int *signal)
{
    struct task *t = find_task(pid);
    if (!t || t == current)
        return -ECHILD;
    while (t->state != TASK_ZOMBIE)
        block_current(WAIT_CHILD);
    if (status)
        *status = t->exit_code;
    if (signal)
        *signal = t->exit_signal;
    free_task_resources(t);
    t->state = TASK_UNUSED;
    return 0;
}

static void __noreturn exit_current(int code, int sig)
{
    struct task *t = current;
    if (t->pid == 0)
        panic("Attempted to kill the idle task!");
    t->exit_code = code;
    t->exit_signal = sig;
    files_close_all(t);
    t->state = TASK_ZOMBIE;
    if (fg_pid == t->pid)
        fg_pid = 0;
    wake_up(WAIT_CHILD);
    schedule();
    panic("zombie %d scheduled", t->pid);
}

void do_exit(int code)
{
    exit_current(code & 0xff, 0);
}

void force_sig(int sig)
{
    exit_current(0, sig);
}

void check_pending_signal(struct pt_regs *regs)
{
    (void)regs;
    if (current && current->pending_signal)
        force_sig(current->pending_signal);
}

/* ---- user memory access (walks the current page table, so a bad pointer is -EFAULT) ---- */
int copy_from_user(void *dst, const void *usrc, u64 n)
{
    u64 src = (u64)usrc;
    u8 *d = dst;
    while (n) {
        u64 pa = user_virt_to_phys(current->pml4, src, false);
        if (pa == ~0UL)
            return -EFAULT;
        u64 chunk = MIN(n, PAGE_SIZE - (src & (PAGE_SIZE - 1)));
        memcpy(d, __va(pa), chunk);
        d += chunk;
        src += chunk;
        n -= chunk;
    }
    return 0;
}

int copy_to_user(void *udst, const void *src, u64 n)
{
    u64 dst = (u64)udst;
    const u8 *s = src;
    while (n) {
        u64 pa = user_virt_to_phys(current->pml4, dst, true);
        if (pa == ~0UL)
            return -EFAULT;
        u64 chunk = MIN(n, PAGE_SIZE - (dst & (PAGE_SIZE - 1)));
        memcpy(__va(pa), s, chunk);
        s += chunk;
        dst += chunk;
        n -= chunk;
    }
    return 0;
}

/* copies a NUL-terminated string; returns its length, -EFAULT or -ENAMETOOLONG */
long strncpy_from_user(char *dst, const char *usrc, u64 max)
{
    u64 src = (u64)usrc;
    for (u64 i = 0; i < max; i++) {
        u64 pa = user_virt_to_phys(current->pml4, src + i, false);
        if (pa == ~0UL)
            return -EFAULT;
        char c = *(const char *)__va(pa);
        dst[i] = c;
        if (!c)
            return (long)i;
    }
    return -ENAMETOOLONG;
}
