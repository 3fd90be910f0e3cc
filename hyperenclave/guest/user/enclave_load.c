/*
 * enclave_load PATH... [--keep] [--enter ARG | --ecall N]: build each signed enclave bundle
 * through /dev/hyper_enclave with the untrusted runtime (urts/he_urts.h). The enclaves live
 * together until every PATH was tried; then they are destroyed or, with --keep, left for the
 * process's exit to destroy. Exit status 1 when any enclave failed. For hand-written enclaves
 * (no trusted runtime):
 * --enter ARG: EENTER each one's first TCS with RDI = ARG and print the RDX it EEXITs with and
 * how many AEXs (each followed by ERESUME at the AEP) it took.
 * --ecall N: an ECALL through a shared marshalling buffer, serving the enclave's OCALLs.
 * --quote NONCE: the enclave gets NONCE (text, at most 64 bytes) in a shared buffer and leaves
 * there a REPORT for HyperEnclave's pseudo-QE with NONCE as REPORTDATA; the EnclaveQuote
 * hypercall turns it into a quote bundle (hyperenclave/vmm/quote.py), printed as hex lines.
 */
#include "libc.h"
#include "he_ioctl.h"
#include "he_urts.h"

#define MAX_ENCLAVES 8
#define PAGE_SIZE    4096UL
#define HC_ENCLAVE_QUOTE 0x8000000dUL   /* RDI = REPORT, RSI = out, RDX = size, RCX = &length */
#define QUOTE_MAX    (64 * 1024UL)
#define REPORT_DATA  64

static struct he_enclave enclaves[MAX_ENCLAVES];

/* An ECALL through a marshalling buffer shared with the enclave (HE_IOC_ADD_SHARED_MEMORY):
 * buf[0] = input; the enclave may ask for OCALL 1 with buf[2] = 1 and its argument in buf[3];
 * we answer in buf[4] with buf[2] = 2 (ORET) and enter again; the result comes in buf[1]. */
static int ecall(struct he_enclave *e, unsigned long input)
{
    volatile unsigned long *buf = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return -1;
    struct he_enclave_shared_memory shared = {(uint64_t)buf, PAGE_SIZE};
    if (ioctl(e->dev, HE_IOC_ADD_SHARED_MEMORY, &shared)) {
        printf("enclave_load: ADD_SHARED_MEMORY failed: %s\n", strerror(errno));
        return -1;
    }
    buf[0] = input;
    buf[2] = 0;
    for (int calls = 0; calls < 16; calls++) {
        long rdi = (long)buf;
        uint64_t rsi = 0, rdx;
        he_enclu_enter(e->tcs[0], &rdi, &rsi, &rdx);
        if (buf[2] != 1)
            break;
        printf("enclave_load: OCALL 1(%lu) from the enclave\n", buf[3]);
        buf[4] = buf[3] * 2;
        buf[2] = 2;
    }
    printf("enclave_load: ECALL(%lu) = %lu\n", input, buf[1]);
    return 0;
}

static int quote(struct he_enclave *e, const char *nonce)
{
    uint8_t *buf = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *out = mmap(NULL, QUOTE_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED || out == MAP_FAILED)
        return -1;
    struct he_enclave_shared_memory shared = {(uint64_t)buf, PAGE_SIZE};
    if (ioctl(e->dev, HE_IOC_ADD_SHARED_MEMORY, &shared)) {
        printf("enclave_load: ADD_SHARED_MEMORY failed: %s\n", strerror(errno));
        return -1;
    }
    size_t n = strlen(nonce);
    memcpy(buf, nonce, n < REPORT_DATA ? n : REPORT_DATA);
    long rdi = (long)buf;
    uint64_t rsi = 0, status;
    he_enclu_enter(e->tcs[0], &rdi, &rsi, &status);
    unsigned long length = 0;
    long ret;
    __asm__ volatile("vmcall"
                     : "=a"(ret)
                     : "a"(HC_ENCLAVE_QUOTE), "D"(buf + REPORT_DATA), "S"(out), "d"(QUOTE_MAX),
                       "c"(&length)
                     : "memory");
    printf("enclave_load: QUOTE(%s) = %ld, enclave %#lx, %lu bytes\n", nonce, ret,
           (unsigned long)status, length);
    if (ret || status || length > QUOTE_MAX)
        return -1;
    for (unsigned long at = 0; at < length; at += 32) {
        char hex[65];
        unsigned long end = at + 32 < length ? at + 32 : length;
        for (unsigned long i = at; i < end; i++)
            snprintf(hex + 2 * (i - at), 3, "%02x", out[i]);
        printf("enclave_load: quote %s\n", hex);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *paths[MAX_ENCLAVES];
    int nr_paths = 0, nr_open = 0, status = 0;
    int keep = 0, do_enter = 0, do_ecall = 0;
    unsigned long arg = 0;
    const char *nonce = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else if (!strcmp(argv[i], "--quote") && i + 1 < argc)
            nonce = argv[++i];
        else if ((!strcmp(argv[i], "--enter") || !strcmp(argv[i], "--ecall")) && i + 1 < argc) {
            do_enter = argv[i][2] == 'e' && argv[i][3] == 'n';
            do_ecall = !do_enter;
            arg = strtoul(argv[++i], NULL, 0);
        }
        else if (nr_paths < MAX_ENCLAVES)
            paths[nr_paths++] = argv[i];
        else
            nr_paths = MAX_ENCLAVES + 1;
    }
    if (!nr_paths || nr_paths > MAX_ENCLAVES) {
        printf("usage: enclave_load PATH... [--keep] [--enter ARG | --ecall N] [--quote NONCE]"
               "   (at most %d paths)\n",
               MAX_ENCLAVES);
        return 2;
    }
    for (int i = 0; i < nr_paths; i++) {
        struct he_enclave *e = &enclaves[nr_open];
        if (he_enclave_load(e, paths[i], "enclave_load")) {
            status = 1;
            continue;
        }
        nr_open++;
        if (do_ecall && ecall(e, arg))
            status = 1;
        if (nonce && quote(e, nonce))
            status = 1;
        if (do_enter) {
            unsigned long before = he_aex_count;
            long rdi = (long)arg;
            uint64_t rsi = 0, ret;
            he_enclu_enter(e->tcs[0], &rdi, &rsi, &ret);
            printf("enclave_load: EENTER(%#lx) returned %#lx after %lu AEX\n", arg,
                   (unsigned long)ret, he_aex_count - before);
        }
    }
    if (keep) {
        printf("enclave_load: exiting with %d enclave(s) open\n", nr_open);
        usleep(20000);
        return status;
    }
    for (int i = 0; i < nr_open; i++)
        he_enclave_destroy(&enclaves[i]);
    return status;
}
