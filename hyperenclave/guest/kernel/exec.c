/* ELF64 loader (static ET_EXEC, PT_LOAD segments) and the initial user stack. */
#include "kernel.h"
#include "sched.h"
#include "mm.h"

#define EI_NIDENT 16
#define ET_EXEC 2
#define EM_X86_64 62
#define PT_LOAD 1
#define PF_X 1
#define PF_W 2
#define PF_R 4

typedef struct {
    u8 e_ident[EI_NIDENT];
    u16 e_type, e_machine;
    u32 e_version;
    u64 e_entry, e_phoff, e_shoff;
    u32 e_flags;
    u16 e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx;
} Elf64_Ehdr;

typedef struct {
    u32 p_type, p_flags;
    u64 p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align;
} Elf64_Phdr;

/* copy `len` bytes into the (not loaded) address space of t, pages must exist */
static int copy_to_mm(struct task *t, u64 va, const void *src, u64 len)
{
    const u8 *s = src;
    while (len) {
        u64 *pte = lookup_pte(t->pml4, va);
        if (!pte)
            return -EFAULT;
        u64 chunk = MIN(len, PAGE_SIZE - (va & (PAGE_SIZE - 1)));
        memcpy((u8 *)__va(*pte & PTE_ADDR) + (va & (PAGE_SIZE - 1)), s, chunk);
        s += chunk;
        va += chunk;
        len -= chunk;
    }
    return 0;
}

/* map fresh zeroed pages over [start, end) (page aligned), keeping existing ones */
static int map_anon(struct task *t, u64 start, u64 end, bool writable)
{
    for (u64 va = start; va < end; va += PAGE_SIZE) {
        u64 *pte = lookup_pte(t->pml4, va);
        if (pte) {
            if (writable)
                *pte |= PTE_W;
            continue;
        }
        u64 pa = alloc_page();
        if (!pa)
            return -ENOMEM;
        int err = map_page(t->pml4, va, pa, PTE_U | PTE_OWNED | (writable ? PTE_W : 0));
        if (err) {
            free_page(pa);
            return err;
        }
    }
    return 0;
}

int elf_load(struct task *t, const u8 *image, u64 size, u64 *entry)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image;
    if (size < sizeof(*eh) || memcmp(eh->e_ident, "\x7f" "ELF", 4) || eh->e_ident[4] != 2 ||
        eh->e_type != ET_EXEC || eh->e_machine != EM_X86_64 ||
        eh->e_phentsize != sizeof(Elf64_Phdr) ||
        eh->e_phoff + (u64)eh->e_phnum * sizeof(Elf64_Phdr) > size)
        return -ENOEXEC;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(image + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || !ph[i].p_memsz)
            continue;
        u64 va = ph[i].p_vaddr;
        if (ph[i].p_filesz > ph[i].p_memsz || ph[i].p_offset + ph[i].p_filesz > size ||
            va + ph[i].p_memsz >= USER_SPACE_END || va < PAGE_SIZE)
            return -ENOEXEC;
        u64 start = ALIGN_DOWN(va, PAGE_SIZE), end = ALIGN_UP(va + ph[i].p_memsz, PAGE_SIZE);
        int err = map_anon(t, start, end, ph[i].p_flags & PF_W);
        if (err)
            return err;
        err = copy_to_mm(t, va, image + ph[i].p_offset, ph[i].p_filesz);
        if (err)
            return err;
        u32 vf = ((ph[i].p_flags & PF_R) ? VMA_READ : 0) | ((ph[i].p_flags & PF_W) ? VMA_WRITE : 0) |
                 ((ph[i].p_flags & PF_X) ? VMA_EXEC : 0);
        add_vma(t, start, end, vf);
    }
    *entry = eh->e_entry;
    return 0;
}

#define AT_NULL   0
#define AT_PAGESZ 6
#define AT_ENTRY  9
#define MAX_ARGS  32

/* SysV x86-64 initial stack: argc, argv[], NULL, envp[] = {NULL}, auxv, strings */
int setup_user_stack(struct task *t, int argc, const char *const argv[], u64 *sp_out)
{
    u64 top = USER_STACK_TOP, bottom = top - USER_STACK_PAGES * PAGE_SIZE;
    int err = map_anon(t, bottom, top, true);
    if (err)
        return err;
    add_vma(t, bottom, top, VMA_READ | VMA_WRITE | VMA_STACK);
    if (argc > MAX_ARGS)
        argc = MAX_ARGS;
    u64 uargv[MAX_ARGS];
    u64 sp = top;
    for (int i = argc - 1; i >= 0; i--) {
        u64 len = strlen(argv[i]) + 1;
        sp -= len;
        if ((err = copy_to_mm(t, sp, argv[i], len)))
            return err;
        uargv[i] = sp;
    }
    sp &= ~15UL;
    u64 words[MAX_ARGS + 8];
    int n = 0;
    words[n++] = (u64)argc;
    for (int i = 0; i < argc; i++)
        words[n++] = uargv[i];
    words[n++] = 0;            /* argv NULL */
    words[n++] = 0;            /* envp NULL */
    words[n++] = AT_PAGESZ;
    words[n++] = PAGE_SIZE;
    words[n++] = AT_NULL;
    words[n++] = 0;
    sp -= (u64)n * 8;
    sp &= ~15UL;               /* rsp % 16 == 0 at _start, pointing at argc */
    if ((err = copy_to_mm(t, sp, words, (u64)n * 8)))
        return err;
    *sp_out = sp;
    return 0;
}
