/*
 * HyperEnclave's kernel module (hyper_enclave.ko in HyperEnclave), built in.
 *
 * `sysctl dev.hyper_enclave.enabled=1` (a write of "1" to /proc/sys/dev/hyper_enclave/enabled)
 * loads the monitor image from the initramfs into the start of the memmap-reserved range,
 * measures it into PCR 12, calls its entry on every CPU (the running kernel comes back as the
 * monitor's guest) and hands it the host's convertible memory; the rest of the range is EPC.
 * Writing "0" asks the monitor to leave.
 *
 * Parameters: hyper_enclave.str_memmap=<start>,<size> (default: the first memmap=SIZE$START)
 * and hyper_enclave.feature_mask=<n>.
 */
#include "kernel.h"
#include "fs.h"
#include "mm.h"
#include "tpm.h"
#include "hyperenclave.h"
#include "hyper_enclave.h"

#define HE_FW_NAME          "hyperenclave-monitor.bin"
#define HE_FW_PATH          "/lib/firmware/" HE_FW_NAME
#define HE_PCR              12
#define EV_EVENT_TAG        0x6
#define HE_EVENT_TAG_ID     0x48454E43      /* "HENC" */
#define HE_MIN_EPC          (2UL << 20)
#define HE_TPM_TYPE_CRB     0

static char str_memmap[64];
static bool str_memmap_given;
static u32 feature_mask;
static bool enabled;
static struct he_layout layout;
static struct he_mem_region cmrm[E820_TABLE_MAX];

bool hyper_enclave_enabled(void)
{
    return enabled;
}

const struct he_layout *hyper_enclave_layout(void)
{
    return enabled ? &layout : NULL;
}

/* "str_memmap=..." or "feature_mask=..." (the part after "hyper_enclave.") */
static int he_setup(const char *arg)
{
    if (!strncmp(arg, "str_memmap=", 11)) {
        strlcpy(str_memmap, arg + 11, sizeof(str_memmap));
        str_memmap_given = true;
        return 0;
    }
    if (!strncmp(arg, "feature_mask=", 13)) {
        const char *end;
        feature_mask = (u32)simple_strtoull(arg + 13, &end, 0);
        if (end == arg + 13 || *end) {
            printk("hyper_enclave: invalid feature_mask \"%s\", using 0\n", arg + 13);
            feature_mask = 0;
            return -EINVAL;
        }
        return 0;
    }
    const char *eq = strchr(arg, '=');
    printk("hyper_enclave: unknown parameter '%.*s' ignored\n",
           (int)(eq ? (size_t)(eq - arg) : strlen(arg)), arg);
    return -EINVAL;
}
__setup("hyper_enclave.", he_setup);

#define RANGE_INVALID "hyper_enclave: memmap reserved regions aren't valid: "

/* The reserved range for the monitor and the EPC; 0, or -EINVAL after saying why. */
static int he_reserved_range(u64 *start, u64 *size)
{
    if (str_memmap_given) {
        const char *e;
        *start = memparse(str_memmap, &e);
        bool ok = e != str_memmap && *e == ',';
        if (ok) {
            const char *p = e + 1;
            *size = memparse(p, &e);
            ok = e != p && !*e;
        }
        if (!ok) {
            printk(RANGE_INVALID "cannot parse str_memmap=\"%s\" (expected <start>,<size>)\n",
                   str_memmap);
            return -EINVAL;
        }
    } else {
        *start = memmap_reserved_start;
        *size = memmap_reserved_size;
    }
    u64 s = *start, end = *start + *size;
    if (!*size) {
        printk(RANGE_INVALID "no range given (memmap=SIZE$START on the kernel command line, "
               "or hyper_enclave.str_memmap=<start>,<size>)\n");
        return -EINVAL;
    }
    if (end < s) {
        printk(RANGE_INVALID "%#lx bytes at %#lx wrap around\n", *size, s);
        return -EINVAL;
    }
    if ((s | *size) & (PAGE_SIZE - 1)) {
        printk(RANGE_INVALID "[mem %#lx-%#lx] is not page aligned\n", s, end - 1);
        return -EINVAL;
    }
    if (s & (HE_HV_ALIGN - 1)) {
        printk(RANGE_INVALID "[mem %#lx-%#lx] does not start on a 2 MiB boundary\n", s, end - 1);
        return -EINVAL;
    }
    if (e820_overlaps_ram(&e820_table, s, end)) {
        printk(RANGE_INVALID "[mem %#lx-%#lx] overlaps usable RAM (reserve it with memmap=)\n",
               s, end - 1);
        return -EINVAL;
    }
    if (!e820_covers(&e820_table, s, end, E820_TYPE_RESERVED) ||
        !e820_covers(&e820_firmware, s, end, E820_TYPE_RAM)) {
        printk(RANGE_INVALID "[mem %#lx-%#lx] is not RAM reserved with memmap=\n", s, end - 1);
        return -EINVAL;
    }
    return 0;
}

static u32 get32(const u8 *p) { u32 v; memcpy(&v, p, 4); return v; }
static u64 get64(const u8 *p) { u64 v; memcpy(&v, p, 8); return v; }
static void put32(u8 *p, u32 v) { memcpy(p, &v, 4); }
static void put64(u8 *p, u64 v) { memcpy(p, &v, 8); }

/* The header checks of HyperEnclave's driver, each failure named; 0 or -EINVAL. */
static int he_check_image(const u8 *img, u64 size)
{
    if (size < HE_HEADER_SIZE) {
        printk("hyper_enclave: monitor image is truncated: %lu bytes, shorter than its "
               "%u-byte header\n", size, HE_HEADER_SIZE);
        return -EINVAL;
    }
    if (memcmp(img + HE_OFF_SIGNATURE, HE_SIGNATURE, 8)) {
        char sig[9];
        for (int i = 0; i < 8; i++) {
            char c = (char)img[HE_OFF_SIGNATURE + i];
            sig[i] = c >= 0x20 && c < 0x7f ? c : '.';
        }
        sig[8] = 0;
        printk("hyper_enclave: monitor image has a bad signature \"%s\" (expected \"%s\")\n",
               sig, HE_SIGNATURE);
        return -EINVAL;
    }
    u32 version = get32(img + HE_OFF_VERSION);
    if (version != HE_VERSION) {
        printk("hyper_enclave: monitor image version %u does not match the driver's version %u\n",
               version, HE_VERSION);
        return -EINVAL;
    }
    u32 header_size = get32(img + HE_OFF_HEADER_SIZE);
    if (header_size != HE_HEADER_SIZE) {
        printk("hyper_enclave: monitor image header size %#x is not %#x\n", header_size,
               HE_HEADER_SIZE);
        return -EINVAL;
    }
    u64 image_size = get64(img + HE_OFF_IMAGE_SIZE);
    if (image_size > size) {
        printk("hyper_enclave: monitor image is truncated: %lu of %lu bytes\n", size, image_size);
        return -EINVAL;
    }
    if (image_size != size) {
        printk("hyper_enclave: monitor image size %lu in its header does not match the file "
               "size %lu\n", image_size, size);
        return -EINVAL;
    }
    u64 entry = get64(img + HE_OFF_ENTRY);
    if (entry < HE_HEADER_SIZE || entry >= image_size) {
        printk("hyper_enclave: monitor image entry offset %#lx is outside its code "
               "[%#x-%#lx]\n", entry, HE_HEADER_SIZE, image_size - 1);
        return -EINVAL;
    }
    u64 percpu = get64(img + HE_OFF_PERCPU_SIZE);
    if (percpu & (PAGE_SIZE - 1)) {
        printk("hyper_enclave: monitor image per-CPU size %#lx is not page aligned\n", percpu);
        return -EINVAL;
    }
    return 0;
}

/* The host's convertible memory for HC_INIT_CMRM: usable RAM in the kernel's e820 (the
 * reserved range is not usable there), page aligned. */
static u32 he_collect_cmrm(void)
{
    u32 n = 0;
    for (u32 i = 0; i < e820_table.nr; i++) {
        const struct e820_entry *e = &e820_table.map[i];
        u64 start = ALIGN_UP(e->addr, PAGE_SIZE), end = ALIGN_DOWN(e->addr + e->size, PAGE_SIZE);
        if (e->type != E820_TYPE_RAM || start >= end)
            continue;
        cmrm[n].start = start;
        cmrm[n].size = end - start;
        printk("hyper_enclave: Convertible Memory[%2u]: [mem %#018lx-%#018lx]\n", n, start,
               end - 1);
        n++;
    }
    return n;
}

/* a monitor result as something write() can return */
static int he_errno(long ret)
{
    return ret < 0 && ret >= -4095 ? (int)ret : -EIO;
}

static int he_measure(const u8 *img, u64 size)
{
    /* TCG_PCClientTaggedEvent; the PCR gets the image's digest, not the event data's */
    struct {
        u32 tagged_event_id;
        u32 tagged_event_data_size;
        char data[sizeof(HE_FW_NAME) - 1];
    } __attribute__((packed)) ev = {HE_EVENT_TAG_ID, sizeof(ev.data), HE_FW_NAME};
    u8 digest[SHA256_DIGEST_SIZE];
    char hex[2 * SHA256_DIGEST_SIZE + 1];

    sha256(img, size, digest);
    long err = tpm_measure(HE_PCR, EV_EVENT_TAG, digest, &ev, sizeof(ev));
    if (err) {
        printk("hyper_enclave: failed to measure the monitor image into PCR%d: error %ld\n",
               HE_PCR, err);
        return he_errno(err);
    }
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    printk("hyper_enclave: measured monitor image into PCR%d: sha256=%s\n", HE_PCR, hex);
    return 0;
}

/* HC_INIT_CMRM with every convertible region, then HC_SET_INIT_CMRM_DONE */
static long he_init_cmrm(void)
{
    u32 n = he_collect_cmrm();
    /* a kernel virtual pointer: the monitor reads it through the host's page tables */
    long ret = hypercall2(HC_INIT_CMRM, (unsigned long)cmrm, n);
    if (ret) {
        printk("hyper_enclave: Initialize CMRM failed: error %ld\n", ret);
        return ret;
    }
    ret = hypercall2(HC_SET_INIT_CMRM_DONE, 0, 0);
    if (ret)
        printk("hyper_enclave: Cannot mark the CMRM initialization done: error %ld\n", ret);
    return ret;
}

static int he_cmd_enable(void)
{
    u64 rsv_start, rsv_size, size;
    const u8 *img;
    int err = he_reserved_range(&rsv_start, &rsv_size);
    if (err)
        return err;
    if (initramfs_find(HE_FW_PATH, &img, &size)) {
        printk("hyper_enclave: Missing hypervisor image %s\n", HE_FW_PATH);
        return -ENOENT;
    }
    err = he_check_image(img, size);
    if (err)
        return err;
    printk("hyper_enclave: monitor version %u (%s, %lu bytes, entry at +%#lx)\n",
           get32(img + HE_OFF_VERSION), HE_FW_PATH, size, get64(img + HE_OFF_ENTRY));

    /* [image | per-CPU areas | heap] rounded up to 2 MiB, then the EPC */
    u64 percpu = get64(img + HE_OFF_PERCPU_SIZE), heap = get64(img + HE_OFF_HEAP_SIZE);
    u64 max_cpus = num_possible_cpus();
    u64 image_pages = ALIGN_UP(size, PAGE_SIZE);
    u64 hv_phys = rsv_start, hv_size = 0;
    if (percpu <= rsv_size / max_cpus && heap <= rsv_size)     /* no overflow below */
        hv_size = ALIGN_UP(image_pages + max_cpus * percpu + heap, HE_HV_ALIGN);
    if (!hv_size || hv_size > rsv_size || rsv_size - hv_size < HE_MIN_EPC) {
        printk(RANGE_INVALID "[mem %#lx-%#lx] is too small for the monitor (image %#lx, "
               "%lu x per-CPU %#lx, heap %#lx) and at least 2 MiB of EPC\n", rsv_start,
               rsv_start + rsv_size - 1, size, max_cpus, percpu, heap);
        return -ENOMEM;
    }
    u64 epc_phys = hv_phys + hv_size, epc_size = rsv_size - hv_size;
    printk("hyper_enclave: monitor memory [mem %#lx-%#lx], EPC [mem %#lx-%#lx]\n", hv_phys,
           hv_phys + hv_size - 1, epc_phys, epc_phys + epc_size - 1);

    /* measured before anything of it runs, as the file was read */
    err = he_measure(img, size);
    if (err)
        return err;

    /* the image and the per-CPU areas; the monitor clears its own heap */
    u8 *hv = __va(hv_phys);
    memset(hv, 0, image_pages + max_cpus * percpu);
    memcpy(hv, img, size);
    put32(hv + HE_OFF_MAX_CPUS, (u32)max_cpus);
    put64(hv + HE_OFF_HV_PHYS, hv_phys);
    put64(hv + HE_OFF_HV_SIZE, hv_size);
    put64(hv + HE_OFF_EPC_PHYS, epc_phys);
    put64(hv + HE_OFF_EPC_SIZE, epc_size);
    put64(hv + HE_OFF_PERCPU_PHYS, hv_phys + image_pages);
    put64(hv + HE_OFF_TPM_MMIO, TPM_CRB_BASE);
    put32(hv + HE_OFF_TPM_TYPE, HE_TPM_TYPE_CRB);
    put32(hv + HE_OFF_FEATURE_MASK, feature_mask);
    put32(hv + HE_OFF_ONLINE_CPUS, num_online_cpus());

    /* on_each_cpu(enter_hypervisor): interrupts are already off in kernel code here */
    long (*entry)(unsigned int) = (long (*)(unsigned int))(hv + get64(img + HE_OFF_ENTRY));
    for (unsigned int cpu = 0; cpu < num_online_cpus(); cpu++) {
        long ret = entry(cpu);
        if (ret) {
            printk("hyper_enclave: failed to enter the hypervisor on CPU %u: error %ld\n", cpu,
                   ret);
            memset(hv, 0, hv_size);
            return he_errno(ret);
        }
    }

    long ret = he_init_cmrm();
    if (ret) {
        long left = hypercall2(HC_DISABLE, 1, 0);
        if (!left) {
            memset(hv, 0, hv_size);
            return he_errno(ret);
        }
        /* the monitor still runs: stay enabled so that it can be disabled later */
        printk("hyper_enclave: cannot leave the hypervisor after the failed launch: error %ld\n",
               left);
    }
    layout = (struct he_layout){hv_phys, hv_size, epc_phys, epc_size};
    enabled = true;
    if (ret)
        return he_errno(ret);
    printk("hyper_enclave: The hypervisor has been enabled\n");
    return 0;
}

static int he_cmd_disable(void)
{
    /* HC_DISABLE on every CPU; the machine has one */
    long ret = hypercall2(HC_DISABLE, 1, 0);
    if (ret) {
        printk("hyper_enclave: Failed to disable the hypervisor: error %ld\n", ret);
        return he_errno(ret);
    }
    enabled = false;
    printk("hyper_enclave: The hypervisor has been disabled\n");
    return 0;
}

/* /proc/sys/dev/hyper_enclave/enabled: "0\n" or "1\n" */
static long he_enabled_read(struct file *f, char *ubuf, u64 count)
{
    const char text[2] = {enabled ? '1' : '0', '\n'};
    if (f->pos >= sizeof(text))
        return 0;
    u64 n = MIN(count, sizeof(text) - f->pos);
    if (copy_to_user(ubuf, text + f->pos, n))
        return -EFAULT;
    f->pos += n;
    return (long)n;
}

static long he_enabled_write(struct file *f, const char *ubuf, u64 count)
{
    (void)f;
    char buf[16];
    if (count >= sizeof(buf))
        return -EINVAL;
    if (copy_from_user(buf, ubuf, count))
        return -EFAULT;
    u64 len = count;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        len--;
    buf[len] = 0;
    if (strcmp(buf, "0") && strcmp(buf, "1"))
        return -EINVAL;
    bool want = buf[0] == '1';
    if (want != enabled) {
        int err = want ? he_cmd_enable() : he_cmd_disable();
        if (err)
            return err;
    }
    return (long)count;
}

static const struct file_operations he_enabled_fops = {
    .read = he_enabled_read,
    .write = he_enabled_write,
};

static int he_init(void)
{
    u64 start, size;
    if (!he_reserved_range(&start, &size))
        printk("hyper_enclave: reserved [mem %#lx-%#lx] for the hypervisor and EPC\n", start,
               start + size - 1);
    return register_device("/proc/sys/dev/hyper_enclave/enabled", &he_enabled_fops, NULL);
}
device_initcall(he_init);
