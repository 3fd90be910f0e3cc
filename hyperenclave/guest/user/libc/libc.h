/* The guest's tiny user-space libc: Linux x86-64 system calls, printf to fd 1, strings. */
#ifndef USER_LIBC_H
#define USER_LIBC_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include "lib.h"
#include "uapi.h"

typedef long ssize_t;
typedef int pid_t;

struct timespec {
    long tv_sec;
    long tv_nsec;
};

#define MAP_FAILED ((void *)-1)
#define CLOCK_MONOTONIC 1

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_lseek 8
#define SYS_mmap 9
#define SYS_munmap 11
#define SYS_ioctl 16
#define SYS_sched_yield 24
#define SYS_nanosleep 35
#define SYS_getpid 39
#define SYS_exit 60
#define SYS_getppid 110
#define SYS_clock_gettime 228

static inline long syscall6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define syscall0(n) syscall6((n), 0, 0, 0, 0, 0, 0)
#define syscall1(n, a) syscall6((n), (long)(a), 0, 0, 0, 0, 0)
#define syscall2(n, a, b) syscall6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define syscall3(n, a, b, c) syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

extern int errno;

ssize_t read(int fd, void *buf, size_t n);
ssize_t write(int fd, const void *buf, size_t n);
int open(const char *path, int flags, ...);
int close(int fd);
long lseek(int fd, long off, int whence);
int ioctl(int fd, unsigned long cmd, ...);
void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off);
int munmap(void *addr, size_t len);
int sched_yield(void);
int nanosleep(const struct timespec *req, struct timespec *rem);
unsigned int sleep(unsigned int seconds);
int usleep(unsigned long usec);
pid_t getpid(void);
pid_t getppid(void);
int clock_gettime(int clk, struct timespec *ts);
void exit(int code) __attribute__((noreturn));
void _exit(int code) __attribute__((noreturn));

int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int dprintf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int vdprintf(int fd, const char *fmt, va_list ap);
int puts(const char *s);
int putchar(int c);
int atoi(const char *s);
long atol(const char *s);
unsigned long strtoul(const char *s, char **end, int base);
const char *strerror(int errnum);

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

#endif
