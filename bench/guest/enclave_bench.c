/*
 * Enclave benchmarks inside the guest, timed with RDTSC (the virtual TSC: 1 GHz, so a tick is a
 * nanosecond of host time). Each figure is the best of RUNS batches.
 *
 *   enclave_bench create BUNDLE RUNS       "bench: create PAGES NS": ECREATE..EINIT of BUNDLE
 *   enclave_bench calls BUNDLE N RUNS EXTRA with EXTRA more enclaves live:
 *                                          "bench: ecall LIVE NS" per empty ECALL (EENTER+EEXIT)
 *                                          "bench: ocall LIVE NS" per OCALL (EEXIT+EENTER)
 *                                          (the best batch), after a line per batch:
 *                                          "bench: batch LIVE ECALL_NS OCALL_NS"
 *   enclave_bench threads BUNDLE N RUNS K  "bench: threads K NS" per empty ECALL when the
 *                                          calls go round-robin over K TCSs of one enclave
 *                                          (the best batch), after "bench: tbatch K NS" per batch
 *                                          (K host threads taking turns: the mock kernel has
 *                                          no threads and the machine one vCPU)
 *
 * BUNDLE for `calls`: RDI = 1 is an empty ECALL; RDI = 2 starts an ECALL that makes RSI OCALLs:
 * it EEXITs with RDX = 1 per OCALL and is entered again (RDI = 3) until it EEXITs with RDX = 0.
 */
#include "he_urts.h"
#include "../user/he_steps.h"      /* hyperenclave/guest/user/, found through -Iinclude */

#define MAX_LIVE 64

static struct he_bundle b;

/* EENTER with RDI, RSI through the untrusted runtime's ENCLU loop (each AEX, a timer tick,
 * is counted and ERESUMEd). The enclave's RDX. */
static unsigned long call(uint64_t tcs, unsigned long rdi, unsigned long rsi)
{
    long di = (long)rdi;
    uint64_t si = rsi, rdx;
    he_enclu_enter(tcs, &di, &si, &rdx);
    return rdx;
}

static int create(unsigned long runs)
{
    uint64_t best = ~0UL;
    for (unsigned long i = 0; i < runs; i++) {
        struct he_encl e;
        uint64_t t0 = rdtsc();
        long ret = he_build(&e, &b);
        uint64_t t = rdtsc() - t0;
        if (ret) {
            printf("bench: create failed: %s\n", he_result(ret));
            return 1;
        }
        close(e.dev);
        best = t < best ? t : best;
    }
    printf("bench: create %u %lu\n", b.h->nr_pages, (unsigned long)best);
    return 0;
}

static int calls(unsigned long n, unsigned long runs, unsigned long extra)
{
    static struct he_encl live[MAX_LIVE];
    if (extra + 1 > MAX_LIVE)
        return 2;
    for (unsigned long i = 0; i <= extra; i++) {
        long ret = he_build(&live[i], &b);
        if (ret) {
            printf("bench: enclave %lu: %s\n", i, he_result(ret));
            return 1;
        }
    }
    uint64_t tcs = live[extra].tcs[0], ecall = ~0UL, ocall = ~0UL;
    unsigned long aex_before = he_aex_count;
    printf("bench: %lu enclaves live\n", extra + 1);
    for (unsigned long r = 0; r < runs; r++) {
        uint64_t t0 = rdtsc();
        for (unsigned long i = 0; i < n; i++)
            call(tcs, 1, 0);
        uint64_t t1 = rdtsc();
        for (unsigned long rdx = call(tcs, 2, n); rdx; rdx = call(tcs, 3, 0))
            ;
        uint64_t t2 = rdtsc(), e = (t1 - t0) / n;
        ecall = e < ecall ? e : ecall;
        uint64_t o = (t2 - t1 - e) / n;     /* one ECALL carried the n OCALLs */
        ocall = o < ocall ? o : ocall;
        printf("bench: batch %lu %lu %lu\n", extra + 1, (unsigned long)e, (unsigned long)o);
    }
    printf("bench: ecall %lu %lu\n", extra + 1, (unsigned long)ecall);
    printf("bench: ocall %lu %lu\n", extra + 1, (unsigned long)ocall);
    printf("bench: %lu AEX (timer ticks) during the calls\n", he_aex_count - aex_before);
    for (unsigned long i = 0; i <= extra; i++)
        close(live[i].dev);
    return 0;
}

static int threads(unsigned long n, unsigned long runs, unsigned long k)
{
    struct he_encl e;
    long ret = he_build(&e, &b);
    if (ret) {
        printf("bench: enclave: %s\n", he_result(ret));
        return 1;
    }
    if (!k || k > e.nr_tcs) {
        printf("bench: %lu threads asked, the enclave has %u TCSs\n", k, e.nr_tcs);
        return 2;
    }
    uint64_t best = ~0UL;
    for (unsigned long r = 0; r < runs; r++) {
        uint64_t t0 = rdtsc();
        for (unsigned long i = 0; i < n; i++)
            call(e.tcs[i % k], 1, 0);
        uint64_t t = (rdtsc() - t0) / n;
        best = t < best ? t : best;
        printf("bench: tbatch %lu %lu\n", k, (unsigned long)t);
    }
    printf("bench: threads %lu %lu\n", k, (unsigned long)best);
    close(e.dev);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "create") && !he_read_bundle(argv[2], &b))
        return create(strtoul(argv[3], NULL, 0));
    if (argc >= 6 && !strcmp(argv[1], "calls") && !he_read_bundle(argv[2], &b))
        return calls(strtoul(argv[3], NULL, 0), strtoul(argv[4], NULL, 0),
                     strtoul(argv[5], NULL, 0));
    if (argc >= 6 && !strcmp(argv[1], "threads") && !he_read_bundle(argv[2], &b))
        return threads(strtoul(argv[3], NULL, 0), strtoul(argv[4], NULL, 0),
                       strtoul(argv[5], NULL, 0));
    printf("usage: enclave_bench create BUNDLE RUNS | calls BUNDLE N RUNS EXTRA"
           " | threads BUNDLE N RUNS K\n");
    return 2;
}
