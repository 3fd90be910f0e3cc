/*
 * /dev/sysrq-trigger (Linux: /proc/sysrq-trigger): writing 'c' crashes the kernel with a NULL
 * pointer dereference (to exercise the oops path), 'o' powers off, 'b' reboots, 'm' shows memory.
 */
#include "kernel.h"
#include "fs.h"
#include "mm.h"

static long sysrq_write(struct file *f, const char *ubuf, u64 count)
{
    (void)f;
    char c;
    if (!count)
        return 0;
    if (copy_from_user(&c, ubuf, 1))
        return -EFAULT;
    switch (c) {
    case 'c':
        printk("sysrq: Trigger a crash\n");
        *(volatile int *)0 = 1;
        break;
    case 'o':
        printk("sysrq: Power Off\n");
        machine_power_off();
    case 'b':
        printk("sysrq: Resetting\n");
        machine_restart();
    case 'm':
        printk("sysrq: Show Memory\n");
        printk("Mem-Info: %lu pages free of %lu\n", (unsigned long)nr_free_pages(),
               (unsigned long)nr_total_pages());
        break;
    default:
        printk("sysrq: HELP : crash(c) poweroff(o) reboot(b) show-memory-usage(m)\n");
        break;
    }
    return (long)count;
}

static const struct file_operations sysrq_fops = {.write = sysrq_write};

static int sysrq_init(void)
{
    return register_device("/dev/sysrq-trigger", &sysrq_fops, NULL);
}
device_initcall(sysrq_init);
