/*
 * enclave_threads BUNDLE: two TCSs of one enclave, each with its own SSA frames and CSSA,
 * driven from one process (the mock kernel has no threads): TCS0 runs a long loop; at its
 * first AEX (a timer interrupt) the AEP, instead of ERESUMEing it at once, EENTERs TCS1 for a
 * loop of its own (whose AEXs ERESUME TCS1), then EENTERs TCS0 again (SGX allows it: a
 * suspended TCS is not busy; the entry gets CSSA 1, the next SSA frame), and only then
 * ERESUMEs TCS0, which must finish with its own registers. BUNDLE: an enclave with two TCSs
 * (NSSA 2) whose entry returns RDX = RDI + RSI after RSI loop iterations and R9 = the CSSA
 * EENTER gave it in RAX.
 *
 * A busy TCS (EENTER while another logical processor is inside on it) cannot arise here: the
 * machine has one vCPU, and the host only runs when no thread is inside.
 */
#include "he_steps.h"

#define LOOPS 30000000UL

struct entry {
    unsigned long rdx, r9;
};

static uint64_t tcs0, tcs1;
static volatile unsigned long aex0, aex1, tcs1_done;
static struct entry first, second, nested;

/* EENTER `tcs` with RDI = arg, RSI = loops; AEXs go to `aep`. */
__asm__(".text\n"
        "eenter:\n\t"                 /* (tcs, arg, loops, aep, struct entry *out) */
        "push %rbx\n\tpush %rbp\n\tpush %r12\n\tpush %r13\n\tpush %r14\n\tpush %r15\n\t"
        "push %r8\n\t"
        "mov %rdi, %rbx\n\t"
        "mov %rsi, %rdi\n\t"
        "mov %rdx, %rsi\n\t"
        "mov $2, %eax\n\t"
        "enclu\n\t"                   /* EEXIT comes back here */
        "pop %r8\n\t"
        "mov %rdx, (%r8)\n\t"
        "mov %r9, 8(%r8)\n\t"
        "pop %r15\n\tpop %r14\n\tpop %r13\n\tpop %r12\n\tpop %rbp\n\tpop %rbx\n\t"
        "ret\n"
        "aep_tcs1:\n\t"               /* AEX of TCS1: ERESUME it (RAX = 3, RBX, RCX set) */
        "lock incq aex1(%rip)\n\t"
        "enclu\n"
        "aep_tcs0:\n\t"               /* AEX of TCS0: the first time, run the others first */
        "lock incq aex0(%rip)\n\t"
        "cmpq $0, tcs1_done(%rip)\n\t"
        "jne 1f\n\t"
        "movq $1, tcs1_done(%rip)\n\t"
        "and $-16, %rsp\n\t"
        "call while_tcs0_is_suspended\n"
        "1:\n\t"
        "mov tcs0(%rip), %rbx\n\t"
        "lea aep_tcs0(%rip), %rcx\n\t"
        "mov $3, %eax\n\t"
        "enclu\n");
void eenter(uint64_t tcs, unsigned long arg, unsigned long loops, void (*aep)(void),
            struct entry *out);
void aep_tcs0(void);
void aep_tcs1(void);

void while_tcs0_is_suspended(void);
void while_tcs0_is_suspended(void)
{
    eenter(tcs1, 2000, LOOPS, aep_tcs1, &second);
    eenter(tcs0, 3000, 0, aep_tcs1, &nested);
}

int main(int argc, char **argv)
{
    struct he_bundle b;
    struct he_encl e;
    if (argc != 2) {
        printf("usage: enclave_threads BUNDLE\n");
        return 2;
    }
    if (he_read_bundle(argv[1], &b))
        return 1;
    long ret = he_build(&e, &b);
    if (ret || e.nr_tcs < 2) {
        printf("enclave_threads: building the enclave: %s, %d TCS\n", he_result(ret), e.nr_tcs);
        return 1;
    }
    tcs0 = e.tcs[0];
    tcs1 = e.tcs[1];
    printf("enclave_threads: TCS0 %#lx, TCS1 %#lx\n", (unsigned long)tcs0, (unsigned long)tcs1);
    eenter(tcs0, 1000, LOOPS, aep_tcs0, &first);
    if (!tcs1_done)
        printf("enclave_threads: TCS0 finished without an AEX; nothing else ran\n");
    printf("enclave_threads: TCS1 EENTER(2000, %lu) while TCS0 was suspended: RDX %lu, entered "
           "with CSSA %lu, %lu AEX\n", LOOPS, second.rdx, second.r9, aex1);
    printf("enclave_threads: TCS0 EENTER(3000, 0) while suspended: RDX %lu, entered with CSSA "
           "%lu\n", nested.rdx, nested.r9);
    printf("enclave_threads: TCS0 EENTER(1000, %lu): RDX %lu, entered with CSSA %lu, %lu AEX\n",
           LOOPS, first.rdx, first.r9, aex0);
    close(e.dev);
    return 0;
}
