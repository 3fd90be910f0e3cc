"""The x86-64 guest page walk (SDM Vol. 3A 4.5), done in software on every TLB fill.

Each table read goes through a `GuestPhysical` accessor, so a second translation stage (the EPT)
applies to the walk itself, exactly as nested paging does in hardware. A `CachedStage` (the
EPT's) is read through its cache directly, without a call per entry.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Protocol

from .memory import MemoryError_

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

# Per level of the walk: (shift, bits that make the entry a leaf, bits reserved in a leaf, bits
# reserved in any entry). MAXPHYADDR = 52 here, so only the PS bit of a PML4E and the low address
# bits of a large page are reserved; a PTE is always a leaf (its bit 7 is PAT).
_LEVELS = (
    (39, 0, 0, PTE_PS),
    (30, PTE_PS, 0x3FFF_E000, 0),
    (21, PTE_PS, 0x1F_E000, 0),
    (12, -1, 0, 0),
)
_U64 = struct.Struct("<Q")


class GuestPhysical(Protocol):
    """Read and update 64-bit page-table entries at guest-physical addresses."""

    def read_u64(self, gpa: int) -> int: ...

    def write_u64(self, gpa: int, value: int) -> None: ...


class CachedStage(GuestPhysical, Protocol):
    """A `GuestPhysical` with a per-page translation cache the walk reads without a call per
    entry (the EPT's `EptTlb`): on every TLB fill the table reads are the hot path.

    `pages` maps a guest page number to (host page, R/W/X, offset of the page in `view` or -1
    if it is not RAM) and may lack any page; `miss(gpa, access)` translates the page for the
    access (raising `SecondStageFault`), caches it and returns it.
    """

    view: memoryview
    pages: dict[int, tuple[int, int, int]]

    def miss(self, gpa: int, access: int) -> tuple[int, int, int]: ...


class PageFault(Exception):
    """A guest #PF: delivered through the guest IDT with CR2 = `address`."""

    def __init__(self, address: int, error_code: int) -> None:
        super().__init__(f"#PF at {address:#x} error {error_code:#x}")
        self.address = address
        self.error_code = error_code


class PageWalk(NamedTuple):
    """One completed walk: where the page is and what the access may do."""

    gpa: int            # guest-physical address of the 4 KiB page holding the address
    perms: int          # PROT_* bits granted for this fill
    page_size: int      # 4 KiB, 2 MiB or 1 GiB leaf
    entries: tuple[tuple[int, int], ...]  # (entry gpa, entry value) per level, for debuggers


def walk(phys: GuestPhysical, cr3: int, vaddr: int, access: int, user: bool,
         cr0_wp: bool = True, nxe: bool = True) -> PageWalk:
    """`fill`, recording the entries it read (for debuggers)."""
    entries: list[tuple[int, int]] = []
    gpa, perms, size = fill(phys, cr3, vaddr, access, user, cr0_wp, nxe, entries)
    return PageWalk(gpa, perms, size, tuple(entries))


def fill(phys: GuestPhysical, cr3: int, vaddr: int, access: int, user: bool,
         cr0_wp: bool = True, nxe: bool = True, entries: list[tuple[int, int]] | None = None
         ) -> tuple[int, int, int]:
    """Translate `vaddr` for one access, setting A (and D on writes) like the hardware does:
    (guest-physical page, PROT_* bits granted, page size). `entries`, if given, gets
    (entry gpa, entry) for each level read.

    A writable page whose D bit is still clear is granted without PROT_WRITE, so the first write
    comes back as a WRITE fill and sets D exactly then. Every TLB fill runs this, so a
    `CachedStage` is read from its cache inline and the error code is built only on a fault.
    """
    if vaddr >> 47 not in (0, 0x1FFFF):
        # Non-canonical: the hardware raises #GP; a fill for it cannot happen from valid code.
        raise PageFault(vaddr, _error_code(access, user, nxe))
    pages: dict[int, tuple[int, int, int]] | None = getattr(phys, "pages", None)
    if pages is not None:                                   # a CachedStage
        view, miss, unpack = phys.view, phys.miss, _U64.unpack_from  # type: ignore[attr-defined]
    rsvd_nx = 0 if nxe else PTE_NX
    table = cr3 & ADDR_MASK
    every = -1          # AND of the entries: R/W and U/S hold only if set at every level
    some = 0            # OR of the entries: NX holds if set at any level
    for shift, leaf_bits, rsvd_leaf, rsvd in _LEVELS:
        entry_gpa = table + (((vaddr >> shift) & 0x1FF) << 3)
        if pages is None:
            entry = phys.read_u64(entry_gpa)
        else:
            page = pages.get(table >> 12)
            if page is None or not page[1] & PROT_READ:
                page = miss(table, ACCESS_READ)
            if page[2] < 0:
                raise MemoryError_(f"guest paging structure at {entry_gpa:#x} is not in RAM")
            entry = unpack(view, page[2] + (entry_gpa & 0xFFF))[0]
        if entries is not None:
            entries.append((entry_gpa, entry))
        if not entry & PTE_P:
            raise PageFault(vaddr, _error_code(access, user, nxe))
        if entry & (rsvd | rsvd_nx):
            raise PageFault(vaddr, _error_code(access, user, nxe) | PF_P | PF_RSVD)
        every &= entry
        some |= entry
        if entry & leaf_bits:
            if entry & rsvd_leaf:
                raise PageFault(vaddr, _error_code(access, user, nxe) | PF_P | PF_RSVD)
            break
        if not entry & PTE_A:
            phys.write_u64(entry_gpa, entry | PTE_A)
        table = entry & ADDR_MASK
    # Permission checks (SDM 4.6): user needs U/S at every level; writes need R/W at every level
    # for user mode and, with CR0.WP, for supervisor mode too; fetches need NX clear everywhere.
    write = access == ACCESS_WRITE
    if user and not every & PTE_US:
        raise PageFault(vaddr, _error_code(access, user, nxe) | PF_P)
    may_write = every & PTE_RW or not (user or cr0_wp)
    if write and not may_write:
        raise PageFault(vaddr, _error_code(access, user, nxe) | PF_P)
    nx = nxe and some & PTE_NX
    if nx and access == ACCESS_FETCH:
        raise PageFault(vaddr, _error_code(access, user, nxe) | PF_P)
    update = entry | PTE_A | (PTE_D if write else 0)
    if update != entry:
        phys.write_u64(entry_gpa, update)
    perms = PROT_READ
    if may_write and update & PTE_D:
        perms |= PROT_WRITE
    if not nx:
        perms |= PROT_EXEC
    size = 1 << shift
    return (entry & ADDR_MASK & -size) | (vaddr & (size - 1) & ~0xFFF), perms, size


def _error_code(access: int, user: bool, nxe: bool) -> int:
    """The #PF error code's W, U and I/D bits for this access (P and RSVD are the fault's)."""
    return ((PF_W if access == ACCESS_WRITE else 0) | (PF_U if user else 0)
            | (PF_I if access == ACCESS_FETCH and nxe else 0))
