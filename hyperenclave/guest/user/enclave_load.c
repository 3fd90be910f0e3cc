/*
 * enclave_load PATH... [--keep] [--enter ARG]: build each signed enclave bundle (include/he_enclave_file.h,
 * written by hyperenclave/sdk/signer.py) through /dev/hyper_enclave: mmap a range, pick a
 * size-aligned ELRANGE in it, ENCLAVE_CREATE, ADD_PAGE for every page, INIT. The enclaves live
 * together until every PATH was tried; then they are closed (which destroys them) or, with
 * --keep, left for the process's exit to destroy. Exit status 1 when any enclave failed.
 * --enter ARG: after building each one, EENTER its first TCS with ENCLU (RDI = ARG) and print
 * the RDX it EEXITs with and how many AEXs (each followed by ERESUME at the AEP) it took.
 * --ecall N: an ECALL through a shared marshalling buffer, serving the enclave's OCALLs.
 */
#include "libc.h"
#include "he_ioctl.h"
#include "he_enclave_file.h"

#define MAX_ENCLAVES 8
#define PAGE_SIZE    4096UL

static struct sgx_secs secs;
static uint64_t first_tcs;              /* linear address of the last built enclave's first TCS */
static volatile unsigned long aex_count;
static struct sgx_secinfo secinfo;

/* The whole file in anonymous memory, or NULL after saying why. */
static const uint8_t *read_file(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("enclave_load: %s: %s\n", path, strerror(errno));
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
        printf("enclave_load: %s: cannot read it\n", path);
        return NULL;
    }
    *size = got;
    return buf;
}

/* The header of a well-formed bundle of `size` bytes, or NULL after saying why. */
static const struct he_enclave_file_header *check_bundle(const char *path, const uint8_t *file,
                                                         size_t size)
{
    const struct he_enclave_file_header *h = (const void *)file;
    if (size < sizeof(*h) || memcmp(h->magic, HE_ENCLAVE_FILE_MAGIC, sizeof(h->magic))) {
        printf("enclave_load: %s: not an enclave bundle (no %s header)\n", path,
               HE_ENCLAVE_FILE_MAGIC);
        return NULL;
    }
    uint64_t expected = sizeof(*h) + (uint64_t)h->nr_pages *
        (sizeof(struct he_enclave_file_page) + PAGE_SIZE) + SGX_SIGSTRUCT_SIZE;
    if (size != expected) {
        printf("enclave_load: %s: %lu bytes, but %u pages make a bundle of %lu bytes\n", path,
               (unsigned long)size, h->nr_pages, (unsigned long)expected);
        return NULL;
    }
    if (h->size < 2 * PAGE_SIZE || (h->size & (h->size - 1))) {
        printf("enclave_load: %s: enclave size %#lx is not a power of two of at least 2 pages\n",
               path, (unsigned long)h->size);
        return NULL;
    }
    return h;
}

/* 0, or -1 after saying why the ioctl `what` failed: an errno or a positive SGX error code. */
static int check(const char *path, const char *what, int ret)
{
    if (ret < 0)
        printf("enclave_load: %s: %s failed: %s\n", path, what, strerror(errno));
    else if (ret > 0)
        printf("enclave_load: %s: %s failed: %s (%d)\n", path, what, sgx_error_name(ret), ret);
    return ret ? -1 : 0;
}

/* Build the enclave of the bundle `file`; the open device (the enclave's handle), or -1. */
static int build(const char *path, const uint8_t *file, const struct he_enclave_file_header *h)
{
    const struct he_enclave_file_page *pages = (const void *)(file + sizeof(*h));
    const uint8_t *data = (const uint8_t *)(pages + h->nr_pages);
    const uint8_t *sigstruct = data + h->nr_pages * PAGE_SIZE;

    int dev = open("/dev/hyper_enclave", O_RDWR);
    if (dev < 0) {
        printf("enclave_load: /dev/hyper_enclave: %s\n", strerror(errno));
        return -1;
    }
    /* twice the size, so that a size-aligned ELRANGE fits whatever address comes back */
    void *va = mmap(NULL, 2 * h->size, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, dev, 0);
    if (va == MAP_FAILED) {
        printf("enclave_load: %s: mmap of /dev/hyper_enclave failed: %s\n", path,
               strerror(errno));
        goto fail;
    }
    uint64_t base = ((uint64_t)va + h->size - 1) & ~(h->size - 1);

    memset(&secs, 0, sizeof(secs));
    secs.size = h->size;
    secs.base = base;
    secs.ssa_frame_size = h->ssa_frame_size;
    secs.misc_select = h->misc_select;
    secs.ms_buf_size = h->ms_buf_size;
    secs.attributes = h->attributes;
    secs.xfrm = h->xfrm;
    struct he_enclave_create create = {(uint64_t)&secs};
    if (check(path, "ENCLAVE_CREATE", ioctl(dev, HE_IOC_ENCLAVE_CREATE, &create)))
        goto fail;

    for (uint32_t i = 0; i < h->nr_pages; i++) {
        char what[48];
        secinfo.flags = pages[i].secinfo;
        struct he_enclave_add_page add = {
            base + pages[i].offset, (uint64_t)(data + i * PAGE_SIZE), (uint64_t)&secinfo,
            pages[i].flags & HE_ENCLAVE_PAGE_MEASURED ? HE_ADD_PAGE_EXTEND : 0};
        snprintf(what, sizeof(what), "ADD_PAGE at %#lx", (unsigned long)add.addr);
        if (((pages[i].secinfo >> 8) & 0xff) == SGX_PAGE_TYPE_TCS && !first_tcs)
            first_tcs = add.addr;
        if (check(path, what, ioctl(dev, HE_IOC_ENCLAVE_ADD_PAGE, &add)))
            goto fail;
    }

    struct he_enclave_init init = {base, (uint64_t)sigstruct};
    if (check(path, "INIT", ioctl(dev, HE_IOC_ENCLAVE_INIT, &init)))
        goto fail;
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", sigstruct[SGX_SIGSTRUCT_ENCLAVEHASH + i]);
    printf("enclave_load: enclave at %#lx MRENCLAVE %s initialized\n", (unsigned long)base, hex);
    return dev;
fail:
    close(dev);
    return -1;
}

/* EENTER the TCS with RDI = arg through the real ENCLU instruction; the AEP counts AEXs and
 * ERESUMEs (the AEX left RAX = ERESUME, RBX = TCS, RCX = AEP). Returns the enclave's RDX. */
static unsigned long enter(uint64_t tcs, unsigned long arg)
{
    unsigned long result;
    __asm__ volatile("lea 2f(%%rip), %%rcx\n\t"
                     "mov $2, %%eax\n\t"
                     "enclu\n\t"                       /* EENTER; EEXIT comes back here */
                     "jmp 3f\n"
                     "2:\n\t"
                     "lock incq aex_count(%%rip)\n\t"
                     "enclu\n"                          /* ERESUME */
                     "3:"
                     : "=d"(result), "+b"(tcs), "+D"(arg)
                     :
                     : "rax", "rcx", "rsi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
                       "r15", "memory", "cc");
    return result;
}

/* An ECALL through a marshalling buffer shared with the enclave (HE_IOC_ADD_SHARED_MEMORY):
 * buf[0] = input; the enclave may ask for OCALL 1 with buf[2] = 1 and its argument in buf[3];
 * we answer in buf[4] with buf[2] = 2 (ORET) and enter again; the result comes in buf[1]. */
static int ecall(int dev, uint64_t tcs, unsigned long input)
{
    volatile unsigned long *buf = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return -1;
    struct he_enclave_shared_memory shared = {(uint64_t)buf, PAGE_SIZE};
    if (ioctl(dev, HE_IOC_ADD_SHARED_MEMORY, &shared)) {
        printf("enclave_load: ADD_SHARED_MEMORY failed: %s\n", strerror(errno));
        return -1;
    }
    buf[0] = input;
    buf[2] = 0;
    for (int calls = 0; calls < 16; calls++) {
        enter(tcs, (unsigned long)buf);
        if (buf[2] != 1)
            break;
        printf("enclave_load: OCALL 1(%lu) from the enclave\n", buf[3]);
        buf[4] = buf[3] * 2;
        buf[2] = 2;
    }
    printf("enclave_load: ECALL(%lu) = %lu\n", input, buf[1]);
    return 0;
}

static int load(const char *path)
{
    size_t size;
    const uint8_t *file = read_file(path, &size);
    if (!file)
        return -1;
    const struct he_enclave_file_header *h = check_bundle(path, file, size);
    int dev = h ? build(path, file, h) : -1;
    munmap((void *)file, size);
    return dev;
}

int main(int argc, char **argv)
{
    const char *paths[MAX_ENCLAVES];
    int fds[MAX_ENCLAVES], nr_paths = 0, nr_open = 0, status = 0;
    int keep = 0, do_enter = 0, do_ecall = 0;
    unsigned long arg = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else if ((!strcmp(argv[i], "--enter") || !strcmp(argv[i], "--ecall")) && i + 1 < argc) {
            do_enter = argv[i][2] == 'e' && argv[i][3] == 'n';
            do_ecall = !do_enter;
            arg = strtoul(argv[++i], NULL, 0);
        }
        else if (nr_paths < MAX_ENCLAVES)
            paths[nr_paths++] = argv[i];
        else
            nr_paths = MAX_ENCLAVES + 1;
    }
    if (!nr_paths || nr_paths > MAX_ENCLAVES) {
        printf("usage: enclave_load PATH... [--keep] [--enter ARG | --ecall N]   (at most %d paths)\n",
               MAX_ENCLAVES);
        return 2;
    }
    for (int i = 0; i < nr_paths; i++) {
        int fd = load(paths[i]);
        if (fd < 0) {
            status = 1;
            continue;
        }
        fds[nr_open++] = fd;
        if (do_ecall && first_tcs && ecall(fd, first_tcs, arg))
            status = 1;
        if (do_enter && first_tcs) {
            unsigned long before = aex_count, ret = enter(first_tcs, arg);
            printf("enclave_load: EENTER(%#lx) returned %#lx after %lu AEX\n", arg, ret,
                   aex_count - before);
        }
        first_tcs = 0;
    }
    if (keep) {
        printf("enclave_load: exiting with %d enclave(s) open\n", nr_open);
        usleep(20000);
        return status;
    }
    for (int i = 0; i < nr_open; i++)
        close(fds[i]);
    return status;
}
