/* The kernel/user ABI constants both sides compile against (Linux's values, as in its uapi). */
#ifndef HYPERENCLAVE_UAPI_H
#define HYPERENCLAVE_UAPI_H

#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR   2

#define PROT_READ  1
#define PROT_WRITE 2
#define PROT_EXEC  4
#define MAP_SHARED    0x01
#define MAP_PRIVATE   0x02
#define MAP_FIXED     0x10
#define MAP_ANONYMOUS 0x20

#define SEEK_SET 0
#define SEEK_END 2

/* ioctl command numbers (asm-generic/ioctl.h): dir << 30 | size << 16 | type << 8 | nr */
#define _IOC_WRITE 1U
#define _IOC(dir, type, nr, size) \
    (((dir) << 30) | ((unsigned int)(size) << 16) | ((type) << 8) | (nr))
#define _IOW(type, nr, arg) _IOC(_IOC_WRITE, (type), (nr), sizeof(arg))
#define _IOC_SIZE(cmd) (((cmd) >> 16) & 0x3fff)

#endif
