/* A tiny line-based shell on the console: "path [args...]", "poweroff", "reboot", "help", "ls". */
#include "kernel.h"
#include "sched.h"
#include "fs.h"
#include "mm.h"

static void say(const char *s)
{
    tty_write(s, strlen(s));
}

int run_program(const char *path, int argc, const char *const argv[], bool announce);
int report_exit(const char *path, int pid, int status, int sig);

#define MAX_JOBS 8
static struct {
    int pid;
    char path[64];
} jobs[MAX_JOBS];

/* reap background jobs: all of them (blocking) or only those that have exited */
static void reap_jobs(bool block)
{
    for (int i = 0; i < MAX_JOBS; i++) {
        if (!jobs[i].pid)
            continue;
        struct task *t = find_task(jobs[i].pid);
        if (t && t->state != TASK_ZOMBIE && !block)
            continue;
        int status = 0, sig = 0;
        if (t && task_wait(jobs[i].pid, &status, &sig) == 0)
            report_exit(jobs[i].path, jobs[i].pid, status, sig);
        jobs[i].pid = 0;
    }
}

static void start_job(const char *path, int argc, const char *const argv[])
{
    int slot = -1;
    for (int i = 0; i < MAX_JOBS; i++)
        if (!jobs[i].pid) {
            slot = i;
            break;
        }
    if (slot < 0) {
        say("sh: too many background jobs\n");
        return;
    }
    int pid = task_spawn(path, argc, argv);
    if (pid < 0) {
        printk("Failed to execute %s (error %d)\n", path, pid);
        return;
    }
    jobs[slot].pid = pid;
    strlcpy(jobs[slot].path, path, sizeof(jobs[slot].path));
    char msg[32];
    int k = snprintf(msg, sizeof(msg), "[%d] %d\n", slot + 1, pid);
    tty_write(msg, (u64)k);
}

static void ls_cb(const char *name, u32 mode, const u8 *data, u64 size, void *arg)
{
    (void)data;
    (void)arg;
    char line[160];
    int n = snprintf(line, sizeof(line), "%c%06o %8lu /%s\n",
                     (mode & 0170000) == 0040000 ? 'd' : '-', mode & 07777, (unsigned long)size, name);
    tty_write(line, (u64)MIN(n, (int)sizeof(line) - 1));
}


void shell_run(void)
{
    char line[256];
    say("\nhyperenclave shell: type a program path (e.g. /bin/hello), 'help' or 'poweroff'\n");
    for (;;) {
        reap_jobs(false);
        say("# ");
        long n = tty_read(line, sizeof(line) - 1);
        if (n == 0) {
            say("\n");
            break;                           /* EOF (^D) */
        }
        if (n < 0)
            continue;
        line[n] = 0;
        const char *argv[16];
        int argc = split_args(line, argv, 16);
        if (!argc)
            continue;
        if (!strcmp(argv[0], "poweroff") || !strcmp(argv[0], "exit")) {
            reap_jobs(true);
            break;
        }
        if (!strcmp(argv[0], "reboot"))
            machine_restart();
        if (!strcmp(argv[0], "help")) {
            say("commands: <program path> [args...] [&], wait, ls, free, poweroff, reboot\n");
            continue;
        }
        if (!strcmp(argv[0], "wait")) {
            reap_jobs(true);
            continue;
        }
        if (!strcmp(argv[0], "ls")) {
            initramfs_foreach(ls_cb, NULL);
            continue;
        }
        if (!strcmp(argv[0], "free")) {
            char buf[96];
            int k = snprintf(buf, sizeof(buf), "free: %luK of %luK\n",
                             (unsigned long)(nr_free_pages() * 4), (unsigned long)(nr_total_pages() * 4));
            tty_write(buf, (u64)k);
            continue;
        }
        char path[128];
        if (argv[0][0] == '/')
            strlcpy(path, argv[0], sizeof(path));
        else
            snprintf(path, sizeof(path), "/bin/%s", argv[0]);
        const u8 *d;
        u64 sz;
        if (initramfs_find(path, &d, &sz)) {
            char msg[160];
            int k = snprintf(msg, sizeof(msg), "sh: %s: not found\n", argv[0]);
            tty_write(msg, (u64)k);
            continue;
        }
        if (argc > 1 && !strcmp(argv[argc - 1], "&"))
            start_job(path, argc - 1, argv);
        else
            run_program(path, argc, argv, false);
    }
}
