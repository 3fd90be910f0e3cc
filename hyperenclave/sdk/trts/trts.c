/*
 * The trusted runtime: first-entry self-relocation, ECALL dispatch, OCALLs, the SSA path for
 * exceptions, and the bounds-checked copies with the marshalling area (ABI: he_edge.h).
 *
 * Position independence: enclaves are linked with `ld -pie` at base 0, so code reaches data
 * RIP-relative and only pointers stored in data (the ECALL table, ...) need the load base.
 * The linker leaves them as R_X86_64_RELATIVE entries in .rela.dyn (the signer refuses any other
 * kind); the first entry into the enclave adds the base to each, as the SGX SDK's
 * relocate_enclave() does. MRENCLAVE covers the unrelocated image, so it does not depend on
 * where the loader put the enclave.
 */
#include "he_trts.h"

#define R_X86_64_RELATIVE 8
#define PAGE_SIZE 4096
#define GPRSGX_SIZE 184             /* GPRSGX ends each SSA frame ... */
#define GPRSGX_EXITINFO 160         /* ... and holds EXITINFO here */

_Static_assert(offsetof(struct he_thread_data, stack_top) == 8 &&
               offsetof(struct he_thread_data, ursp) == 40 &&
               offsetof(struct he_thread_data, urbp) == 48 &&
               offsetof(struct he_thread_data, uret) == 56 &&
               offsetof(struct he_thread_data, ocall_rsp) == 64, "entry.S's TD_* offsets");

struct elf64_rela {
    uint64_t offset;
    uint64_t info;
    int64_t addend;
};

struct he_status_info {
    long status;
    uint64_t exitinfo;          /* returned in RDX: EEXIT passes it to the app */
};

extern char __ImageBase[];
extern const struct elf64_rela __rela_dyn_start[], __rela_dyn_end[];
__attribute__((used)) struct he_enclave_config he_enclave_config = {.magic = HE_CONFIG_MAGIC};

long he_ocall_switch(struct he_thread_data *td, long index, uintptr_t ms);
void he_oret_switch(struct he_thread_data *td, long ret) __attribute__((noreturn));

static volatile int relocated, reloc_lock, crashed;
static volatile uint32_t crash_exitinfo;

uintptr_t he_enclave_base(void) { return (uintptr_t)__ImageBase; }
size_t he_enclave_size(void) { return he_enclave_config.enclave_size; }

static struct he_thread_data *this_thread(void)
{
    uint64_t self;
    __asm__("mov %%gs:0, %0" : "=r"(self));
    return (struct he_thread_data *)(he_enclave_base() + self);
}

int he_is_within_enclave(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p, base = he_enclave_base();
    return a + n >= a && a >= base && a + n <= base + he_enclave_size();
}

int he_is_outside_enclave(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p, base = he_enclave_base();
    return a + n >= a && (a + n <= base || a >= base + he_enclave_size());
}

static void relocate(void)
{
    while (__atomic_exchange_n(&reloc_lock, 1, __ATOMIC_ACQUIRE))
        ;
    if (!relocated) {
        uintptr_t base = he_enclave_base();
        for (const struct elf64_rela *r = __rela_dyn_start; r < __rela_dyn_end; r++)
            if ((uint32_t)r->info == R_X86_64_RELATIVE)
                *(uint64_t *)(base + r->offset) = base + (uint64_t)r->addend;
        relocated = 1;
    }
    __atomic_store_n(&reloc_lock, 0, __ATOMIC_RELEASE);
}

/* Whether [p, p + n) is fully inside the current marshalling area (which is outside ELRANGE). */
static int in_ms(uintptr_t p, size_t n)
{
    struct he_thread_data *td = this_thread();
    return p + n >= p && p >= td->ms_start && p + n <= td->ms_end &&
           he_is_outside_enclave((const void *)p, n);
}

long he_copy_from_untrusted(void *dst, uintptr_t src, size_t n)
{
    if (!in_ms(src, n) || !he_is_within_enclave(dst, n))
        return SGX_ERROR_INVALID_PARAMETER;
    memcpy(dst, (const void *)src, n);
    return SGX_SUCCESS;
}

long he_copy_to_untrusted(uintptr_t dst, const void *src, size_t n)
{
    if (!in_ms(dst, n))
        return SGX_ERROR_INVALID_PARAMETER;
    memcpy((void *)dst, src, n);
    return SGX_SUCCESS;
}

long he_ms_in(struct he_ms *ms, void *dst, size_t n)
{
    uint64_t in_size;
    long status = he_copy_from_untrusted(&in_size, (uintptr_t)&ms->in_size, sizeof(in_size));
    if (status)
        return status;
    if (n > in_size)
        return SGX_ERROR_INVALID_PARAMETER;
    return he_copy_from_untrusted(dst, (uintptr_t)ms->data, n);
}

long he_ms_out(struct he_ms *ms, const void *src, size_t n)
{
    long status = he_copy_to_untrusted((uintptr_t)ms->data, src, n);
    if (!status) {
        uint64_t size = n;
        status = he_copy_to_untrusted((uintptr_t)&ms->out_size, &size, sizeof(size));
    }
    return status;
}

long he_ocall(unsigned long index, const void *in, size_t in_size, void *out, size_t out_size,
              long *ret)
{
    struct he_thread_data *td = this_thread();
    struct he_ms *ms = (struct he_ms *)td->ms_start;
    struct he_ms header = {td->ms_end - td->ms_start - sizeof(header), index, in_size, 0};
    if ((long)index < 0)
        return SGX_ERROR_INVALID_FUNCTION;
    long status = he_copy_to_untrusted((uintptr_t)ms, &header, sizeof(header));
    if (!status)
        status = he_copy_to_untrusted((uintptr_t)ms->data, in, in_size);
    if (status)
        return status;
    long value = he_ocall_switch(td, (long)index, (uintptr_t)ms);
    /* back from the app: what it wrote is as untrusted as everything else in the area */
    uint64_t got;
    status = he_copy_from_untrusted(&got, (uintptr_t)&ms->out_size, sizeof(got));
    if (!status && out_size)
        status = he_copy_from_untrusted(out, (uintptr_t)ms->data, got < out_size ? got : out_size);
    if (ret)
        *ret = value;
    return status;
}

long he_report(const void *target_info, const void *report_data, void *report)
{
    /* EREPORT wants TARGETINFO and REPORT 512-byte aligned, REPORTDATA 128-byte aligned */
    uint8_t ti[SGX_TARGETINFO_SIZE] __attribute__((aligned(512)));
    uint8_t rd[SGX_REPORT_DATA_SIZE] __attribute__((aligned(128)));
    uint8_t out[512] __attribute__((aligned(512)));
    if (!he_is_within_enclave(target_info, sizeof(ti)) ||
        !he_is_within_enclave(report_data, sizeof(rd)) ||
        !he_is_within_enclave(report, SGX_REPORT_SIZE))
        return SGX_ERROR_INVALID_PARAMETER;
    memcpy(ti, target_info, sizeof(ti));
    memcpy(rd, report_data, sizeof(rd));
    __asm__ volatile("enclu" : : "a"(0L), "b"(ti), "c"(rd), "d"(out) : "memory", "cc");
    memcpy(report, out, SGX_REPORT_SIZE);
    return SGX_SUCCESS;
}

/* HE_ECALL_REPORT: the app's way to a REPORT, e.g. for the quote hypercall. */
static long report_ecall(struct he_ms *ms)
{
    struct he_report_request request;
    uint8_t report[SGX_REPORT_SIZE];
    long status = he_ms_in(ms, &request, sizeof(request));
    if (!status)
        status = he_report(request.target_info, request.report_data, report);
    if (!status)
        status = he_ms_out(ms, report, sizeof(report));
    return status;
}

/* The marshalling area named by an ECALL: header copied in once, all of it outside ELRANGE. */
static long enter_ms(struct he_thread_data *td, uintptr_t ms)
{
    struct he_ms header;
    td->ms_start = td->ms_end = 0;
    if (!he_is_outside_enclave((const void *)ms, sizeof(header)))
        return SGX_ERROR_INVALID_PARAMETER;
    memcpy(&header, (const void *)ms, sizeof(header));
    uintptr_t end = ms + sizeof(header) + header.size;
    if (end < ms || !he_is_outside_enclave((const void *)ms, end - ms))
        return SGX_ERROR_INVALID_PARAMETER;
    td->ms_start = ms;
    td->ms_end = end;
    return SGX_SUCCESS;
}

/* EXITINFO of the exception the AEX saved in SSA[cssa - 1]. */
static uint32_t ssa_exitinfo(struct he_thread_data *td, uint64_t cssa)
{
    uint64_t frame = td->ssa_frame_size * PAGE_SIZE;
    uintptr_t gpr = he_enclave_base() + td->ssa + cssa * frame - GPRSGX_SIZE;
    return *(volatile uint32_t *)(gpr + GPRSGX_EXITINFO);
}

struct he_status_info he_trts_entry(struct he_thread_data *td, uint64_t cssa, long index,
                                    uintptr_t ms)
{
    if (cssa > 0) {
        /* an exception the app could not resume from: no handler here, so abort the enclave */
        crash_exitinfo = ssa_exitinfo(td, cssa);
        crashed = 1;
        return (struct he_status_info){SGX_ERROR_ENCLAVE_CRASHED, crash_exitinfo};
    }
    if (crashed)
        return (struct he_status_info){SGX_ERROR_ENCLAVE_CRASHED, crash_exitinfo};
    if (!relocated)
        relocate();
    if (index == HE_ECMD_ORET) {
        if (!td->ocall_rsp)
            return (struct he_status_info){SGX_ERROR_INVALID_STATE, 0};
        he_oret_switch(td, (long)ms);
    }
    if (td->ocall_rsp)
        return (struct he_status_info){SGX_ERROR_ECALL_NOT_ALLOWED, 0};
    if (index != HE_ECALL_REPORT && (index < 0 || (unsigned long)index >= he_ecall_count))
        return (struct he_status_info){SGX_ERROR_INVALID_FUNCTION, 0};
    long status = enter_ms(td, ms);
    if (!status)
        status = index == HE_ECALL_REPORT ? report_ecall((struct he_ms *)ms)
                                          : he_ecall_table[index]((struct he_ms *)ms);
    td->ms_start = td->ms_end = 0;
    return (struct he_status_info){status, 0};
}
