/*
 * The untrusted runtime (he_urts.h): builds signed bundles through /dev/hyper_enclave (mmap a
 * range, pick a size-aligned ELRANGE in it, ENCLAVE_CREATE, ADD_PAGES for each run of pages, INIT),
 * shares the marshalling buffer (ADD_SHARED_MEMORY) and runs ECALLs with the real ENCLU
 * instruction: EENTER, OCALLs served from the app's table and answered with ORET, ERESUME at
 * the AEP after every AEX, and an exception inside the enclave (which the kernel hands to
 * he_urts_fixup) answered with the EENTER that lets the enclave's SSA path abort it.
 */
#include "libc.h"
#include "he_ioctl.h"
#include "he_enclave_file.h"
#include "he_urts.h"

#define PAGE_SIZE 4096UL

volatile unsigned long he_aex_count;
volatile long he_last_exception = -1;
static struct sgx_secs secs;
static struct sgx_secinfo secinfo;
extern char he_urts_aep[], he_urts_fixup[];     /* in he_enclu_enter below */

static long fail(struct he_enclave *e, const char *what, long status)
{
    printf("%s: %s: %s\n", e->who, e->path, what);
    return status;
}

/* The whole file in anonymous memory, or NULL after saying why. */
static uint8_t *read_file(struct he_enclave *e, size_t *size)
{
    int fd = open(e->path, O_RDONLY);
    if (fd < 0) {
        fail(e, strerror(errno), 0);
        return NULL;
    }
    long n = lseek(fd, 0, SEEK_END);
    uint8_t *buf = MAP_FAILED;
    if (n > 0 && !lseek(fd, 0, SEEK_SET))
        buf = mmap(NULL, (size_t)n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t got = 0;
    while (buf != MAP_FAILED && got < (size_t)n) {
        ssize_t r = read(fd, buf + got, (size_t)n - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (buf == MAP_FAILED || got != (size_t)n) {
        fail(e, "cannot read it", 0);
        return NULL;
    }
    *size = got;
    return buf;
}

/* The header of a well-formed bundle of `size` bytes, or NULL after saying why. */
static const struct he_enclave_file_header *check_bundle(struct he_enclave *e, const uint8_t *file,
                                                         size_t size)
{
    const struct he_enclave_file_header *h = (const void *)file;
    char why[96];
    if (size < sizeof(*h) || memcmp(h->magic, HE_ENCLAVE_FILE_MAGIC, sizeof(h->magic))) {
        fail(e, "not an enclave bundle (no " HE_ENCLAVE_FILE_MAGIC " header)", 0);
        return NULL;
    }
    uint64_t expected = sizeof(*h) + (uint64_t)h->nr_pages *
        (sizeof(struct he_enclave_file_page) + PAGE_SIZE) + SGX_SIGSTRUCT_SIZE;
    if (size != expected) {
        snprintf(why, sizeof(why), "%lu bytes, but %u pages make a bundle of %lu bytes",
                 (unsigned long)size, h->nr_pages, (unsigned long)expected);
        fail(e, why, 0);
        return NULL;
    }
    if (h->size < 2 * PAGE_SIZE || (h->size & (h->size - 1))) {
        snprintf(why, sizeof(why), "enclave size %#lx is not a power of two of at least 2 pages",
                 (unsigned long)h->size);
        fail(e, why, 0);
        return NULL;
    }
    return h;
}

/* 0, or an SGX status after saying why the ioctl `what` failed (an errno or an SGX error). */
static long check(struct he_enclave *e, const char *what, int ret)
{
    char why[128];
    if (ret < 0)
        snprintf(why, sizeof(why), "%s failed: %s", what, strerror(errno));
    else if (ret > 0)
        snprintf(why, sizeof(why), "%s failed: %s (%d)", what, sgx_error_name(ret), ret);
    else
        return SGX_SUCCESS;
    fail(e, why, 0);
    return ret == 8 ? SGX_ERROR_INVALID_SIGNATURE : SGX_ERROR_INVALID_ENCLAVE;
}

static long build(struct he_enclave *e, const uint8_t *file, const struct he_enclave_file_header *h)
{
    const struct he_enclave_file_page *pages = (const void *)(file + sizeof(*h));
    const uint8_t *data = (const uint8_t *)(pages + h->nr_pages);
    const uint8_t *sigstruct = data + h->nr_pages * PAGE_SIZE;

    e->dev = open("/dev/hyper_enclave", O_RDWR);
    if (e->dev < 0) {
        printf("%s: /dev/hyper_enclave: %s\n", e->who, strerror(errno));
        return SGX_ERROR_NO_DEVICE;
    }
    /* twice the size, so that a size-aligned ELRANGE fits whatever address comes back */
    void *va = mmap(NULL, 2 * h->size, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, e->dev, 0);
    if (va == MAP_FAILED) {
        char why[96];
        snprintf(why, sizeof(why), "mmap of /dev/hyper_enclave failed: %s", strerror(errno));
        return fail(e, why, SGX_ERROR_OUT_OF_MEMORY);
    }
    e->size = h->size;
    e->base = ((uint64_t)va + h->size - 1) & ~(h->size - 1);

    memset(&secs, 0, sizeof(secs));
    secs.size = h->size;
    secs.base = e->base;
    secs.ssa_frame_size = h->ssa_frame_size;
    secs.misc_select = h->misc_select;
    secs.ms_buf_size = h->ms_buf_size;
    secs.attributes = h->attributes;
    secs.xfrm = h->xfrm;
    e->ms_buf_size = h->ms_buf_size;
    struct he_enclave_create create = {(uint64_t)&secs};
    long status = check(e, "ENCLAVE_CREATE", ioctl(e->dev, HE_IOC_ENCLAVE_CREATE, &create));
    /* runs of contiguous pages with one SECINFO and measurement go in one ADD_PAGES call */
    for (uint32_t i = 0, n; i < h->nr_pages && !status; i += n) {
        for (n = 1; i + n < h->nr_pages && pages[i + n].secinfo == pages[i].secinfo &&
             pages[i + n].flags == pages[i].flags &&
             pages[i + n].offset == pages[i].offset + n * PAGE_SIZE; n++)
            ;
        for (uint32_t k = i; k < i + n; k++)
            if (((pages[k].secinfo >> 8) & 0xff) == SGX_PAGE_TYPE_TCS && e->nr_tcs < HE_MAX_TCS)
                e->tcs[e->nr_tcs++] = e->base + pages[k].offset;
        secinfo.flags = pages[i].secinfo;
        struct he_enclave_add_pages add = {
            (uint64_t)(data + i * PAGE_SIZE), e->base + pages[i].offset, n * PAGE_SIZE,
            (uint64_t)&secinfo, pages[i].flags & HE_ENCLAVE_PAGE_MEASURED ? HE_ADD_PAGE_EXTEND : 0,
            0};
        long ret = ioctl(e->dev, HE_IOC_ENCLAVE_ADD_PAGES, &add);
        char what[48];
        snprintf(what, sizeof(what), "ADD_PAGE at %#lx",
                 (unsigned long)(add.addr + add.count * PAGE_SIZE));
        status = check(e, what, ret);
    }
    if (status)
        return status;
    struct he_enclave_init init = {e->base, (uint64_t)sigstruct};
    status = check(e, "INIT", ioctl(e->dev, HE_IOC_ENCLAVE_INIT, &init));
    if (status)
        return status;
    memcpy(e->mrenclave, sigstruct + SGX_SIGSTRUCT_ENCLAVEHASH, sizeof(e->mrenclave));
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", e->mrenclave[i]);
    printf("%s: enclave at %#lx MRENCLAVE %s initialized\n", e->who, (unsigned long)e->base, hex);
    return SGX_SUCCESS;
}

long he_enclave_load(struct he_enclave *e, const char *path, const char *who)
{
    memset(e, 0, sizeof(*e));
    e->who = who ? who : "he_urts";
    e->path = path;
    e->dev = -1;
    size_t size;
    uint8_t *file = read_file(e, &size);
    if (!file)
        return SGX_ERROR_INVALID_ENCLAVE;
    const struct he_enclave_file_header *h = check_bundle(e, file, size);
    long status = h ? build(e, file, h) : SGX_ERROR_INVALID_ENCLAVE;
    munmap(file, size);
    if (!status && !e->nr_tcs)
        status = fail(e, "the enclave has no TCS", SGX_ERROR_INVALID_ENCLAVE);
    if (status)
        he_enclave_destroy(e);
    return status;
}

long he_enclave_create(struct he_enclave *e, const char *path, const he_ocall_fn *ocalls,
                       size_t nr_ocalls, const char *who)
{
    long status = he_enclave_load(e, path, who);
    if (status)
        return status;
    e->ocalls = ocalls;
    e->nr_ocalls = nr_ocalls;
    void *buf = mmap(NULL, e->ms_buf_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (buf == MAP_FAILED) {
        he_enclave_destroy(e);
        return fail(e, "no memory for the marshalling buffer", SGX_ERROR_OUT_OF_MEMORY);
    }
    struct he_enclave_shared_memory shared = {(uint64_t)buf, e->ms_buf_size};
    status = check(e, "ADD_SHARED_MEMORY", ioctl(e->dev, HE_IOC_ADD_SHARED_MEMORY, &shared));
    if (status) {
        munmap(buf, e->ms_buf_size);
        he_enclave_destroy(e);
        return status;
    }
    e->ms = buf;
    e->ms->size = e->ms_buf_size - sizeof(struct he_ms);
    struct he_exception_fixup fixup = {(uint64_t)he_urts_aep, (uint64_t)he_urts_fixup};
    status = check(e, "SET_EXCEPTION_FIXUP", ioctl(e->dev, HE_IOC_SET_EXCEPTION_FIXUP, &fixup));
    if (status)
        he_enclave_destroy(e);
    return status;
}

/* he_enclu_enter(tcs, &rdi, &rsi, &rdx): EENTER, then back at 1: after the enclave's EEXIT
 * (its RBX is the address after our ENCLU; it restored RSP/RBP). he_urts_aep: an AEX left RAX =
 * ERESUME, RBX = TCS, RCX = AEP; count it and ERESUME. he_urts_fixup: the kernel sends an
 * exception delivered at he_urts_aep here (HE_IOC_SET_EXCEPTION_FIXUP) with RDI = vector; EENTER
 * again (CSSA is now 1: the enclave's SSA path) and leave with what it EEXITs with. */
__asm__(
    "    .text\n"
    "    .globl he_enclu_enter\n"
    "he_enclu_enter:\n"
    "    push %rbx\n"
    "    push %rbp\n"
    "    push %r12\n"
    "    push %r13\n"
    "    push %r14\n"
    "    push %r15\n"
    "    push %rsi\n"
    "    push %rdx\n"
    "    push %rcx\n"
    "    mov %rdi, %rbx\n"
    "    mov (%rsi), %rdi\n"
    "    mov (%rdx), %rsi\n"
    "    lea he_urts_aep(%rip), %rcx\n"
    "    mov $2, %eax\n"
    "    enclu\n"                               /* EENTER */
    "1:  pop %r10\n"
    "    pop %r9\n"
    "    pop %r8\n"
    "    mov %rdi, (%r8)\n"
    "    mov %rsi, (%r9)\n"
    "    mov %rdx, (%r10)\n"
    "    pop %r15\n"
    "    pop %r14\n"
    "    pop %r13\n"
    "    pop %r12\n"
    "    pop %rbp\n"
    "    pop %rbx\n"
    "    ret\n"
    "    .globl he_urts_aep\n"
    "he_urts_aep:\n"
    "    lock incq he_aex_count(%rip)\n"
    "    enclu\n"                               /* ERESUME */
    "    .globl he_urts_fixup\n"
    "he_urts_fixup:\n"
    "    mov %rdi, he_last_exception(%rip)\n"
    "    lea he_urts_aep(%rip), %rcx\n"
    "    mov $2, %eax\n"
    "    enclu\n"                               /* EENTER with CSSA > 0 */
    "    jmp 1b\n");

long he_ecall(struct he_enclave *e, long index, struct he_ms *ms)
{
    if (!e || e->dev < 0 || !e->nr_tcs)
        return SGX_ERROR_INVALID_ENCLAVE;
    unsigned long aex_before = he_aex_count;
    long rdi = index;
    uint64_t rsi = (uint64_t)ms, rdx;
    for (;;) {
        he_enclu_enter(e->tcs[0], &rdi, &rsi, &rdx);
        if (rdi == HE_OCALL_ERET)
            break;
        /* an OCALL: RSI is the marshalling area the enclave filled in */
        struct he_ms *oms = (struct he_ms *)rsi;
        long ret = -1;
        if ((uint64_t)rdi < e->nr_ocalls && e->ocalls[rdi] && oms == e->ms) {
            oms->out_size = 0;
            ret = e->ocalls[rdi](oms);
        } else {
            printf("%s: %s: the enclave asked for OCALL %ld, which the app does not have\n",
                   e->who, e->path, rdi);
        }
        rdi = HE_ECMD_ORET;
        rsi = (uint64_t)ret;
    }
    e->aex_count += he_aex_count - aex_before;
    e->exitinfo = (long)rsi == SGX_ERROR_ENCLAVE_CRASHED ? rdx : 0;
    return (long)rsi;
}

#define HC_ENCLAVE_QUOTE 0x8000000dUL   /* RDI = REPORT, RSI = out, RDX = size, RCX = &length */

long he_quote(struct he_enclave *e, const void *nonce, size_t n, uint8_t *out, size_t size,
              size_t *length)
{
    struct he_report_request *request = (struct he_report_request *)e->ms->data;
    if (!n || n > SGX_REPORT_DATA_SIZE || e->ms_buf_size < sizeof(struct he_ms) + sizeof(*request))
        return SGX_ERROR_INVALID_PARAMETER;
    memset(request, 0, sizeof(*request));
    /* HyperEnclave's pseudo-QE (hyperenclave/vmm/quote.py QUOTING_TARGET): MRENCLAVE 0xEE x 32,
     * ATTRIBUTES.FLAGS INIT, XFRM x87|SSE */
    memset(request->target_info, 0xee, 32);
    request->target_info[32] = 1;
    request->target_info[40] = 3;
    memcpy(request->report_data, nonce, n);
    e->ms->in_size = sizeof(*request);
    long status = he_ecall(e, HE_ECALL_REPORT, e->ms);
    if (status)
        return status;
    uint8_t report[SGX_REPORT_SIZE];
    memcpy(report, e->ms->data, sizeof(report));
    unsigned long got = 0;
    long ret;
    __asm__ volatile("vmcall"
                     : "=a"(ret)
                     : "a"(HC_ENCLAVE_QUOTE), "D"(report), "S"(out), "d"(size), "c"(&got)
                     : "memory");
    if (ret) {
        printf("%s: %s: the quote hypercall failed: %s\n", e->who, e->path, strerror((int)-ret));
        return SGX_ERROR_UNEXPECTED;
    }
    *length = got;
    return SGX_SUCCESS;
}

void he_print_quote(const char *who, const uint8_t *quote, size_t length)
{
    for (size_t at = 0; at < length; at += 32) {
        char hex[65];
        size_t end = at + 32 < length ? at + 32 : length;
        for (size_t i = at; i < end; i++)
            snprintf(hex + 2 * (i - at), 3, "%02x", quote[i]);
        printf("%s: quote %s\n", who, hex);
    }
}

void he_enclave_destroy(struct he_enclave *e)
{
    if (e->dev >= 0)
        close(e->dev);
    e->dev = -1;
    if (e->ms)
        munmap(e->ms, e->ms_buf_size);
    e->ms = NULL;
}
