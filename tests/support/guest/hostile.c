/*
 * hostile COMMAND BUNDLE [ARGS]: a malicious host application against an enclave built from
 * BUNDLE (tests/integration/test_hostile_host.py: AEX_ENCLAVE, whose entry keeps its secret in
 * every general-purpose register for RDI iterations, then scrubs them and EEXITs).
 *
 *   aex BUNDLE LOOPS EPC_PA PAGES  enter; at the first AEX print every register the AEP sees;
 *                                  ERESUME until done; then, the enclave still alive, read
 *                                  PAGES pages of EPC from EPC_PA through /dev/mem
 *   tcs-alias BUNDLE               map the TCS's page a second time (/dev/he_attack alias) and
 *                                  EENTER through that second mapping
 *   eadd-modify BUNDLE EPC_PA      between EADD and EINIT: overwrite every source page and DMA
 *                                  into EPC; then EINIT and enter
 *   share PA BUNDLE                ADD_SHARED_MEMORY of a buffer whose page the host kernel
 *                                  pointed at PA (EPC or monitor memory): a confused deputy
 *   abandon BUNDLE LOOPS N         an enclave that does not return in time: after N AEXs the
 *                                  AEP exits the process instead of ERESUMEing (the enclave's
 *                                  thread stays suspended in its SSA until close destroys it)
 *   no-callback BUNDLE             the enclave EEXITs with an OCALL request (RDX = 1) and the
 *                                  host never calls back; then destroys it
 */
#include "../../../hyperenclave/guest/user/he_steps.h"   /* the step-by-step ioctls */

struct regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15;
};
struct regs at_aep;
volatile uint64_t aex_count;

__asm__(".text\n"
        "eenter:\n\t"                 /* (tcs, loops, aep) */
        "push %rbx\n\tpush %rbp\n\tpush %r12\n\tpush %r13\n\tpush %r14\n\tpush %r15\n\t"
        "mov %rdi, %rbx\n\t"
        "mov %rsi, %rdi\n\t"
        "mov %rdx, %rcx\n\t"
        "mov $2, %eax\n\t"
        "enclu\n\t"                   /* EEXIT comes back here */
        "pop %r15\n\tpop %r14\n\tpop %r13\n\tpop %r12\n\tpop %rbp\n\tpop %rbx\n\t"
        "ret\n"
        "aep:\n\t"                    /* what the host sees after an AEX; then ERESUME */
        "cmpq $0, aex_count(%rip)\n\t"
        "jne 1f\n\t"
        "mov %rax, at_aep+0(%rip)\n\tmov %rbx, at_aep+8(%rip)\n\t"
        "mov %rcx, at_aep+16(%rip)\n\tmov %rdx, at_aep+24(%rip)\n\t"
        "mov %rsi, at_aep+32(%rip)\n\tmov %rdi, at_aep+40(%rip)\n\t"
        "mov %rbp, at_aep+48(%rip)\n\tmov %rsp, at_aep+56(%rip)\n\t"
        "mov %r8, at_aep+64(%rip)\n\tmov %r9, at_aep+72(%rip)\n\t"
        "mov %r10, at_aep+80(%rip)\n\tmov %r11, at_aep+88(%rip)\n\t"
        "mov %r12, at_aep+96(%rip)\n\tmov %r13, at_aep+104(%rip)\n\t"
        "mov %r14, at_aep+112(%rip)\n\tmov %r15, at_aep+120(%rip)\n"
        "1:\n\t"
        "lock incq aex_count(%rip)\n\t"
        "enclu\n");
void eenter(uint64_t tcs, uint64_t loops, void (*aep)(void));
void aep(void);
unsigned long abandon_after;

/* The AEP of `abandon`: ERESUME until the AEX count reaches abandon_after, then give up. */
__asm__(".text\n"
        "aep_abandon:\n\t"
        "lock incq aex_count(%rip)\n\t"
        "mov aex_count(%rip), %rdx\n\t"
        "cmp abandon_after(%rip), %rdx\n\t"
        "jae 1f\n\t"
        "enclu\n"
        "1:\n\t"
        "and $-16, %rsp\n\t"
        "call give_up\n");
void aep_abandon(void);
void give_up(void) __attribute__((noreturn));
void give_up(void)
{
    printf("hostile: abandon: still inside after %lu AEX; exiting without ERESUME\n",
           (unsigned long)aex_count);
    exit(0);
}

/* One command line to /dev/he_attack; its result line into out. 0 or -errno. */
static long he_attack(char *out, size_t size, const char *cmd)
{
    size_t len = strlen(cmd);
    int fd = open("/dev/he_attack", O_RDWR);
    if (fd < 0)
        return -errno;
    long ret = write(fd, cmd, len) < 0 ? -errno : 0;
    ssize_t n = read(fd, out, size - 1);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    return ret;
}

static int build(const char *path, struct he_bundle *b, struct he_encl *e)
{
    if (he_read_bundle(path, b))
        return 1;
    long ret = he_build(e, b);
    if (ret) {
        printf("hostile: building %s: %s\n", path, he_result(ret));
        return 1;
    }
    return 0;
}

/* Bytes that are not zero in `pages` pages of physical memory from `pa` (user /dev/mem). */
static long nonzero_bytes(uint64_t pa, unsigned long pages)
{
    int fd = open("/dev/mem", O_RDONLY);
    if (fd < 0)
        return -errno;
    long nonzero = 0;
    for (unsigned long i = 0; i < pages; i++) {
        const volatile uint8_t *p = mmap(NULL, HE_PAGE, PROT_READ, MAP_SHARED, fd,
                                         (long)(pa + i * HE_PAGE));
        if (p == MAP_FAILED) {
            close(fd);
            return -errno;
        }
        for (unsigned long j = 0; j < HE_PAGE; j++)
            nonzero += p[j] != 0;
        munmap((void *)p, HE_PAGE);
    }
    close(fd);
    return nonzero;
}

static int aex(int argc, char **argv)
{
    struct he_bundle b;
    struct he_encl e;
    if (argc != 6 || build(argv[2], &b, &e))
        return 2;
    uint64_t loops = strtoul(argv[3], NULL, 0), epc = strtoul(argv[4], NULL, 16);
    unsigned long pages = strtoul(argv[5], NULL, 0);
    eenter(e.tcs[0], loops, aep);
    printf("hostile: aex: returned after %lu AEX; TCS %#lx, AEP %#lx\n",
           (unsigned long)aex_count, (unsigned long)e.tcs[0], (unsigned long)(uintptr_t)aep);
    const char *names[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9",
                           "r10", "r11", "r12", "r13", "r14", "r15"};
    const uint64_t *r = &at_aep.rax;
    for (int i = 0; i < 16; i++)
        printf("hostile: aex: at the AEP %s=%#lx\n", names[i], (unsigned long)r[i]);
    printf("hostile: aex: %lu pages of EPC from %#lx read with the enclave alive: %ld nonzero "
           "bytes\n", pages, (unsigned long)epc, nonzero_bytes(epc, pages));
    close(e.dev);
    return 0;
}

static int tcs_alias(int argc, char **argv)
{
    struct he_bundle b;
    struct he_encl e;
    char result[256];
    if (argc != 3 || build(argv[2], &b, &e))
        return 2;
    uint8_t *alias = mmap(NULL, HE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                          -1, 0);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "alias %lx %lx", (unsigned long)alias, (unsigned long)e.tcs[0]);
    long ret = he_attack(result, sizeof(result), cmd);
    printf("hostile: tcs-alias: %s (%ld)\n", result, ret);
    eenter(e.tcs[0], 1, aep);
    printf("hostile: tcs-alias: EENTER through the TCS's own address returned\n");
    printf("hostile: tcs-alias: EENTER through the second mapping %#lx\n", (unsigned long)alias);
    eenter((uint64_t)alias, 1, aep);
    printf("hostile: tcs-alias: EENTER through the second mapping returned\n");
    return 0;
}

static int eadd_modify(int argc, char **argv)
{
    struct he_bundle b;
    struct he_encl e;
    static struct sgx_secs secs;
    char result[256];
    if (argc != 4 || he_read_bundle(argv[2], &b))
        return 2;
    uint64_t epc = strtoul(argv[3], NULL, 16);
    long ret = he_mmap(&e, b.h->size);
    he_secs(&b, e.base, &secs);
    ret = ret ? ret : he_create(&e, &secs);
    for (uint32_t i = 0; !ret && i < b.h->nr_pages; i++)
        ret = he_add_page(&e, &b, i);
    printf("hostile: eadd-modify: ECREATE and EADD of %u pages: %s\n", b.h->nr_pages,
           he_result(ret));
    memset((void *)b.data, 0xCC, b.h->nr_pages * HE_PAGE);
    for (unsigned long i = 0; i < 8; i++) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "dma_write %lx 0x4141414141414141",
                 (unsigned long)(epc + i * HE_PAGE));
        he_attack(result, sizeof(result), cmd);
        printf("hostile: eadd-modify: %s\n", result);
    }
    ret = he_init(&e, b.sigstruct);
    printf("hostile: eadd-modify: EINIT after the changes: %s\n", he_result(ret));
    if (!ret) {
        eenter(e.tcs[0], 1, aep);
        printf("hostile: eadd-modify: the enclave ran and returned\n");
    }
    close(e.dev);
    return 0;
}

static int share(int argc, char **argv)
{
    struct he_bundle b;
    struct he_encl e;
    char result[256];
    if (argc != 4 || build(argv[3], &b, &e))
        return 2;
    uint64_t pa = strtoul(argv[2], NULL, 16);
    uint8_t *buf = mmap(NULL, HE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    buf[0] = 1;
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "remap %lx %lx", (unsigned long)buf, (unsigned long)pa);
    long ret = he_attack(result, sizeof(result), cmd);
    printf("hostile: share: %s (%ld)\n", result, ret);
    ret = he_share(&e, buf, HE_PAGE, 0);
    printf("hostile: share: ADD_SHARED_MEMORY of a page pointed at %#lx: %s\n",
           (unsigned long)pa, he_result(ret));
    close(e.dev);
    return 0;
}

static int abandon(int argc, char **argv)
{
    struct he_bundle b;
    struct he_encl e;
    if (argc != 5 || build(argv[2], &b, &e))
        return 2;
    abandon_after = strtoul(argv[4], NULL, 0);
    eenter(e.tcs[0], strtoul(argv[3], NULL, 0), aep_abandon);
    printf("hostile: abandon: the enclave returned after %lu AEX\n", (unsigned long)aex_count);
    return 0;
}

/* EENTER and return RDX: the OCALL_ENCLAVE's "I need an OCALL" flag. */
__asm__(".text\n"
        "eenter_rdx:\n\t"           /* (tcs, arg) */
        "push %rbx\n\tpush %rbp\n\tpush %r12\n\tpush %r13\n\tpush %r14\n\tpush %r15\n\t"
        "mov %rdi, %rbx\n\t"
        "mov %rsi, %rdi\n\t"
        "lea aep(%rip), %rcx\n\t"
        "mov $2, %eax\n\t"
        "enclu\n\t"
        "mov %rdx, %rax\n\t"
        "pop %r15\n\tpop %r14\n\tpop %r13\n\tpop %r12\n\tpop %rbp\n\tpop %rbx\n\t"
        "ret\n");
uint64_t eenter_rdx(uint64_t tcs, uint64_t arg);

static int no_callback(int argc, char **argv)
{
    struct he_bundle b;
    struct he_encl e;
    if (argc != 3 || build(argv[2], &b, &e))
        return 2;
    uint64_t rdx = eenter_rdx(e.tcs[0], 0);
    printf("hostile: no-callback: the enclave asked for an OCALL (RDX %lu); not answering\n",
           (unsigned long)rdx);
    printf("hostile: no-callback: destroying it: close %d\n", close(e.dev));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "abandon"))
        return abandon(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "no-callback"))
        return no_callback(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "aex"))
        return aex(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "tcs-alias"))
        return tcs_alias(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "eadd-modify"))
        return eadd_modify(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "share"))
        return share(argc, argv);
    printf("usage: hostile aex|tcs-alias|eadd-modify|share|abandon|no-callback ...\n");
    return 2;
}
