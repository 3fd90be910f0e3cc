/* The hello enclave's edge functions (its app: guest/user/hello_app.c). */
#ifndef HELLO_H
#define HELLO_H
#include <stdint.h>

#define HELLO_ECALL_ADD   0     /* in: struct hello_add_args; out: uint64_t sum */
#define HELLO_OCALL_PRINT 0     /* in: a NUL-terminated string; returns its length */

struct hello_add_args {
    uint64_t a, b;
};
#endif
