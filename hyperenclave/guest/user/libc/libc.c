/* System call wrappers and stdio for the guest's user programs. */
#include "libc.h"

int errno;

static long check(long r)
{
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

ssize_t read(int fd, void *buf, size_t n) { return check(syscall3(SYS_read, fd, buf, n)); }
ssize_t write(int fd, const void *buf, size_t n) { return check(syscall3(SYS_write, fd, buf, n)); }

int open(const char *path, int flags, ...)
{
    return (int)check(syscall3(SYS_open, path, flags, 0));
}

int close(int fd) { return (int)check(syscall1(SYS_close, fd)); }
long lseek(int fd, long off, int whence) { return check(syscall3(SYS_lseek, fd, off, whence)); }

int ioctl(int fd, unsigned long cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return (int)check(syscall3(SYS_ioctl, fd, cmd, arg));
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off)
{
    long r = syscall6(SYS_mmap, (long)addr, (long)len, prot, flags, fd, off);
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return MAP_FAILED;
    }
    return (void *)r;
}

int munmap(void *addr, size_t len) { return (int)check(syscall2(SYS_munmap, addr, len)); }
int sched_yield(void) { return (int)check(syscall0(SYS_sched_yield)); }

int nanosleep(const struct timespec *req, struct timespec *rem)
{
    return (int)check(syscall2(SYS_nanosleep, req, rem));
}

unsigned int sleep(unsigned int seconds)
{
    struct timespec ts = {(long)seconds, 0};
    nanosleep(&ts, NULL);
    return 0;
}

int usleep(unsigned long usec)
{
    struct timespec ts = {(long)(usec / 1000000), (long)(usec % 1000000) * 1000};
    return nanosleep(&ts, NULL);
}

pid_t getpid(void) { return (pid_t)syscall0(SYS_getpid); }
pid_t getppid(void) { return (pid_t)syscall0(SYS_getppid); }

int clock_gettime(int clk, struct timespec *ts)
{
    return (int)check(syscall2(SYS_clock_gettime, clk, ts));
}

void _exit(int code)
{
    for (;;)
        syscall1(SYS_exit, code);
}

void exit(int code)
{
    _exit(code);
}

int vdprintf(int fd, const char *fmt, va_list ap)
{
    char buf[1024];
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n > (int)sizeof(buf) - 1)
        n = sizeof(buf) - 1;
    write(fd, buf, (size_t)n);
    return n;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vdprintf(1, fmt, ap);
    va_end(ap);
    return n;
}

int dprintf(int fd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vdprintf(fd, fmt, ap);
    va_end(ap);
    return n;
}

int puts(const char *s)
{
    write(1, s, strlen(s));
    write(1, "\n", 1);
    return 0;
}

int putchar(int c)
{
    char ch = (char)c;
    write(1, &ch, 1);
    return c;
}

unsigned long strtoul(const char *s, char **end, int base)
{
    while (*s == ' ' || *s == '\t')
        s++;
    const char *e;
    unsigned long v = (unsigned long)simple_strtoull(s, &e, (unsigned)base);
    if (end)
        *end = (char *)e;
    return v;
}

long atol(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return (long)simple_strtoll(s, NULL, 10);
}

int atoi(const char *s)
{
    return (int)atol(s);
}

/* glibc's texts for the errnos this kernel returns */
const char *strerror(int errnum)
{
    switch (errnum) {
    case 1: return "Operation not permitted";
    case 2: return "No such file or directory";
    case 3: return "No such process";
    case 4: return "Interrupted system call";
    case 5: return "Input/output error";
    case 8: return "Exec format error";
    case 9: return "Bad file descriptor";
    case 10: return "No child processes";
    case 11: return "Resource temporarily unavailable";
    case 12: return "Cannot allocate memory";
    case 13: return "Permission denied";
    case 14: return "Bad address";
    case 16: return "Device or resource busy";
    case 17: return "File exists";
    case 19: return "No such device";
    case 22: return "Invalid argument";
    case 23: return "Too many open files in system";
    case 24: return "Too many open files";
    case 25: return "Inappropriate ioctl for device";
    case 28: return "No space left on device";
    case 29: return "Illegal seek";
    case 34: return "Numerical result out of range";
    case 36: return "File name too long";
    case 38: return "Function not implemented";
    case 61: return "No data available";
    case 95: return "Operation not supported";
    case 110: return "Connection timed out";
    default: {
        static char buf[32];
        snprintf(buf, sizeof(buf), "Unknown error %d", errnum);
        return buf;
    }
    }
}
