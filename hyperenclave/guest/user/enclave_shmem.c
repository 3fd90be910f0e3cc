/*
 * enclave_shmem BUNDLE: an enclave's shared memory taken back by the host (HC 0x102-0x104).
 * BUNDLE's entry reads the u64 at RDI, adds 7 and stores it at RDI + 8.
 *
 *  1. share a page and ECALL through it;
 *  2. munmap it (the driver's mmu notifier: HC 0x103/0x104 unmap it from the enclave) and map
 *     a new page at the same address: the ECALL's access AEXs (SHARED_MEM_FETCH), the kernel
 *     finds the page present and returns to the AEP, ERESUME maps the new page, and the result
 *     lands there, never in the freed one;
 *  3. REMOVE_SHARED_MEMORY, then ECALL once more: the enclave's access is a #PF AEX that the
 *     kernel reports as a segfault at the buffer (this process dies there).
 */
#include "he_steps.h"
#include "he_urts.h"

/* EENTER with RDI = buf (the untrusted runtime's ENCLU loop: each AEX counted, ERESUMEd). */
static void ecall(uint64_t tcs, volatile unsigned long *buf)
{
    long rdi = (long)buf;
    uint64_t rsi = 0, rdx;
    he_enclu_enter(tcs, &rdi, &rsi, &rdx);
}

int main(int argc, char **argv)
{
    struct he_bundle b;
    struct he_encl e;
    if (argc != 2 || he_read_bundle(argv[1], &b))
        return 2;
    long ret = he_build(&e, &b);
    if (ret) {
        printf("enclave_shmem: building the enclave: %s\n", he_result(ret));
        return 1;
    }
    volatile unsigned long *buf = mmap(NULL, HE_PAGE, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("enclave_shmem: ADD_SHARED_MEMORY %#lx: %s\n", (unsigned long)buf,
           he_result(he_share(&e, (void *)buf, HE_PAGE, 0)));
    buf[0] = 35;
    ecall(e.tcs[0], buf);
    printf("enclave_shmem: ECALL(35) = %lu\n", buf[1]);

    munmap((void *)buf, HE_PAGE);
    void *again = mmap((void *)buf, HE_PAGE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (again != (void *)buf) {
        printf("enclave_shmem: no new page at %#lx\n", (unsigned long)buf);
        return 1;
    }
    buf[0] = 100;
    unsigned long before = he_aex_count;
    ecall(e.tcs[0], buf);
    printf("enclave_shmem: after munmap and a new page: ECALL(100) = %lu after %lu AEX\n",
           buf[1], he_aex_count - before);

    printf("enclave_shmem: REMOVE_SHARED_MEMORY: %s\n",
           he_result(he_share(&e, (void *)buf, HE_PAGE, 1)));
    printf("enclave_shmem: REMOVE_SHARED_MEMORY again: %s\n",
           he_result(he_share(&e, (void *)buf, HE_PAGE, 1)));
    buf[0] = 200;
    buf[1] = 0;
    printf("enclave_shmem: ECALL(200) after the remove\n");
    ecall(e.tcs[0], buf);
    printf("enclave_shmem: ECALL(200) = %lu: the enclave still reached the app's page\n", buf[1]);
    return 1;
}
