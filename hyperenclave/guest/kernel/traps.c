/*
 * IDT, exceptions and IRQ dispatch. A fault in user mode kills the process with a Linux-style
 * message; a fault in kernel mode is an oops: registers, then, like Linux's make_task_dead(),
 * the process it ran for is killed and the system goes on; with no process (or a double
 * fault) it panics (power off).
 */
#include "kernel.h"
#include "sched.h"
#include "mm.h"
#include "hyper_enclave.h"

struct idt_entry {
    u16 off_lo;
    u16 sel;
    u8 ist;
    u8 type_attr;
    u16 off_mid;
    u32 off_hi;
    u32 zero;
} __attribute__((packed));

static struct idt_entry idt[256] __aligned(16);
static irq_handler_t irq_handlers[256];

static const char *const exception_names[32] = {
    "divide error", "debug", "nmi", "int3", "overflow", "bounds", "invalid opcode",
    "device not available", "double fault", "coprocessor segment overrun", "invalid TSS",
    "segment not present", "stack segment", "general protection fault", "page fault",
    "reserved", "coprocessor error", "alignment check", "machine check", "SIMD exception",
    "virtualization exception", "control protection", "reserved", "reserved", "reserved",
    "reserved", "reserved", "reserved", "hypervisor injection", "VMM communication",
    "security exception", "reserved",
};

static void set_gate(int vec, u64 handler, int ist, int dpl)
{
    struct idt_entry *e = &idt[vec];
    e->off_lo = handler & 0xffff;
    e->sel = __KERNEL_CS;
    e->ist = ist;
    e->type_attr = 0x8e | (dpl << 5);    /* present, 64-bit interrupt gate */
    e->off_mid = (handler >> 16) & 0xffff;
    e->off_hi = handler >> 32;
    e->zero = 0;
}

void request_irq(int vector, irq_handler_t fn)
{
    irq_handlers[vector] = fn;
}

void idt_init(void)
{
    for (int v = 0; v < 256; v++)
        set_gate(v, (u64)isr_stubs + 16 * v, v == 8 ? 1 : (v == 2 ? 2 : 0), 0);
    struct {
        u16 limit;
        u64 base;
    } __attribute__((packed)) idtr = {sizeof(idt) - 1, (u64)idt};
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

static void show_regs(const struct pt_regs *r)
{
    printk("RIP: %04lx:%016lx\n", (unsigned long)r->cs, (unsigned long)r->rip);
    printk("RSP: %04lx:%016lx EFLAGS: %08lx\n", (unsigned long)r->ss, (unsigned long)r->rsp,
           (unsigned long)r->rflags);
    printk("RAX: %016lx RBX: %016lx RCX: %016lx\n", (unsigned long)r->rax, (unsigned long)r->rbx,
           (unsigned long)r->rcx);
    printk("RDX: %016lx RSI: %016lx RDI: %016lx\n", (unsigned long)r->rdx, (unsigned long)r->rsi,
           (unsigned long)r->rdi);
    printk("RBP: %016lx R08: %016lx R09: %016lx\n", (unsigned long)r->rbp, (unsigned long)r->r8,
           (unsigned long)r->r9);
    printk("R10: %016lx R11: %016lx R12: %016lx\n", (unsigned long)r->r10, (unsigned long)r->r11,
           (unsigned long)r->r12);
    printk("R13: %016lx R14: %016lx R15: %016lx\n", (unsigned long)r->r13, (unsigned long)r->r14,
           (unsigned long)r->r15);
    printk("CR2: %016lx CR3: %016lx CR4: %016lx\n", (unsigned long)read_cr2(),
           (unsigned long)read_cr3(), (unsigned long)read_cr4());
}

static void show_stack(const struct pt_regs *r)
{
    printk("Call Trace (raw stack):\n");
    const u64 *sp = (const u64 *)r->rsp;
    for (int i = 0; i < 8; i++) {
        u64 a = (u64)&sp[i];
        if ((a >> 47) != 0x1ffff)          /* only dump kernel-half stacks */
            break;
        printk(" %016lx\n", (unsigned long)sp[i]);
    }
}

static void __noreturn kernel_oops(struct pt_regs *r, const char *what)
{
    static int oops_count;
    if (r->vector == 14) {
        u64 cr2 = read_cr2();
        printk("BUG: unable to handle page fault for address: %016lx\n", (unsigned long)cr2);
        printk("#PF: %s %s access in %s mode\n", (r->error_code & 4) ? "user" : "supervisor",
               (r->error_code & 16) ? "instruction fetch" : (r->error_code & 2) ? "write" : "read",
               (r->error_code & 4) ? "user" : "kernel");
        printk("#PF: error_code(0x%04lx) - %s\n", (unsigned long)r->error_code,
               (r->error_code & 1) ? "permissions violation" : "not-present page");
    }
    printk("%s: %04lx [#%d] NOPTI\n", what, (unsigned long)r->error_code, ++oops_count);
    printk("CPU: 0 PID: %d Comm: %s Not tainted " UTS_RELEASE " #1\n", current ? current->pid : 0,
           current ? current->comm : "swapper");
    show_regs(r);
    show_stack(r);
    if (r->vector == 8 || !current || current->pid <= 0)
        panic("Fatal exception");
    printk("---[ end trace 0000000000000000 ]---\n");
    force_sig(SIGSEGV);
}

static const char *user_comm(void) { return current ? current->comm : "?"; }
static int user_pid(void) { return current ? current->pid : 0; }

/* " in hello[401000+1000]" like print_vma_addr() */
static void print_vma_addr(u64 ip)
{
    struct vma *v = current ? find_vma(current, ip) : NULL;
    if (v)
        printk(" in %s[%lx+%lx]", current->comm, (unsigned long)v->start,
               (unsigned long)(v->end - v->start));
}

static void user_fault(struct pt_regs *r)
{
    int sig;
    if (r->vector != 14 && he_enclave_fixup_exception(r))
        return;
    switch (r->vector) {
    case 14: {
        u64 cr2 = read_cr2();
        /* not-present, yet the page is there with the rights asked for: the fault was for
         * another view of it (an enclave's shared memory after an AEX); retry, like Linux */
        if (!(r->error_code & PTE_P) &&
            user_virt_to_phys(current->pml4, cr2, r->error_code & PTE_W) != ~0UL)
            return;
        if (he_enclave_fixup_exception(r))
            return;
        printk("%s[%d]: segfault at %lx ip %016lx sp %016lx error %lx", user_comm(), user_pid(),
               (unsigned long)cr2, (unsigned long)r->rip, (unsigned long)r->rsp,
               (unsigned long)r->error_code);
        print_vma_addr(r->rip);
        printk("\n");
        sig = SIGSEGV;
        break;
    }
    case 13:
        printk("traps: %s[%d] general protection fault ip:%lx sp:%lx error:%lx", user_comm(),
               user_pid(), (unsigned long)r->rip, (unsigned long)r->rsp,
               (unsigned long)r->error_code);
        print_vma_addr(r->rip);
        printk("\n");
        sig = SIGSEGV;
        break;
    case 0:
        printk("traps: %s[%d] trap divide error ip:%lx sp:%lx error:%lx", user_comm(), user_pid(),
               (unsigned long)r->rip, (unsigned long)r->rsp, (unsigned long)r->error_code);
        print_vma_addr(r->rip);
        printk("\n");
        sig = SIGFPE;
        break;
    case 6:
        printk("traps: %s[%d] trap invalid opcode ip:%lx sp:%lx error:%lx", user_comm(),
               user_pid(), (unsigned long)r->rip, (unsigned long)r->rsp,
               (unsigned long)r->error_code);
        print_vma_addr(r->rip);
        printk("\n");
        sig = SIGILL;
        break;
    case 3:
    case 1:
        sig = SIGTRAP;
        printk("traps: %s[%d] trap %s ip:%lx sp:%lx\n", user_comm(), user_pid(),
               exception_names[r->vector], (unsigned long)r->rip, (unsigned long)r->rsp);
        break;
    case 17:
        sig = SIGBUS;
        printk("traps: %s[%d] trap alignment check ip:%lx sp:%lx\n", user_comm(), user_pid(),
               (unsigned long)r->rip, (unsigned long)r->rsp);
        break;
    default:
        sig = SIGSEGV;
        printk("traps: %s[%d] trap %s ip:%lx sp:%lx error:%lx\n", user_comm(), user_pid(),
               exception_names[r->vector], (unsigned long)r->rip, (unsigned long)r->rsp,
               (unsigned long)r->error_code);
        break;
    }
    force_sig(sig);
}

void do_interrupt(struct pt_regs *r)
{
    u64 vec = r->vector;
    if (vec < 32) {
        if (vec == 8) {
            printk("double fault (error %lx)\n", (unsigned long)r->error_code);
            kernel_oops(r, "double fault");
        }
        if (vec == 2) {
            printk("Uhhuh. NMI received. Dazed and confused, but trying to continue\n");
            return;
        }
        if (user_mode(r)) {
            user_fault(r);          /* returns only for a spurious #PF: the access is retried */
            return;
        }
        kernel_oops(r, vec == 14 ? "Oops" : exception_names[vec]);
    }
    irq_handler_t h = irq_handlers[vec];
    if (h) {
        h(r);
    } else {
        if (vec >= 0x20 && vec < 0x30) {
            if (vec >= 0x28)
                outb(0xa0, 0x20);
            outb(0x20, 0x20);
        }
        printk("spurious interrupt: vector %#lx\n", (unsigned long)vec);
    }
    if (user_mode(r))
        check_pending_signal(r);
}
