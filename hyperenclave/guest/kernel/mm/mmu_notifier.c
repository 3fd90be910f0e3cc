/*
 * MMU notifiers, like Linux's: a driver that mirrors part of a process's page table elsewhere
 * (the enclave driver, whose monitor maps the app's shared memory into the enclave's own page
 * table) hears before and after the kernel changes that part, so that the mirror never keeps
 * a page the process gave back. munmap is the event that changes user mappings here.
 */
#include "kernel.h"
#include "mm.h"

static struct mmu_notifier *notifiers;

void mmu_notifier_register(struct mmu_notifier *mn, u64 *pml4)
{
    mn->pml4 = pml4;
    mn->next = notifiers;
    notifiers = mn;
}

void mmu_notifier_unregister(struct mmu_notifier *mn)
{
    for (struct mmu_notifier **p = &notifiers; *p; p = &(*p)->next) {
        if (*p == mn) {
            *p = mn->next;
            return;
        }
    }
}

void mmu_notifier_invalidate_range_start(u64 *pml4, u64 start, u64 end)
{
    for (struct mmu_notifier *mn = notifiers; mn; mn = mn->next)
        if (mn->pml4 == pml4)
            mn->ops->invalidate_range_start(mn, start, end);
}

void mmu_notifier_invalidate_range_end(u64 *pml4, u64 start, u64 end)
{
    for (struct mmu_notifier *mn = notifiers; mn; mn = mn->next)
        if (mn->pml4 == pml4)
            mn->ops->invalidate_range_end(mn, start, end);
}
