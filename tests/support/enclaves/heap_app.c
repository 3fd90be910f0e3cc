/* heap_app: run the heap test enclave's ECALL and print its report. */
#include "libc.h"
#include "he_urts.h"
#include "heap.h"

int main(void)
{
    struct he_enclave e;
    if (he_enclave_create(&e, "/enclaves/heap.bin", NULL, 0, "heap_app"))
        return 1;
    e.ms->in_size = 0;
    long status = he_ecall(&e, 0, e.ms);
    struct heap_report r;
    memcpy(&r, e.ms->data, sizeof(r));
    printf("heap_app: %s: %lu blocks, %lu in ELRANGE, big block before merge %lu, after %lu\n",
           he_status_name(status), (unsigned long)r.blocks, (unsigned long)r.in_enclave,
           (unsigned long)r.big_before_merge, (unsigned long)r.big_after_merge);
    he_enclave_destroy(&e);
    return 0;
}
