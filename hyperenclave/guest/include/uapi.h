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

#endif
