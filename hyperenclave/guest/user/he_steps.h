/*
 * Building an enclave one ioctl at a time, for the programs that must see or provoke each
 * step's answer (enclave_errors, enclave_threads, enclave_shmem, bench/guest/enclave_bench);
 * applications use the untrusted runtime (urts/). Header-only: each program stays one file.
 *
 * Enclaves come from signed bundles (include/he_enclave_file.h). Results of the step functions
 * are what the ioctl gave: 0, -errno, or a positive SGX error code (EINIT).
 */
#ifndef HE_STEPS_H
#define HE_STEPS_H

#include "libc.h"
#include "he_ioctl.h"
#include "he_enclave_file.h"

#define HE_PAGE 4096UL
#define HE_MAX_TCS 8

struct he_bundle {
    const struct he_enclave_file_header *h;
    const struct he_enclave_file_page *pages;
    const uint8_t *data;            /* page i at data + i * HE_PAGE */
    uint8_t *sigstruct;             /* a private copy: callers may spoil it */
};

struct he_encl {
    int dev;
    uint64_t base, size;            /* ELRANGE once he_mmap chose it */
    uint64_t tcs[HE_MAX_TCS];       /* linear addresses of the TCSs added so far */
    int nr_tcs;
};

/* The bundle at `path` in private memory, or -1 after saying why. */
static inline int he_read_bundle(const char *path, struct he_bundle *b)
{
    int fd = open(path, O_RDONLY);
    long n = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
    uint8_t *buf = n > 0 && !lseek(fd, 0, SEEK_SET) ?
        mmap(NULL, (size_t)n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) :
        MAP_FAILED;
    long got = 0;
    while (buf != MAP_FAILED && got < n) {
        ssize_t r = read(fd, buf + got, (size_t)(n - got));
        if (r <= 0)
            break;
        got += r;
    }
    if (fd >= 0)
        close(fd);
    const struct he_enclave_file_header *h = (const void *)buf;
    if (buf == MAP_FAILED || got != n || n < (long)sizeof(*h) ||
        memcmp(h->magic, HE_ENCLAVE_FILE_MAGIC, 8) ||
        (uint64_t)n != sizeof(*h) + (uint64_t)h->nr_pages *
            (sizeof(struct he_enclave_file_page) + HE_PAGE) + SGX_SIGSTRUCT_SIZE) {
        printf("%s: not a readable enclave bundle\n", path);
        return -1;
    }
    b->h = h;
    b->pages = (const void *)(buf + sizeof(*h));
    b->data = (const uint8_t *)(b->pages + h->nr_pages);
    b->sigstruct = (uint8_t *)b->data + h->nr_pages * HE_PAGE;
    return 0;
}

/* Open the device and reserve twice `size`, so that a size-aligned ELRANGE fits; 0 or -errno. */
static inline int he_mmap(struct he_encl *e, uint64_t size)
{
    memset(e, 0, sizeof(*e));
    e->dev = open("/dev/hyper_enclave", O_RDWR);
    if (e->dev < 0)
        return -errno;
    void *va = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, e->dev, 0);
    if (va == MAP_FAILED) {
        close(e->dev);
        return -errno;
    }
    e->size = size;
    e->base = ((uint64_t)va + size - 1) & ~(size - 1);
    return 0;
}

/* The ioctl's answer: 0, -errno or a positive SGX error code. */
static inline long he_ioctl(int dev, unsigned long cmd, void *arg)
{
    int ret = ioctl(dev, cmd, arg);
    return ret < 0 ? -errno : ret;
}

/* The bundle's SECS at `base`. */
static inline void he_secs(const struct he_bundle *b, uint64_t base, struct sgx_secs *secs)
{
    memset(secs, 0, sizeof(*secs));
    secs->size = b->h->size;
    secs->base = base;
    secs->ssa_frame_size = b->h->ssa_frame_size;
    secs->misc_select = b->h->misc_select;
    secs->ms_buf_size = b->h->ms_buf_size;
    secs->attributes = b->h->attributes;
    secs->xfrm = b->h->xfrm;
}

static inline long he_create(struct he_encl *e, struct sgx_secs *secs)
{
    struct he_enclave_create create = {(uint64_t)secs};
    return he_ioctl(e->dev, HE_IOC_ENCLAVE_CREATE, &create);
}

static inline long he_add(struct he_encl *e, uint64_t addr, const void *src, uint64_t secinfo,
                          uint64_t flags)
{
    static struct sgx_secinfo si;
    memset(&si, 0, sizeof(si));
    si.flags = secinfo;
    struct he_enclave_add_page add = {addr, (uint64_t)src, (uint64_t)&si, flags};
    long ret = he_ioctl(e->dev, HE_IOC_ENCLAVE_ADD_PAGE, &add);
    if (!ret && (secinfo >> SGX_SECINFO_TYPE_SHIFT & 0xff) == SGX_PAGE_TYPE_TCS &&
        e->nr_tcs < HE_MAX_TCS)
        e->tcs[e->nr_tcs++] = addr;
    return ret;
}

/* EADD (+EEXTEND) page i of the bundle at its place. */
static inline long he_add_page(struct he_encl *e, const struct he_bundle *b, uint32_t i)
{
    const struct he_enclave_file_page *p = &b->pages[i];
    return he_add(e, e->base + p->offset, b->data + i * HE_PAGE, p->secinfo,
                  p->flags & HE_ENCLAVE_PAGE_MEASURED ? HE_ADD_PAGE_EXTEND : 0);
}

static inline long he_init(struct he_encl *e, const void *sigstruct)
{
    struct he_enclave_init init = {e->base, (uint64_t)sigstruct};
    return he_ioctl(e->dev, HE_IOC_ENCLAVE_INIT, &init);
}

/* All the steps; 0, or the first failing step's answer (the device is closed then). */
static inline long he_build(struct he_encl *e, const struct he_bundle *b)
{
    static struct sgx_secs secs;
    long ret = he_mmap(e, b->h->size);
    if (ret)
        return ret;
    he_secs(b, e->base, &secs);
    ret = he_create(e, &secs);
    for (uint32_t i = 0; !ret && i < b->h->nr_pages; i++)
        ret = he_add_page(e, b, i);
    if (!ret)
        ret = he_init(e, b->sigstruct);
    if (ret)
        close(e->dev);
    return ret;
}

static inline long he_share(struct he_encl *e, void *buf, uint64_t size, int remove)
{
    struct he_enclave_shared_memory shared = {(uint64_t)buf, size};
    return he_ioctl(e->dev, remove ? HE_IOC_REMOVE_SHARED_MEMORY : HE_IOC_ADD_SHARED_MEMORY,
                    &shared);
}

/* An errno or SGX code as text: "0", "-EINVAL", "SGX_INVALID_MEASUREMENT (4)". */
static inline const char *he_result(long ret)
{
    static const char *const errnos[] = {   /* Linux numbers */
        [1] = "EPERM", [5] = "EIO", [9] = "EBADF", [12] = "ENOMEM", [14] = "EFAULT",
        [16] = "EBUSY", [19] = "ENODEV", [22] = "EINVAL", [25] = "ENOTTY", [28] = "ENOSPC",
    };
    static char text[48];
    if (ret > 0)
        snprintf(text, sizeof(text), "%s (%ld)", sgx_error_name(ret), ret);
    else if (ret < 0 && -ret < (long)(sizeof(errnos) / sizeof(errnos[0])) && errnos[-ret])
        snprintf(text, sizeof(text), "-%s", errnos[-ret]);
    else
        snprintf(text, sizeof(text), "%ld", ret);
    return text;
}

#endif
