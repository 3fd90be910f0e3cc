/*
 * enclave_errors BUNDLE [CASE]: provoke, through /dev/hyper_enclave and ENCLU, each error an SGX
 * leaf gives for a bad input, and print "enclave_errors: CASE: RESULT" per case (RESULT as
 * he_result() spells it: -EINVAL where the leaf faulted with #GP, -EFAULT for #PF, an SGX code
 * from EINIT, or the driver's own errno). BUNDLE is a valid signed enclave (one TCS, NSSA 2)
 * whose entry returns RDX = RDI + RSI after RSI loop iterations, and with RDI = -1 executes
 * EENTER on its own TCS.
 *
 * Without CASE, every case that ends in an ioctl result runs. With CASE, one of the ENCLU
 * cases runs; SGX makes those fault in the app (#GP/#PF), which the kernel reports and turns
 * into SIGSEGV, so each needs its own process.
 */
#include "he_steps.h"

#define SGX_SIGSTRUCT_SIGNATURE 516
#define TCS_AEP 40
#define ATTR_INIT  0x1UL
#define ATTR_DEBUG 0x2UL
#define ATTR_MODE64BIT 0x4UL
#define ATTR_RESERVED_BIT3 0x8UL
#define SECINFO(type, rwx) ((uint64_t)(type) << SGX_SECINFO_TYPE_SHIFT | (rwx))
#define PT_REG 2
#define PT_VA  3

static struct he_bundle b;
static struct sgx_secs secs;
static uint8_t page[HE_PAGE] __attribute__((aligned(4096)));
static uint8_t sigstruct[SGX_SIGSTRUCT_SIZE];
static volatile unsigned long aex_count;

static void report(const char *name, long ret)
{
    printf("enclave_errors: %s: %s\n", name, he_result(ret));
}

/* A reserved range and the bundle's SECS for it, with `edit` applied; ECREATE's answer. */
static long create(struct he_encl *e, void (*edit)(struct sgx_secs *))
{
    long ret = he_mmap(e, b.h->size);
    if (ret)
        return ret;
    he_secs(&b, e->base, &secs);
    if (edit)
        edit(&secs);
    return he_create(e, &secs);
}

static long ecreate_case(void (*edit)(struct sgx_secs *))
{
    struct he_encl e;
    long ret = create(&e, edit);
    close(e.dev);
    return ret;
}

static void size_not_power_of_two(struct sgx_secs *s) { s->size = 3 * HE_PAGE; }
static void base_not_aligned(struct sgx_secs *s) { s->base += HE_PAGE; }
static void ssa_frame_size_0(struct sgx_secs *s) { s->ssa_frame_size = 0; }
static void reserved_attribute(struct sgx_secs *s) { s->attributes |= ATTR_RESERVED_BIT3; }
static void init_attribute(struct sgx_secs *s) { s->attributes |= ATTR_INIT; }
static void not_64bit(struct sgx_secs *s) { s->attributes &= ~ATTR_MODE64BIT; }
static void xfrm_without_sse(struct sgx_secs *s) { s->xfrm = 1; }
static void ms_buf_size_0(struct sgx_secs *s) { s->ms_buf_size = 0; }
static void debug_attribute(struct sgx_secs *s) { s->attributes |= ATTR_DEBUG; }

/* The bundle's enclave created with `edit` and all its pages added; 0 or the first error. */
static long add_all(struct he_encl *e, void (*edit)(struct sgx_secs *))
{
    long ret = create(e, edit);
    for (uint32_t i = 0; !ret && i < b.h->nr_pages; i++)
        ret = he_add_page(e, &b, i);
    return ret;
}

/* EINIT of the bundle's enclave with its SIGSTRUCT spoilt at `offset` (none when < 0). */
static long einit_case(void (*edit)(struct sgx_secs *), int offset)
{
    struct he_encl e;
    long ret = add_all(&e, edit);
    memcpy(sigstruct, b.sigstruct, sizeof(sigstruct));
    if (offset >= 0)
        sigstruct[offset] ^= 1;
    if (!ret)
        ret = he_init(&e, sigstruct);
    close(e.dev);
    return ret;
}

static void ecreate_cases(void)
{
    report("ecreate_size_not_power_of_two", ecreate_case(size_not_power_of_two));
    report("ecreate_base_not_aligned_to_size", ecreate_case(base_not_aligned));
    report("ecreate_ssaframesize_too_small", ecreate_case(ssa_frame_size_0));
    report("ecreate_reserved_attribute", ecreate_case(reserved_attribute));
    report("ecreate_init_attribute_set", ecreate_case(init_attribute));
    report("ecreate_not_64bit", ecreate_case(not_64bit));
    report("ecreate_xfrm_without_sse", ecreate_case(xfrm_without_sse));
    report("ecreate_ms_buf_size_0", ecreate_case(ms_buf_size_0));

    /* a second enclave whose ELRANGE is the first one's (MAP_FIXED over it) */
    struct he_encl first, second;
    long ret = he_build(&first, &b);
    int dev = open("/dev/hyper_enclave", O_RDWR);
    if (!ret && dev >= 0 &&
        mmap((void *)first.base, first.size, PROT_READ | PROT_WRITE | PROT_EXEC,
             MAP_SHARED | MAP_FIXED, dev, 0) != MAP_FAILED) {
        second = (struct he_encl){.dev = dev, .base = first.base, .size = first.size};
        he_secs(&b, second.base, &secs);
        ret = he_create(&second, &secs);
    }
    report("ecreate_elrange_overlaps_another_enclave", ret);
    close(dev);
    close(first.dev);
}

static void eadd_cases(void)
{
    struct he_encl e;
    long ret = create(&e, NULL);
    const uint8_t *code = b.data;
    uint64_t rx = SECINFO(PT_REG, SGX_SECINFO_R | SGX_SECINFO_X);
    report("eadd_not_page_aligned", ret ? ret : he_add(&e, e.base + 0x800, code, rx, 1));
    report("eadd_outside_elrange", ret ? ret : he_add(&e, e.base + e.size, code, rx, 1));
    report("eadd_page_already_added", ret ? ret : (he_add(&e, e.base, code, rx, 1),
                                                   he_add(&e, e.base, code, rx, 1)));
    memset(page, 0, sizeof(page));
    report("eadd_tcs_with_rwx", he_add(&e, e.base + HE_PAGE, page,
                                       SECINFO(SGX_PAGE_TYPE_TCS, SGX_SECINFO_R), 1));
    report("eadd_secs_page_type", he_add(&e, e.base + HE_PAGE, page,
                                         SECINFO(SGX_PAGE_TYPE_SECS, 0), 1));
    report("eadd_va_page_type", he_add(&e, e.base + HE_PAGE, page, SECINFO(PT_VA, 0), 1));
    report("eadd_write_without_read", he_add(&e, e.base + HE_PAGE, page,
                                             SECINFO(PT_REG, SGX_SECINFO_W), 1));
    page[TCS_AEP] = 1;
    report("eadd_tcs_with_aep_set", he_add(&e, e.base + HE_PAGE, page,
                                           SECINFO(SGX_PAGE_TYPE_TCS, 0), 1));
    close(e.dev);
}

static void einit_cases(void)
{
    report("einit_bad_sigstruct_header", einit_case(NULL, 0));
    report("einit_wrong_signature", einit_case(NULL, SGX_SIGSTRUCT_SIGNATURE));
    report("einit_wrong_attributes", einit_case(debug_attribute, -1));

    /* the first page with other contents than the signed ones */
    struct he_encl e;
    long ret = create(&e, NULL);
    memcpy(page, b.data, HE_PAGE);
    page[HE_PAGE - 1] ^= 0xff;
    for (uint32_t i = 0; !ret && i < b.h->nr_pages; i++)
        ret = i ? he_add_page(&e, &b, i) :
            he_add(&e, e.base + b.pages[0].offset, page, b.pages[0].secinfo, HE_ADD_PAGE_EXTEND);
    report("einit_wrong_measurement", ret ? ret : he_init(&e, b.sigstruct));
    close(e.dev);
}

static void after_einit_cases(void)
{
    struct he_encl e;
    long ret = he_build(&e, &b);
    report("einit", ret);
    if (ret)
        return;
    uint64_t unused = e.base + e.size - HE_PAGE;       /* the bundle leaves the last page out */
    uint64_t rw = SECINFO(PT_REG, SGX_SECINFO_R | SGX_SECINFO_W);
    report("einit_twice", he_init(&e, b.sigstruct));
    report("eadd_after_einit", he_add(&e, unused, b.data, rw, 0));
    report("eextend_after_einit", he_add(&e, unused, b.data, rw, HE_ADD_PAGE_EXTEND));

    void *buf = mmap(NULL, 2 * HE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    report("remove_shared_memory_never_added", he_share(&e, buf, HE_PAGE, 1));
    report("add_shared_memory_in_elrange", he_share(&e, (void *)e.base, HE_PAGE, 0));
    report("add_shared_memory_unaligned", he_share(&e, (char *)buf + 8, HE_PAGE, 0));
    report("add_shared_memory", he_share(&e, buf, HE_PAGE, 0));
    report("add_shared_memory_twice", he_share(&e, buf, HE_PAGE, 0));
    report("remove_shared_memory_part", he_share(&e, (char *)buf + HE_PAGE, HE_PAGE, 1));
    report("remove_shared_memory", he_share(&e, buf, HE_PAGE, 1));
    close(e.dev);

    struct he_encl u;
    ret = add_all(&u, NULL);
    report("add_shared_memory_before_einit", ret ? ret : he_share(&u, buf, HE_PAGE, 0));
    close(u.dev);
}

/* EADD until the EPC runs out: one ADD_PAGES of 4 MiB (more than the test machine's EPC) into a
 * 256 MiB ELRANGE, looped in the kernel. */
static void out_of_epc_case(void)
{
    struct he_encl e;
    b.h = &(struct he_enclave_file_header){.size = 256UL << 20, .ms_buf_size = HE_PAGE,
                                            .attributes = ATTR_MODE64BIT, .xfrm = 3,
                                            .ssa_frame_size = 1};
    long ret = create(&e, NULL);
    static struct sgx_secinfo rw = {.flags = SECINFO(PT_REG, SGX_SECINFO_R | SGX_SECINFO_W)};
    struct he_enclave_add_pages add = {.addr = e.base, .length = 4UL << 20,
                                       .secinfo = (uint64_t)&rw};
    add.src = (uint64_t)mmap(NULL, add.length, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!ret)
        ret = he_ioctl(e.dev, HE_IOC_ENCLAVE_ADD_PAGES, &add);
    printf("enclave_errors: out_of_epc: %s after %lu pages\n", he_result(ret),
           (unsigned long)add.count);
    close(e.dev);
}

/* ---- ENCLU cases: the app faults ---- */
__asm__(".text\n"
        "enclu_enter:\n\t"            /* (leaf, tcs, arg, loops, aep): ENCLU, RDI = arg */
        "push %rbx\n\t"
        "push %rbp\n\t"
        "push %r12\n\t"
        "push %r13\n\t"
        "push %r14\n\t"
        "push %r15\n\t"
        "mov %rdi, %rax\n\t"
        "mov %rsi, %rbx\n\t"
        "mov %rdx, %rdi\n\t"
        "mov %rcx, %rsi\n\t"
        "mov %r8, %rcx\n\t"
        "enclu\n\t"                 /* EEXIT comes back here, RSP as it was */
        "pop %r15\n\t"
        "pop %r14\n\t"
        "pop %r13\n\t"
        "pop %r12\n\t"
        "pop %rbp\n\t"
        "pop %rbx\n\t"
        "ret\n"
        "aep_eenter_again:\n\t"       /* each AEX: EENTER the same TCS again (CSSA + 1) */
        "lock incq aex_count(%rip)\n\t"
        "mov $2, %eax\n\t"
        "mov $1000000000, %esi\n\t"
        "enclu\n"
        "aep_eresume:\n\t"
        "lock incq aex_count(%rip)\n\t"
        "enclu\n");
void enclu_enter(long leaf, uint64_t tcs, long arg, long loops, void *aep);
void aep_eenter_again(void);
void aep_eresume(void);

static int enclu_case(const char *name)
{
    struct he_encl e;
    long ret = he_build(&e, &b);
    if (ret) {
        report("einit", ret);
        return 1;
    }
    uint64_t tcs = e.tcs[0];
    struct { const char *name; long leaf; uint64_t tcs; long arg, loops; void (*aep)(void); }
    cases[] = {
        {"eresume_cssa_0", 3, tcs, 0, 0, aep_eresume},
        {"eenter_not_a_tcs", 2, e.base, 0, 0, aep_eresume},
        {"eenter_tcs_not_aligned", 2, tcs + 8, 0, 0, aep_eresume},
        {"eenter_from_inside", 2, tcs, -1, 0, aep_eresume},
        {"eenter_all_ssa_frames_used", 2, tcs, 0, 1000000000, aep_eenter_again},
        {"eenter_after_destroy", 2, tcs, 0, 0, aep_eresume},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (strcmp(name, cases[i].name))
            continue;
        if (!strcmp(name, "eenter_after_destroy"))
            close(e.dev);
        printf("enclave_errors: %s: ENCLU\n", name);
        enclu_enter(cases[i].leaf, cases[i].tcs, cases[i].arg, cases[i].loops, cases[i].aep);
        printf("enclave_errors: %s: returned after %lu AEX\n", name, aex_count);
        return 0;
    }
    printf("enclave_errors: unknown case %s\n", name);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        printf("usage: enclave_errors BUNDLE [ENCLU-CASE]\n");
        return 2;
    }
    if (he_read_bundle(argv[1], &b))
        return 1;
    if (argc == 3)
        return enclu_case(argv[2]);
    ecreate_cases();
    eadd_cases();
    einit_cases();
    after_einit_cases();
    out_of_epc_case();
    return 0;
}
