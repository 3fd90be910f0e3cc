/* The secret keeper's edge functions (app: app.c). The secret never leaves the enclave. */
#ifndef SECRET_KEEPER_H
#define SECRET_KEEPER_H
#include <stdint.h>

#define SK_MAX_SECRET 64
#define SK_ECALL_PROVISION 0    /* in: the secret (1..SK_MAX_SECRET bytes), once */
#define SK_ECALL_CHECK     1    /* in: a guess; out: uint64_t 1 if it is the secret, else 0 */
#define SK_ECALL_WHERE     2    /* out: struct sk_where */
#define SK_ECALL_ECHO      3    /* in: struct sk_echo; out: the bytes copied in from `src` */

struct sk_where {
    uint64_t address;           /* the secret's linear address inside ELRANGE */
    uint64_t length;
};

/* Copy `length` bytes from the untrusted pointer `src` into the enclave and hand them back:
 * the bounds-checked copy refuses anything outside the marshalling area or inside ELRANGE. */
struct sk_echo {
    uint64_t src;
    uint64_t length;
};
#endif
