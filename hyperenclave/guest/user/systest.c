/* systest: checks the kernel's system calls from user space; prints one line per failure. */
#include "libc.h"

static int failures, checks;

static void expect(const char *what, long got, long want)
{
    checks++;
    if (got != want) {
        failures++;
        printf("systest: FAIL %s: got %ld, want %ld\n", what, got, want);
    }
}

struct utsname {
    char sysname[65], nodename[65], release[65], version[65], machine[65], domainname[65];
};

int main(void)
{
    expect("unknown syscall 400 -> -ENOSYS", syscall0(400), -38);
    expect("syscall 100000 -> -ENOSYS", syscall0(100000), -38);
    expect("getpid", syscall0(SYS_getpid), getpid());
    expect("write to a bad fd -> -EBADF", syscall3(SYS_write, 42, "x", 1), -9);
    expect("write from a NULL buffer -> -EFAULT", syscall3(SYS_write, 1, 0, 4), -14);
    expect("write from a kernel address -> -EFAULT",
           syscall3(SYS_write, 1, 0xffffffff80100000UL, 4), -14);
    expect("ioctl TCGETS on the console", syscall3(SYS_ioctl, 1, 0x5401, 0), 0);

    int fd = open("/etc/rc", O_RDONLY);
    expect("open /etc/rc", fd >= 3, 1);
    char buf[16];
    expect("read /etc/rc", read(fd, buf, 2), 2);
    expect("/etc/rc starts with '# '", buf[0] == '#' && buf[1] == ' ', 1);
    expect("read into read-only text -> -EFAULT", syscall3(SYS_read, fd, (long)main, 4), -14);
    expect("close", close(fd), 0);
    expect("close again -> -EBADF", syscall1(SYS_close, fd), -9);
    expect("open a missing file -> -ENOENT", syscall3(SYS_open, "/nope", 0, 0), -2);

    int null = open("/dev/null", O_RDWR);
    expect("open /dev/null", null >= 3, 1);
    expect("write /dev/null", write(null, "abc", 3), 3);
    expect("read /dev/null", read(null, buf, 4), 0);
    expect("ioctl on /dev/null -> -ENOTTY", syscall3(SYS_ioctl, null, 0x5401, 0), -25);
    close(null);

    char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    expect("mmap anonymous", p != MAP_FAILED, 1);
    if (p != MAP_FAILED) {
        expect("mmap memory is zeroed", p[0] == 0 && p[3 * 4096 - 1] == 0, 1);
        memset(p, 0x5a, 3 * 4096);
        expect("mmap memory is writable", p[4096 + 7], 0x5a);
        expect("munmap", munmap(p, 3 * 4096), 0);
    }

    expect("sched_yield", sched_yield(), 0);
    struct timespec a, b, req = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    expect("nanosleep 20 ms", nanosleep(&req, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ns = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
    expect("nanosleep slept at least 20 ms", ns >= 20 * 1000 * 1000, 1);
    struct timespec bad = {0, 2000000000L};
    expect("nanosleep with bad tv_nsec -> -EINVAL", syscall2(SYS_nanosleep, &bad, 0), -22);

    struct utsname u;
    expect("uname", syscall1(63, &u), 0);
    expect("uname sysname", strcmp(u.sysname, "Linux"), 0);

    printf("systest: %d/%d checks passed\n", checks - failures, checks);
    return failures ? 1 : 0;
}
