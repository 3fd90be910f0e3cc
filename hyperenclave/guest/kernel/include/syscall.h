/*
 * System calls: Linux x86-64 numbers. sys_call_table[] in kernel/syscall.c maps them to
 * handlers `long fn(u64 a1, ..., u64 a6)`; a driver may add one with register_syscall().
 */
#ifndef KERNEL_SYSCALL_H
#define KERNEL_SYSCALL_H

#include "kernel.h"
#include "sched.h"

#define __NR_read          0
#define __NR_write         1
#define __NR_open          2
#define __NR_close         3
#define __NR_lseek         8
#define __NR_mmap          9
#define __NR_munmap        11
#define __NR_brk           12
#define __NR_ioctl         16
#define __NR_sched_yield   24
#define __NR_nanosleep     35
#define __NR_getpid        39
#define __NR_exit          60
#define __NR_wait4         61
#define __NR_uname         63
#define __NR_getppid       110
#define __NR_clock_gettime 228
#define __NR_exit_group    231
#define NR_SYSCALLS        512

typedef long (*syscall_fn_t)(u64, u64, u64, u64, u64, u64);
int register_syscall(unsigned int nr, syscall_fn_t fn);
void syscall_init(void);
void do_syscall(struct pt_regs *regs);

#endif
