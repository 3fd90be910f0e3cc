/* /dev/null and /dev/zero: minimal examples of a character device driver. */
#include "kernel.h"
#include "fs.h"

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

static const struct file_operations null_fops = {.read = null_read, .write = null_write};
static const struct file_operations zero_fops = {.read = zero_read, .write = null_write};

static int mem_devices_init(void)
{
    register_device("/dev/null", &null_fops, NULL);
    return register_device("/dev/zero", &zero_fops, NULL);
}
device_initcall(mem_devices_init);
