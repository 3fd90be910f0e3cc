/*
 * Files: a struct file_operations per open file, character devices registered by path
 * (register_device), and read-only regular files from the initramfs.
 *
 * A driver (kernel/drivers/) does:
 *     static const struct file_operations my_fops = { .open = ..., .ioctl = ..., .mmap = ... };
 *     static int my_init(void) { return register_device("/dev/hyper_enclave", &my_fops, NULL); }
 *     device_initcall(my_init);
 */
#ifndef KERNEL_FS_H
#define KERNEL_FS_H

#include "kernel.h"
#include "sched.h"
#include "uapi.h"

struct file;

struct file_operations {
    int (*open)(struct file *f);                                   /* may set private_data */
    long (*read)(struct file *f, char *ubuf, u64 count);           /* ubuf is a user pointer */
    long (*write)(struct file *f, const char *ubuf, u64 count);
    long (*ioctl)(struct file *f, unsigned int cmd, unsigned long arg);
    /* map [addr, addr+len) of the current process; return 0 or -errno */
    long (*mmap)(struct file *f, u64 addr, u64 len, int prot, int flags, u64 pgoff);
    /* optional: where a mapping without MAP_FIXED goes (0: the process's next free range) */
    u64 (*get_unmapped_area)(struct file *f, u64 len);
    int (*release)(struct file *f);
};

struct file {
    const struct file_operations *f_op;
    void *private_data;      /* driver's */
    void *dev_data;          /* register_device()'s `data` */
    const u8 *data;          /* regular files: initramfs contents */
    u64 size;
    u64 pos;
    int flags;
    int refcount;
};

#define O_ACCMODE 3

int register_device(const char *path, const struct file_operations *fops, void *data);
struct file *file_open(const char *path, int flags, int *err);
void file_get(struct file *f);
void file_put(struct file *f);
int fd_install(struct task *t, struct file *f);   /* lowest free fd or -EMFILE */
struct file *fd_get(int fd);                      /* current's */
void files_close_all(struct task *t);
void console_files_init(struct task *t);         /* fds 0, 1, 2 -> /dev/console */

/* tty (kernel/drivers/serial.c) */
long tty_read(char *kbuf, u64 count);            /* blocks for a line */
void tty_write(const char *kbuf, u64 count);

/* initramfs (kernel/initramfs.c) */
void initramfs_init(void);
/* Finds a regular file; returns 0 and fills data and size, or -ENOENT. */
int initramfs_find(const char *path, const u8 **data, u64 *size);
typedef void (*initramfs_cb)(const char *name, u32 mode, const u8 *data, u64 size, void *arg);
void initramfs_foreach(initramfs_cb cb, void *arg);

#endif
