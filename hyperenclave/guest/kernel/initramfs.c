/* initramfs: a cpio "newc" (070701) archive left in memory by the firmware; read in place. */
#include "fs.h"
#include "mm.h"

static const u8 *archive;
static u64 archive_size;

static u32 hex8(const u8 *p)
{
    u32 v = 0;
    for (int i = 0; i < 8; i++) {
        u8 c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
    }
    return v;
}

/* strip "./" and "/" prefixes */
static const char *norm(const char *p)
{
    for (;;) {
        if (p[0] == '.' && p[1] == '/')
            p += 2;
        else if (p[0] == '/')
            p++;
        else
            return p;
    }
}

void initramfs_foreach(initramfs_cb cb, void *arg)
{
    u64 off = 0;
    while (archive && off + 110 <= archive_size) {
        const u8 *h = archive + off;
        if (memcmp(h, "070701", 6) && memcmp(h, "070702", 6)) {
            printk("initramfs: bad cpio header at offset %lu\n", (unsigned long)off);
            return;
        }
        u32 mode = hex8(h + 14);
        u32 filesize = hex8(h + 54);
        u32 namesize = hex8(h + 94);
        const char *name = (const char *)h + 110;
        u64 data_off = ALIGN_UP(off + 110 + namesize, 4);
        if (data_off + filesize > archive_size || namesize == 0)
            return;
        if (namesize == 11 && !memcmp(name, "TRAILER!!!", 11))
            return;
        if (name[namesize - 1] == 0)
            cb(norm(name), mode, archive + data_off, filesize, arg);
        off = ALIGN_UP(data_off + filesize, 4);
    }
}

struct find_ctx {
    const char *path;
    const u8 *data;
    u64 size;
    bool found;
};

static void find_cb(const char *name, u32 mode, const u8 *data, u64 size, void *arg)
{
    struct find_ctx *c = arg;
    if ((mode & 0170000) == 0100000 && !strcmp(name, c->path)) {
        c->data = data;
        c->size = size;
        c->found = true;   /* a later entry of the same name wins, like the kernel's unpacking */
    }
}

int initramfs_find(const char *path, const u8 **data, u64 *size)
{
    struct find_ctx c = {norm(path), NULL, 0, false};
    initramfs_foreach(find_cb, &c);
    if (!c.found)
        return -ENOENT;
    *data = c.data;
    *size = c.size;
    return 0;
}

static void count_cb(const char *name, u32 mode, const u8 *data, u64 size, void *arg)
{
    (void)name;
    (void)data;
    (void)size;
    if ((mode & 0170000) == 0100000)
        (*(u64 *)arg)++;
}

void initramfs_init(void)
{
    if (!boot_params.initrd_size) {
        printk("initramfs: none\n");
        return;
    }
    archive = __va(boot_params.initrd_addr);
    archive_size = boot_params.initrd_size;
    printk("RAMDISK: [mem %#010lx-%#010lx]\n", (unsigned long)boot_params.initrd_addr,
           (unsigned long)(boot_params.initrd_addr + boot_params.initrd_size - 1));
    printk("Trying to unpack rootfs image as initramfs...\n");
    if (archive_size < 6 || (memcmp(archive, "070701", 6) && memcmp(archive, "070702", 6))) {
        printk("Initramfs unpacking failed: no cpio magic\n");
        archive = NULL;
        return;
    }
    u64 n = 0;
    initramfs_foreach(count_cb, &n);
    printk("initramfs: %lu files, %lu bytes\n", (unsigned long)n, (unsigned long)archive_size);
}
