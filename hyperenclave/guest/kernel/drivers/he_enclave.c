/*
 * /dev/hyper_enclave: building and destroying enclaves for user space (HyperEnclave's driver
 * ioctls ENCLAVE_CREATE/ADD_PAGE/INIT; the ABI is in include/he_ioctl.h).
 *
 * The driver owns the EPC (hyper_enclave_layout()) and hands out its pages from a bitmap; the
 * monitor does the SGX leaves (HC_ENCLAVE_*, include/hyperenclave.h) on structures the driver
 * builds in kernel memory, so no user pointer reaches the monitor. Each open file holds at
 * most one enclave; its last close (or the process's exit) destroys it and frees its EPC.
 * State checks (EADD or EINIT after EINIT, ...) are left to the monitor, so each cause gets the
 * SGX leaf's own answer.
 *
 * Shared memory (HyperEnclave's shared_mem.c): ADD/REMOVE_SHARED_MEMORY call HC 0x101/0x102;
 * while a range is shared, an mmu notifier on the opener's page table brackets every munmap
 * that touches it with HC 0x103 (per shared range it overlaps, clipped to it) and HC 0x104, so
 * the enclave never keeps a page the process gave back; it faults the new page in later.
 */
#include "kernel.h"
#include "fs.h"
#include "mm.h"
#include "sched.h"
#include "hyperenclave.h"
#include "hyper_enclave.h"
#include "he_ioctl.h"

/* An added page: where the process sees it and the EPC page behind it. */
struct he_encl_page {
    u64 addr;
    u64 epc;
};

#define HE_MAX_SHARED 8

struct he_encl {
    struct mmu_notifier mn;     /* first: on the opener's page table while memory is shared */
    u64 *pml4;                  /* the opener's page table: ADD_PAGE maps pages into it */
    u64 map_start, map_end;     /* the mmap()ed range ELRANGE must lie in; 0 before mmap */
    u64 secs_epc;               /* 0 before ENCLAVE_CREATE succeeded */
    u64 base, size;             /* ELRANGE */
    bool initialized;
    struct he_encl_page *pages; /* alloc_pages()ed, grown by doubling */
    u64 nr_pages, max_pages;
    struct { u64 start, end; } shared[HE_MAX_SHARED];   /* ranges HC 0x101 accepted */
    int nr_shared;
    int invalidating;           /* HC 0x103s of the current notifier call, each ended by 0x104 */
};

/* ---- the EPC page allocator: a bitmap, bit set = in use ---- */
static struct {
    u64 phys, nr;               /* EPC pages [phys, phys + nr * PAGE_SIZE) */
    u64 *bitmap;
    u64 bitmap_pages;
    u64 used;
} epc;

/* Follow the monitor's current EPC; only possible while no EPC page is in use. */
static int epc_bind(const struct he_layout *l)
{
    u64 nr = l->epc_size / PAGE_SIZE;
    if (epc.bitmap && epc.phys == l->epc_phys && epc.nr == nr)
        return 0;
    if (epc.bitmap)
        free_pages(__pa(epc.bitmap), epc.bitmap_pages);
    epc.bitmap_pages = ALIGN_UP(ALIGN_UP(nr, 64) / 8, PAGE_SIZE) / PAGE_SIZE;
    u64 pa = alloc_pages(epc.bitmap_pages);      /* zeroed: all free */
    if (!pa) {
        printk("hyper_enclave: no memory for the EPC bitmap\n");
        epc.bitmap = NULL;
        return -ENOMEM;
    }
    epc.bitmap = __va(pa);
    epc.phys = l->epc_phys;
    epc.nr = nr;
    printk("hyper_enclave: EPC [mem %#lx-%#lx]: %lu pages for enclaves\n", epc.phys,
           epc.phys + nr * PAGE_SIZE - 1, nr);
    return 0;
}

/* An EPC page's physical address, or 0 when the EPC is exhausted. */
static u64 epc_alloc(void)
{
    if (!epc.used && epc_bind(hyper_enclave_layout()))
        return 0;
    for (u64 w = 0; w < ALIGN_UP(epc.nr, 64) / 64; w++) {
        if (epc.bitmap[w] == ~0UL)
            continue;
        u64 bit = w * 64 + (u64)__builtin_ctzl(~epc.bitmap[w]);
        if (bit >= epc.nr)
            break;
        epc.bitmap[w] |= 1UL << (bit % 64);
        epc.used++;
        return epc.phys + bit * PAGE_SIZE;
    }
    printk("hyper_enclave: out of EPC: all %lu pages are in use\n", epc.nr);
    return 0;
}

static void epc_free(u64 pa)
{
    u64 bit = (pa - epc.phys) / PAGE_SIZE;
    epc.bitmap[bit / 64] &= ~(1UL << (bit % 64));
    epc.used--;
}

/* ---- kernel copies of what the leaves read (single CPU, interrupts off: one at a time) ---- */
static struct sgx_secs secs __aligned(PAGE_SIZE);
static u8 src_page[PAGE_SIZE] __aligned(PAGE_SIZE);
static u8 sigstruct[PAGE_SIZE] __aligned(PAGE_SIZE);
static struct sgx_secinfo secinfo;
static struct he_pageinfo pageinfo;

/*
 * A leaf's answer as the ioctl's result: 0, a negative errno (as is), ENCLS_FAULT_FLAG | vector
 * (#GP -> -EINVAL, #PF -> -EFAULT), or a positive SGX error code, returned as is like Linux's
 * EINIT. Every failure is printed.
 */
static long encls_result(const char *leaf, long ret)
{
    if (!ret)
        return 0;
    if (ret < 0) {
        printk("hyper_enclave: %s failed: error %ld\n", leaf, ret);
        return ret;
    }
    if (ret & HE_ENCLS_FAULT_FLAG) {
        long vector = ret & ~(long)HE_ENCLS_FAULT_FLAG;
        printk("hyper_enclave: %s failed: %s (vector %ld)\n", leaf, vector == 14 ? "#PF" : "#GP",
               vector);
        return vector == 14 ? -EFAULT : -EINVAL;
    }
    printk("hyper_enclave: %s failed: %s (%ld)\n", leaf, sgx_error_name(ret), ret);
    return ret;
}

static int he_open(struct file *f)
{
    if (!hyper_enclave_enabled())
        return -ENODEV;
    u64 pa = alloc_page();
    if (!pa)
        return -ENOMEM;
    struct he_encl *encl = __va(pa);
    encl->pml4 = current->pml4;
    f->private_data = encl;
    return 0;
}

/* Reserve the range ELRANGE will be carved from; pages come with ADD_PAGE. */
static long he_mmap(struct file *f, u64 addr, u64 len, int prot, int flags, u64 pgoff)
{
    (void)prot;
    struct he_encl *encl = f->private_data;
    if (!hyper_enclave_enabled())
        return -ENODEV;
    if (!(flags & MAP_SHARED) || pgoff)
        return -EINVAL;
    if (encl->map_end)
        return -EBUSY;
    encl->map_start = addr;
    encl->map_end = addr + len;
    return 0;
}

/* Enclave ranges come from one area shared by all processes, so two processes' ELRANGEs never
 * overlap (the monitor refuses overlapping ones); 1 GiB apart, never reused. */
#define HE_ELRANGE_AREA     0x0000400000000000UL
#define HE_ELRANGE_AREA_END 0x0000700000000000UL
static u64 next_elrange = HE_ELRANGE_AREA;

static u64 he_get_unmapped_area(struct file *f, u64 len)
{
    (void)f;
    u64 addr = next_elrange, step = ALIGN_UP(len, 1UL << 30);
    if (addr + step > HE_ELRANGE_AREA_END)
        return 0;                           /* exhausted: the process's own next range */
    next_elrange += step;
    return addr;
}

static long he_ioc_create(struct he_encl *encl, const struct he_enclave_create *arg)
{
    if (encl->secs_epc || !encl->map_end)
        return -EINVAL;
    if (copy_from_user(&secs, (const void *)arg->src, sizeof(secs)))
        return -EFAULT;
    if (secs.base < encl->map_start || secs.base >= encl->map_end ||
        secs.size > encl->map_end - secs.base) {
        printk("hyper_enclave: ELRANGE [%#lx+%#lx] is outside the mapping [%#lx-%#lx]\n",
               secs.base, secs.size, encl->map_start, encl->map_end - 1);
        return -EINVAL;
    }
    u64 page = epc_alloc();
    if (!page)
        return -ENOMEM;
    secinfo = (struct sgx_secinfo){.flags = SGX_PAGE_TYPE_SECS << SGX_SECINFO_TYPE_SHIFT};
    pageinfo = (struct he_pageinfo){.srcpge = (u64)&secs, .secinfo = (u64)&secinfo};
    long ret = encls_result("ECREATE", hypercall2(HC_ENCLAVE_CREATE, (u64)&pageinfo, page));
    if (ret) {
        epc_free(page);
        return ret;
    }
    encl->secs_epc = page;
    encl->base = secs.base;
    encl->size = secs.size;
    return 0;
}

/* Room in encl->pages for one more page (grown by doubling); 0 or -ENOMEM. */
static int reserve_page_slot(struct he_encl *encl)
{
    if (encl->nr_pages < encl->max_pages)
        return 0;
    u64 bytes = MAX(PAGE_SIZE, 2 * encl->max_pages * sizeof(*encl->pages));
    u64 pa = alloc_pages(bytes / PAGE_SIZE);
    if (!pa)
        return -ENOMEM;
    if (encl->pages) {
        memcpy(__va(pa), encl->pages, encl->nr_pages * sizeof(*encl->pages));
        free_pages(__pa(encl->pages), encl->max_pages * sizeof(*encl->pages) / PAGE_SIZE);
    }
    encl->pages = __va(pa);
    encl->max_pages = bytes / sizeof(*encl->pages);
    return 0;
}

/* EADD (+EEXTEND with HE_ADD_PAGE_EXTEND) the user page at `src` at `addr`, with the SECINFO
 * already in `secinfo`; map it into the process. */
static long add_page(struct he_encl *encl, u64 addr, u64 src, u64 flags)
{
    if (copy_from_user(src_page, (const void *)src, PAGE_SIZE))
        return -EFAULT;
    /* room first: an EPC page the monitor took must always be remembered */
    u64 page = reserve_page_slot(encl) ? 0 : epc_alloc();
    if (!page)
        return -ENOMEM;
    pageinfo = (struct he_pageinfo){.linaddr = addr, .srcpge = (u64)src_page,
                                    .secinfo = (u64)&secinfo, .secs = encl->secs_epc};
    long ret = encls_result("EADD", hypercall2(HC_ENCLAVE_ADD_PAGE, (u64)&pageinfo,
                                               page | (flags & HE_ADD_PAGE_EXTEND)));
    if (ret) {
        epc_free(page);
        return ret;
    }
    encl->pages[encl->nr_pages++] = (struct he_encl_page){addr, page};
    /* the TCS too is writable in the process's page table (EENTER checks it) */
    u64 type = secinfo.flags >> SGX_SECINFO_TYPE_SHIFT & 0xff;
    bool writable = (secinfo.flags & SGX_SECINFO_W) || type == SGX_PAGE_TYPE_TCS;
    u64 *old = lookup_pte(encl->pml4, addr);
    if (!old)
        return map_page(encl->pml4, addr, page, PTE_U | (writable ? PTE_W : 0));
    /* anonymous memory mapped there meanwhile: it goes (and any enclave sharing it hears) */
    mmu_notifier_invalidate_range_start(encl->pml4, addr, addr + PAGE_SIZE);
    if (*old & PTE_OWNED)
        free_page(*old & PTE_ADDR);
    ret = map_page(encl->pml4, addr, page, PTE_U | (writable ? PTE_W : 0));
    mmu_notifier_invalidate_range_end(encl->pml4, addr, addr + PAGE_SIZE);
    return ret;
}

static long he_ioc_add_page(struct he_encl *encl, const struct he_enclave_add_page *arg)
{
    if (!encl->secs_epc || arg->flags & ~(u64)HE_ADD_PAGE_EXTEND)
        return -EINVAL;
    if (copy_from_user(&secinfo, (const void *)arg->secinfo, sizeof(secinfo)))
        return -EFAULT;
    return add_page(encl, arg->addr, arg->src, arg->flags);
}

/* Linux's SGX_IOC_ENCLAVE_ADD_PAGES: a run of pages with one SECINFO, looped in the kernel;
 * the number added goes back in `count`, also when one fails. */
static long he_ioc_add_pages(struct he_encl *encl, const struct he_enclave_add_pages *arg,
                             struct he_enclave_add_pages *uarg)
{
    if (!encl->secs_epc || arg->flags & ~(u64)HE_ADD_PAGE_EXTEND || !arg->length ||
        arg->length % PAGE_SIZE)
        return -EINVAL;
    if (copy_from_user(&secinfo, (const void *)arg->secinfo, sizeof(secinfo)))
        return -EFAULT;
    long ret = 0;
    u64 count = 0;
    while (!ret && count < arg->length / PAGE_SIZE) {
        ret = add_page(encl, arg->addr + count * PAGE_SIZE, arg->src + count * PAGE_SIZE,
                       arg->flags);
        count += !ret;
    }
    if (copy_to_user(&uarg->count, &count, sizeof(count)))
        return -EFAULT;
    return ret;
}

static long he_ioc_init(struct he_encl *encl, const struct he_enclave_init *arg)
{
    if (!encl->secs_epc || arg->addr != encl->base)
        return -EINVAL;
    if (copy_from_user(sigstruct, (const void *)arg->sigstruct, SGX_SIGSTRUCT_SIZE))
        return -EFAULT;
    long ret = encls_result("EINIT", hypercall2(HC_ENCLAVE_INIT, encl->secs_epc, (u64)sigstruct));
    if (!ret)
        encl->initialized = true;
    return ret;
}

/* ---- shared memory: HC 0x101-0x104 ---- */
static void shared_invalidate_start(struct mmu_notifier *mn, u64 start, u64 end)
{
    struct he_encl *encl = (struct he_encl *)mn;
    for (int i = 0; i < encl->nr_shared; i++) {
        u64 s = MAX(start, encl->shared[i].start), e = MIN(end, encl->shared[i].end);
        if (s >= e)
            continue;
        u64 range[3] = {encl->secs_epc, s, e};
        long ret = hypercall2(HC_SHARED_MEMORY_INVALID_START, (unsigned long)range, 0);
        if (ret)
            printk("hyper_enclave: shared memory [%#lx-%#lx] invalidation failed: error %ld\n",
                   s, e - 1, ret);
        else
            encl->invalidating++;
    }
}

static void shared_invalidate_end(struct mmu_notifier *mn, u64 start, u64 end)
{
    (void)start, (void)end;
    struct he_encl *encl = (struct he_encl *)mn;
    for (; encl->invalidating; encl->invalidating--)
        hypercall2(HC_SHARED_MEMORY_INVALID_END, encl->secs_epc, 0);
}

static const struct mmu_notifier_ops shared_memory_mn_ops = {
    .invalidate_range_start = shared_invalidate_start,
    .invalidate_range_end = shared_invalidate_end,
};

static long he_ioc_add_shared_memory(struct he_encl *encl,
                                     const struct he_enclave_shared_memory *arg)
{
    if (!encl->initialized)
        return -EINVAL;
    if (encl->nr_shared == HE_MAX_SHARED)
        return -ENOSPC;
    u64 range[3] = {encl->secs_epc, arg->addr, arg->addr + arg->size};
    long ret = hypercall2(HC_SHARED_MEMORY_ADD, (unsigned long)range, 0);
    if (ret) {
        printk("hyper_enclave: ADD_SHARED_MEMORY [%#lx+%#lx] failed: error %ld\n", arg->addr,
               arg->size, ret);
        return ret;
    }
    if (!encl->nr_shared) {
        encl->mn.ops = &shared_memory_mn_ops;
        mmu_notifier_register(&encl->mn, encl->pml4);
    }
    encl->shared[encl->nr_shared].start = range[1];
    encl->shared[encl->nr_shared++].end = range[2];
    return 0;
}

static long he_ioc_remove_shared_memory(struct he_encl *encl,
                                        const struct he_enclave_shared_memory *arg)
{
    if (!encl->initialized)
        return -EINVAL;
    u64 range[3] = {encl->secs_epc, arg->addr, arg->addr + arg->size};
    long ret = hypercall2(HC_SHARED_MEMORY_REMOVE, (unsigned long)range, 0);
    if (ret) {
        printk("hyper_enclave: REMOVE_SHARED_MEMORY [%#lx+%#lx] failed: error %ld\n",
               arg->addr, arg->size, ret);
        return ret;
    }
    for (int i = 0; i < encl->nr_shared; i++) {
        if (encl->shared[i].start == range[1] && encl->shared[i].end == range[2]) {
            encl->shared[i] = encl->shared[--encl->nr_shared];
            break;
        }
    }
    if (!encl->nr_shared)
        mmu_notifier_unregister(&encl->mn);
    return 0;
}

static long he_ioctl(struct file *f, unsigned int cmd, unsigned long uarg)
{
    union {
        struct he_enclave_create create;
        struct he_enclave_add_page add;
        struct he_enclave_add_pages add_pages;
        struct he_enclave_init init;
        struct he_enclave_shared_memory shared;
        struct he_exception_fixup fixup;
    } arg;
    if (!hyper_enclave_enabled())
        return -ENODEV;
    if (cmd != HE_IOC_ENCLAVE_CREATE && cmd != HE_IOC_ENCLAVE_ADD_PAGE &&
        cmd != HE_IOC_ENCLAVE_INIT && cmd != HE_IOC_ADD_SHARED_MEMORY &&
        cmd != HE_IOC_REMOVE_SHARED_MEMORY && cmd != HE_IOC_SET_EXCEPTION_FIXUP &&
        cmd != HE_IOC_ENCLAVE_ADD_PAGES)
        return -ENOTTY;
    if (copy_from_user(&arg, (const void *)uarg, _IOC_SIZE(cmd)))
        return -EFAULT;
    if (cmd == HE_IOC_ENCLAVE_CREATE)
        return he_ioc_create(f->private_data, &arg.create);
    if (cmd == HE_IOC_ENCLAVE_ADD_PAGE)
        return he_ioc_add_page(f->private_data, &arg.add);
    if (cmd == HE_IOC_ENCLAVE_ADD_PAGES)
        return he_ioc_add_pages(f->private_data, &arg.add_pages, (void *)uarg);
    if (cmd == HE_IOC_ADD_SHARED_MEMORY)
        return he_ioc_add_shared_memory(f->private_data, &arg.shared);
    if (cmd == HE_IOC_REMOVE_SHARED_MEMORY)
        return he_ioc_remove_shared_memory(f->private_data, &arg.shared);
    if (cmd == HE_IOC_SET_EXCEPTION_FIXUP) {
        current->sgx_aep = arg.fixup.aep;
        current->sgx_fixup = arg.fixup.handler;
        return 0;
    }
    return he_ioc_init(f->private_data, &arg.init);
}

bool he_enclave_fixup_exception(struct pt_regs *r)
{
    if (!current || !current->sgx_fixup || r->rip != current->sgx_aep)
        return false;
    r->rdi = r->vector;
    r->rsi = r->error_code;
    r->rdx = r->vector == 14 ? read_cr2() : 0;
    r->rip = current->sgx_fixup;
    return true;
}

/* Destroy the enclave: the monitor scrubs its EPC pages, the process loses their mappings. */
static void he_destroy(struct he_encl *encl)
{
    long ret = encls_result("PREPARE_DESTROY",
                            hypercall2(HC_ENCLAVE_PREPARE_DESTROY, encl->secs_epc, 0));
    if (!ret)
        ret = encls_result("FINISH_DESTROY",
                           hypercall2(HC_ENCLAVE_FINISH_DESTROY, encl->secs_epc, 0));
    if (ret) {
        printk("hyper_enclave: enclave [%#lx-%#lx] not destroyed; its %lu EPC pages stay "
               "in use\n", encl->base, encl->base + encl->size - 1, encl->nr_pages + 1);
        return;
    }
    for (u64 i = 0; i < encl->nr_pages; i++) {
        const struct he_encl_page *p = &encl->pages[i];
        u64 *pte = lookup_pte(encl->pml4, p->addr);
        if (pte && (*pte & PTE_ADDR) == p->epc)
            unmap_page(encl->pml4, p->addr);
        epc_free(p->epc);
    }
    epc_free(encl->secs_epc);
    printk("hyper_enclave: enclave [%#lx-%#lx] destroyed, %lu EPC pages freed\n", encl->base,
           encl->base + encl->size - 1, encl->nr_pages + 1);
}

static int he_release(struct file *f)
{
    struct he_encl *encl = f->private_data;
    if (encl->nr_shared)
        mmu_notifier_unregister(&encl->mn);
    if (encl->secs_epc)
        he_destroy(encl);
    if (encl->pages)
        free_pages(__pa(encl->pages), encl->max_pages * sizeof(*encl->pages) / PAGE_SIZE);
    free_page(__pa(encl));
    return 0;
}

static const struct file_operations he_enclave_fops = {
    .open = he_open,
    .ioctl = he_ioctl,
    .mmap = he_mmap,
    .get_unmapped_area = he_get_unmapped_area,
    .release = he_release,
};

static int he_enclave_init(void)
{
    return register_device("/dev/hyper_enclave", &he_enclave_fops, NULL);
}
device_initcall(he_enclave_init);
