/* start_kernel: bring up the CPU tables, memory, devices, then run init (/etc/rc) and the shell. */
#include "kernel.h"
#include "mm.h"
#include "sched.h"
#include "fs.h"
#include "syscall.h"

struct boot_params boot_params;
char boot_command_line[BOOT_CMDLINE_MAX];

extern const initcall_t __initcall_start[], __initcall_end[];
void shell_run(void);
int run_program(const char *path, int argc, const char *const argv[], bool announce);
int report_exit(const char *path, int pid, int status, int sig);

void do_initcalls(void)
{
    for (const initcall_t *fn = __initcall_start; fn < __initcall_end; fn++) {
        int err = (*fn)();
        if (err)
            printk("initcall %p returned %d\n", (void *)*fn, err);
    }
}

static void print_cpu_info(void)
{
    u32 a, b, c, d;
    char vendor[13];
    cpuid_count(0, 0, &a, &b, &c, &d);
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    vendor[12] = 0;
    u32 max_leaf = a;
    char brand[49] = "";
    cpuid_count(0x80000000, 0, &a, &b, &c, &d);
    if (a >= 0x80000004) {
        for (u32 i = 0; i < 3; i++) {
            u32 r[4];
            cpuid_count(0x80000002 + i, 0, &r[0], &r[1], &r[2], &r[3]);
            memcpy(brand + 16 * i, r, 16);
        }
        brand[48] = 0;
    }
    printk("CPU: vendor %s, max leaf %#x, %s\n", vendor, max_leaf, brand[0] ? brand : "(no brand)");
    cpuid_count(1, 0, &a, &b, &c, &d);
    if (c & (1U << 31)) {
        char sig[13];
        cpuid_count(0x40000000, 0, &a, &b, &c, &d);
        memcpy(sig, &b, 4);
        memcpy(sig + 4, &c, 4);
        memcpy(sig + 8, &d, 4);
        sig[12] = 0;
        bool printable = sig[0] != 0;
        for (int i = 0; i < 12; i++)
            if (sig[i] && (sig[i] < 0x20 || sig[i] > 0x7e))
                printable = false;
        if (printable)
            printk("Hypervisor detected: %s\n", sig);
    }
}

/* Run one program as a child of the kernel and wait for it. Returns its exit status, or
 * 128 + signal when killed, or -errno when it could not start. */
int run_program(const char *path, int argc, const char *const argv[], bool announce)
{
    if (announce)
        printk("Run %s as init process\n", path);
    int pid = task_spawn(path, argc, argv);
    if (pid < 0) {
        printk("Failed to execute %s (error %d)\n", path, pid);
        return pid;
    }
    fg_pid = pid;
    int status = 0, sig = 0;
    task_wait(pid, &status, &sig);
    fg_pid = 0;
    return report_exit(path, pid, status, sig);
}

int report_exit(const char *path, int pid, int status, int sig)
{
    if (sig) {
        printk("%s[%d] killed by signal %d (%s)\n", path, pid, sig, signal_name(sig));
        return 128 + sig;
    }
    printk("%s[%d] exited with status %d\n", path, pid, status);
    return status;
}

/* split a line into argv in place (whitespace separated) */
int split_args(char *s, const char *argv[], int max)
{
    int argc = 0;
    while (*s && argc < max) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
            *s++ = 0;
        if (!*s)
            break;
        argv[argc++] = s;
        while (*s && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            s++;
    }
    return argc;
}

static void run_init(void)
{
    if (cmdline_init) {
        const char *argv[] = {cmdline_init};
        run_program(cmdline_init, 1, argv, true);
        return;
    }
    const u8 *rc;
    u64 size;
    if (initramfs_find("/etc/rc", &rc, &size)) {
        printk("init: /etc/rc not found in the initramfs\n");
        return;
    }
    static char buf[4096];
    if (size >= sizeof(buf))
        size = sizeof(buf) - 1;
    memcpy(buf, rc, size);
    buf[size] = 0;
    char *line = buf;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        const char *argv[16];
        int argc = split_args(line, argv, 16);
        if (argc)
            run_program(argv[0], argc, argv, true);
        line = nl ? nl + 1 : NULL;
    }
}

void start_kernel(u64 boot_params_pa)
{
    /* the firmware's page tables map [0, 4 GiB) at the direct map too */
    memcpy(&boot_params, __va(boot_params_pa), sizeof(boot_params));
    if (boot_params.cmdline_addr)
        strlcpy(boot_command_line, __va(boot_params.cmdline_addr), sizeof(boot_command_line));
    if (boot_params.tsc_khz)
        tsc_khz = boot_params.tsc_khz;

    gdt_init();
    idt_init();
    printk("Linux version " UTS_RELEASE " (root@hyperenclave) (gcc " __VERSION__ ", GNU ld) #1 SMP\n");
    printk("Command line: %s\n", boot_command_line);
    print_cpu_info();
    e820_init();
    parse_cmdline();
    e820_finish();
    page_alloc_init();
    paging_init();
    sched_init();
    time_init();
    serial_init();
    syscall_init();
    initramfs_init();
    do_initcalls();
    printk("Freeing unused kernel image memory: 0K\n");

    run_init();
    if (cmdline_shell)
        shell_run();
    machine_power_off();
}
