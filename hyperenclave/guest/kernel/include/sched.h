/* Tasks, the scheduler and the register frame shared by interrupts and SYSCALL. */
#ifndef KERNEL_SCHED_H
#define KERNEL_SCHED_H

#include "kernel.h"

/* Layout must match kernel/entry.S (lowest address first). */
struct pt_regs {
    u64 r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
    u64 rax, rcx, rdx, rsi, rdi;
    u64 vector;       /* interrupt vector, or the syscall number (orig_rax) */
    u64 error_code;
    u64 rip, cs, rflags, rsp, ss;   /* hardware frame */
};
_Static_assert(sizeof(struct pt_regs) == 22 * 8, "pt_regs");

static inline bool user_mode(const struct pt_regs *r) { return (r->cs & 3) == 3; }

#define TASK_COMM_LEN  16
#define NR_TASKS       32
#define NR_OPEN        128     /* e.g. 64 enclaves, one file each, in one process */
#define MAX_VMAS       16
#define KSTACK_PAGES   4
#define TIMESLICE_TICKS 5

enum task_state { TASK_UNUSED = 0, TASK_RUNNABLE, TASK_BLOCKED, TASK_ZOMBIE };
enum wait_reason { WAIT_NONE = 0, WAIT_CHILD, WAIT_SLEEP, WAIT_TTY, WAIT_DEVICE };

struct vma {
    u64 start, end;
    u32 flags;       /* VMA_* */
};
#define VMA_READ   1
#define VMA_WRITE  2
#define VMA_EXEC   4
#define VMA_STACK  8
#define VMA_ANON   16

struct file;

struct task {
    int pid;
    enum task_state state;
    enum wait_reason wait;
    char comm[TASK_COMM_LEN];
    char path[64];
    u64 ksp;                 /* saved kernel RSP (switch_to) */
    u64 kstack_pa;           /* KSTACK_PAGES pages */
    u64 kstack_top;          /* virtual (direct map) */
    u64 *pml4;               /* virtual; NULL for kernel tasks (use the kernel's) */
    u64 cr3;
    int exit_code;           /* exit status, when exited normally */
    int exit_signal;         /* signal that killed it, or 0 */
    int pending_signal;      /* set asynchronously (Ctrl-C); acted on at return to user */
    int parent;              /* pid of the waiter */
    int ticks_left;
    u64 wake_tsc;            /* WAIT_SLEEP deadline */
    u64 mmap_next;
    struct vma vmas[MAX_VMAS];
    int nr_vmas;
    struct file *files[NR_OPEN];
    void *priv;              /* for drivers (e.g. per-process enclave state) */
    u64 sgx_aep, sgx_fixup;  /* exceptions at this AEP go to the enclave runtime's fixup */
};

extern struct task *current;
extern u64 cpu_kstack_top;   /* kernel RSP loaded by the SYSCALL entry */

void sched_init(void);
void schedule(void);
void yield(void);
void wake_up(enum wait_reason why);
void block_current(enum wait_reason why);   /* mark blocked then schedule() */
struct task *find_task(int pid);
int task_spawn(const char *path, int argc, const char *const argv[]);   /* pid or -errno */
int task_wait(int pid, int *status, int *signal);   /* blocks; reaps */
void __noreturn do_exit(int code);
void __noreturn force_sig(int sig);          /* kill current with a signal */
void check_pending_signal(struct pt_regs *regs);
struct vma *find_vma(struct task *t, u64 addr);
int add_vma(struct task *t, u64 start, u64 end, u32 flags);
const char *signal_name(int sig);
extern int fg_pid;           /* foreground process for Ctrl-C */

/* user memory access: -EFAULT when the range is not mapped for user access */
int copy_from_user(void *dst, const void *usrc, u64 n);
int copy_to_user(void *udst, const void *src, u64 n);
long strncpy_from_user(char *dst, const char *usrc, u64 max);

/* entry.S */
void switch_to(u64 *prev_ksp, u64 next_ksp);
void ret_to_user(void);
void syscall_entry(void);
extern char isr_stubs[];

/* traps.c / gdt.c */
void gdt_init(void);
void idt_init(void);
void tss_set_rsp0(u64 rsp0);
typedef void (*irq_handler_t)(struct pt_regs *regs);
void request_irq(int vector, irq_handler_t fn);

#define SIGINT  2
#define SIGILL  4
#define SIGTRAP 5
#define SIGBUS  7
#define SIGFPE  8
#define SIGKILL 9
#define SIGSEGV 11

#endif
