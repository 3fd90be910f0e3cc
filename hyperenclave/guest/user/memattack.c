/*
 * memattack: touches a physical page from user space (CPL 3).
 *   memattack read|write|exec PA [VALUE]    through an mmap of /dev/mem
 *   memattack remap-read|remap-write PA [VALUE]
 *                                           through an anonymous page of this process that
 *                                           /dev/he_attack points at PA ("remap VA PA")
 * read prints "memattack: read PA -> <hex of up to 64 bytes> all zero|NONZERO"; write stores
 * the u64 VALUE (default 0x4141414141414141; PA 8-byte aligned) and prints "memattack: wrote
 * VALUE to PA (reads back X)"; exec calls the code at PA and prints what it returned.
 * PA is hex ("0x" optional), VALUE a C literal.
 */
#include "libc.h"

#define PAGE 4096UL

static volatile uint8_t *map_remapped(uint64_t page)
{
    uint8_t *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        printf("memattack: mmap: %s\n", strerror(errno));
        return NULL;
    }
    char cmd[64], result[256];
    int len = snprintf(cmd, sizeof(cmd), "remap %lx %lx", (unsigned long)p, (unsigned long)page);
    int fd = open("/dev/he_attack", O_RDWR);
    if (fd < 0) {
        printf("memattack: /dev/he_attack: %s\n", strerror(errno));
        return NULL;
    }
    ssize_t w = write(fd, cmd, (size_t)len);
    int err = errno;
    ssize_t n = read(fd, result, sizeof(result) - 1);
    result[n > 0 ? n : 0] = 0;
    close(fd);
    if (w < 0) {
        printf("memattack: %s (%s)\n", result, strerror(err));
        return NULL;
    }
    printf("memattack: %s\n", result);
    return p;
}

static volatile uint8_t *map_devmem(uint64_t page)
{
    int fd = open("/dev/mem", O_RDWR);
    if (fd < 0) {
        printf("memattack: /dev/mem: %s\n", strerror(errno));
        return NULL;
    }
    void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, fd, (long)page);
    close(fd);
    if (p == MAP_FAILED) {
        printf("memattack: mmap /dev/mem at %#lx: %s\n", (unsigned long)page, strerror(errno));
        return NULL;
    }
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        printf("usage: memattack read|write|exec|remap-read|remap-write PA [VALUE]\n");
        return 2;
    }
    const char *op = argv[1];
    int remap = !strncmp(op, "remap-", 6);
    if (remap)
        op += 6;
    char *end;
    uint64_t pa = strtoul(argv[2], &end, 16);
    uint64_t value = argc > 3 ? strtoul(argv[3], NULL, 0) : 0x4141414141414141UL;
    int known = !strcmp(op, "read") || !strcmp(op, "write") || (!remap && !strcmp(op, "exec"));
    if (!known || *end || (!strcmp(op, "write") && (pa & 7))) {
        printf("usage: memattack read|write|exec|remap-read|remap-write PA [VALUE]\n");
        return 2;
    }
    uint64_t off = pa & (PAGE - 1);
    volatile uint8_t *page = remap ? map_remapped(pa - off) : map_devmem(pa - off);
    if (!page)
        return 1;
    volatile uint8_t *p = page + off;

    if (!strcmp(op, "read")) {
        char hex[2 * 64 + 1];
        uint64_t len = PAGE - off < 64 ? PAGE - off : 64;
        int zero = 1;
        for (uint64_t i = 0; i < len; i++) {
            uint8_t b = p[i];
            snprintf(hex + 2 * i, 3, "%02x", b);
            zero &= !b;
        }
        printf("memattack: read %#lx -> %s %s\n", (unsigned long)pa, hex,
               zero ? "all zero" : "NONZERO");
    } else if (!strcmp(op, "write")) {
        *(volatile uint64_t *)p = value;
        printf("memattack: wrote %#lx to %#lx (reads back %#lx)\n", (unsigned long)value,
               (unsigned long)pa, (unsigned long)*(volatile uint64_t *)p);
    } else {
        long (*fn)(void) = (long (*)(void))(uintptr_t)p;
        long ret = fn();
        printf("memattack: exec %#lx returned %#lx\n", (unsigned long)pa, ret);
    }
    return 0;
}
