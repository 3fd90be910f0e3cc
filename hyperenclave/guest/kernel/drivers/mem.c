/* /dev/null and /dev/zero: minimal examples of a character device driver; /dev/mem. */
#include "kernel.h"
#include "fs.h"
#include "mm.h"

static long null_read(struct file *f, char *ubuf, u64 count)
{
    (void)f;
    (void)ubuf;
    (void)count;
    return 0;
}

static long null_write(struct file *f, const char *ubuf, u64 count)
{
    (void)f;
    (void)ubuf;
    return (long)count;
}

static long zero_read(struct file *f, char *ubuf, u64 count)
{
    (void)f;
    static const char zeros[256];
    u64 done = 0;
    while (done < count) {
        u64 n = MIN(count - done, sizeof(zeros));
        if (copy_to_user(ubuf + done, zeros, n))
            return done ? (long)done : -EFAULT;
        done += n;
    }
    return (long)done;
}

/* /dev/mem: mmap of any physical range, as Linux without CONFIG_STRICT_DEVMEM; what is not
 * RAM is mapped uncached. The pages stay the owner's (no PTE_OWNED). */
static long mem_mmap(struct file *f, u64 addr, u64 len, int prot, int flags, u64 pgoff)
{
    (void)f;
    (void)flags;
    u64 pa = pgoff << PAGE_SHIFT;
    if (pgoff >> (52 - PAGE_SHIFT) || pa + len < pa)
        return -EINVAL;
    for (u64 off = 0; off < len; off += PAGE_SIZE) {
        u64 pte = PTE_U | ((prot & PROT_WRITE) ? PTE_W : 0);
        if (!e820_overlaps_ram(&e820_firmware, pa + off, pa + off + PAGE_SIZE))
            pte |= PTE_PCD | PTE_PWT;
        u64 old = unmap_page(current->pml4, addr + off);    /* MAP_FIXED over anonymous memory */
        if ((old & PTE_P) && (old & PTE_OWNED))
            free_page(old & PTE_ADDR);
        if (map_page(current->pml4, addr + off, pa + off, pte))
            return -ENOMEM;
    }
    return 0;
}

static const struct file_operations null_fops = {.read = null_read, .write = null_write};
static const struct file_operations zero_fops = {.read = zero_read, .write = null_write};
static const struct file_operations mem_fops = {.mmap = mem_mmap};

static int mem_devices_init(void)
{
    register_device("/dev/null", &null_fops, NULL);
    register_device("/dev/mem", &mem_fops, NULL);
    return register_device("/dev/zero", &zero_fops, NULL);
}
device_initcall(mem_devices_init);
