"""The x86-64 guest page walk (SDM Vol. 3A 4.5), done in software on every TLB fill.

Each table read goes through a `GuestPhysical` accessor, so a second translation stage (the EPT)
applies to the walk itself, exactly as nested paging does in hardware.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

# Page-table entry bits.
PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_PWT = 1 << 3
PTE_PCD = 1 << 4
PTE_A = 1 << 5
PTE_D = 1 << 6
PTE_PS = 1 << 7
PTE_G = 1 << 8
PTE_NX = 1 << 63
ADDR_MASK = 0x000F_FFFF_FFFF_F000

# Control-register bits the walk depends on.
CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

# #PF error-code bits (SDM 4.7).
PF_P = 1 << 0
PF_W = 1 << 1
PF_U = 1 << 2
PF_RSVD = 1 << 3
PF_I = 1 << 4

# Access kinds, numbered as Unicorn's UC_MEM_READ/WRITE/FETCH.
ACCESS_READ, ACCESS_WRITE, ACCESS_FETCH = 16, 17, 18

# Result permissions, numbered as Unicorn's UC_PROT_*.
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4

_LEVEL_SHIFTS = (39, 30, 21, 12)
_PAGE_SIZE_AT = {30: 1 << 30, 21: 1 << 21, 12: 1 << 12}
# Bits that must be zero (MAXPHYADDR = 52 here, so only the PS bit in a PML4E and the low bits of
# large-page addresses are reserved).
_RSVD_LARGE = {30: 0x3FFF_E000, 21: 0x1F_E000}


class GuestPhysical(Protocol):
    """Read and update 64-bit page-table entries at guest-physical addresses."""

    def read_u64(self, gpa: int) -> int: ...

    def write_u64(self, gpa: int, value: int) -> None: ...


class PageFault(Exception):
    """A guest #PF: delivered through the guest IDT with CR2 = `address`."""

    def __init__(self, address: int, error_code: int) -> None:
        super().__init__(f"#PF at {address:#x} error {error_code:#x}")
        self.address = address
        self.error_code = error_code


class PageWalk(NamedTuple):
    """One completed walk: where the page is and what the access may do (a tuple: the TLB
    fill builds one per miss)."""

    gpa: int            # guest-physical address of the 4 KiB page holding the address
    perms: int          # PROT_* bits granted for this fill
    page_size: int      # 4 KiB, 2 MiB or 1 GiB leaf
    entries: tuple[tuple[int, int], ...]  # (entry gpa, entry value) per level, for debuggers


def walk(phys: GuestPhysical, cr3: int, vaddr: int, access: int, user: bool,
         cr0_wp: bool = True, nxe: bool = True) -> PageWalk:
    """Translate `vaddr` for one access, setting A (and D on writes) like the hardware does.

    A writable page whose D bit is still clear is granted without PROT_WRITE, so the first write
    comes back as a WRITE fill and sets D exactly then.
    """
    write = access == ACCESS_WRITE
    fetch = access == ACCESS_FETCH
    err = (PF_W if write else 0) | (PF_U if user else 0) | (PF_I if fetch and nxe else 0)
    if vaddr >> 47 not in (0, 0x1FFFF):
        # Non-canonical: the hardware raises #GP; a fill for it cannot happen from valid code.
        raise PageFault(vaddr, err)
    table = cr3 & ADDR_MASK
    rw = us = True
    nx = False
    entries: list[tuple[int, int]] = []
    for shift in _LEVEL_SHIFTS:
        entry_gpa = table + ((vaddr >> shift) & 0x1FF) * 8
        entry = phys.read_u64(entry_gpa)
        entries.append((entry_gpa, entry))
        if not entry & PTE_P:
            raise PageFault(vaddr, err)
        if (nxe is False and entry & PTE_NX) or (shift == 39 and entry & PTE_PS):
            raise PageFault(vaddr, err | PF_P | PF_RSVD)
        rw = rw and bool(entry & PTE_RW)
        us = us and bool(entry & PTE_US)
        nx = nx or bool(entry & PTE_NX)
        leaf = shift == 12 or (shift in (30, 21) and entry & PTE_PS)
        if leaf:
            if shift != 12 and entry & _RSVD_LARGE[shift]:
                raise PageFault(vaddr, err | PF_P | PF_RSVD)
            break
        if not entry & PTE_A:
            phys.write_u64(entry_gpa, entry | PTE_A)
        table = entry & ADDR_MASK
    size = _PAGE_SIZE_AT[shift]
    # Permission checks (SDM 4.6): user needs U/S at every level; writes need R/W at every level
    # for user mode and, with CR0.WP, for supervisor mode too; fetches need NX clear everywhere.
    if user and not us:
        raise PageFault(vaddr, err | PF_P)
    may_write = rw or (not user and not cr0_wp)
    if write and not may_write:
        raise PageFault(vaddr, err | PF_P)
    if fetch and nx and nxe:
        raise PageFault(vaddr, err | PF_P)
    leaf_gpa, leaf = entries[-1]
    update = leaf | PTE_A | (PTE_D if write else 0)
    if update != leaf:
        phys.write_u64(leaf_gpa, update)
    perms = PROT_READ
    if may_write and update & PTE_D:
        perms |= PROT_WRITE
    if not (nx and nxe):
        perms |= PROT_EXEC
    base = (leaf & ADDR_MASK) & ~(size - 1)
    gpa = base + (vaddr & (size - 1) & ~0xFFF)
    return PageWalk(gpa, perms, size, tuple(entries))
