"""Extended page tables (EPT) in the real Intel format (SDM Vol. 3C, 29.3 "The Extended Page Table Mechanism").

The tables live in the emulated machine's physical memory (normally monitor memory), in 4 KiB
frames taken from a `FrameAllocator`, as 64-bit little-endian entries exactly as the hardware
reads them. The memory is the only state: `translate` walks the tables with `read`s of the
entries every time, so a raw `write_u64` into a table is seen by the next walk (just as on real
hardware, where software must INVEPT after changing an entry; `Ept.invalidate_hooks` is the
INVEPT-like signal for code that caches translations).

Entry format (all levels; "leaf" = PTE, or PDE/PDPTE with bit 7 set):

    bit  0      R    read
    bit  1      W    write
    bit  2      X    supervisor execute
    bits 5:3    memory type (leaves only; UC=0 WC=1 WT=4 WP=5 WB=6; 2, 3, 7 are invalid)
    bit  6      ignore PAT (leaves only)
    bit  7      page size: 1 GiB page in a PDPTE, 2 MiB page in a PDE; reserved in a PML4E
    bit  8      accessed          bit 9   dirty (leaves)
    bits 51:12  physical address (of the next table or of the page)
    bit  63     suppress #VE (leaves)

EPTP: memory type bits 2:0 (WB), page-walk length - 1 in bits 5:3 (3: four levels), A/D enable
bit 6, PML4 address bits 51:12.

An entry is present when any of bits 2:0 is set. A misconfiguration (SDM 29.3.3.1) is a present
entry that is write-only or write/execute (W without R), execute-only (we report that the CPU
does NOT support execute-only translations), has a reserved bit set (bits 7:3 of a PML4E or of
a non-leaf PDPTE/PDE, bits 29:12 of a 1 GiB page, bits 20:12 of a 2 MiB page, address bits
51:MAXPHYADDR of any entry), or is the leaf and has memory type 2, 3 or 7.

Levels are numbered as in the SDM walk: 4 = PML4, 3 = PDPT (1 GiB leaves), 2 = PD (2 MiB
leaves), 1 = PT (4 KiB leaves). `translate` returns the level of the leaf it used.
"""

from __future__ import annotations

import struct
import sys
from array import array
from enum import Enum, IntEnum, IntFlag
from typing import Callable, Iterable, Iterator, NamedTuple

from hyperenclave.platform.cpu import SecondStageFault
from hyperenclave.platform.memory import (
    GiB,
    KiB,
    MiB,
    PAGE_SIZE,
    FrameAllocator,
    MemoryError_,
    PhysicalMemory,
)

__all__ = [
    "Access", "READ", "WRITE", "FETCH", "EptPerm", "MemType",
    "EptFault", "EptViolation", "EptMisconfig", "MisconfigReason",
    "EptMapping", "EptRun", "EptWalker", "Ept",
    "make_eptp", "parse_eptp", "translate_eptp", "build_identity_ept",
    "TPM_CRB_MMIO", "MAXPHYADDR", "LEVEL_PAGE_SIZE",
]

# --------------------------------------------------------------------------------------------
# Encoding constants
# --------------------------------------------------------------------------------------------

MAXPHYADDR = 46
"""Physical-address width the emulated CPU reports (CPUID 0x80000008); EPT address bits above it are reserved."""

GPA_LIMIT = 1 << 48
"""A 4-level walk translates guest-physical bits 47:0."""

EPT_R = 1 << 0
EPT_W = 1 << 1
EPT_X = 1 << 2
EPT_PERM_MASK = 0x7
EPT_MEMTYPE_SHIFT = 3
EPT_MEMTYPE_MASK = 0x7 << EPT_MEMTYPE_SHIFT
EPT_IPAT = 1 << 6
EPT_PAGE_SIZE = 1 << 7
EPT_ACCESSED = 1 << 8
EPT_DIRTY = 1 << 9
EPT_SUPPRESS_VE = 1 << 63
EPT_ADDR_MASK = ((1 << 52) - 1) & ~0xFFF          # bits 51:12

EPTP_MEMTYPE_MASK = 0x7
EPTP_WALK_SHIFT = 3
EPTP_WALK_MASK = 0x7 << EPTP_WALK_SHIFT
EPTP_AD_ENABLE = 1 << 6
EPTP_RESERVED = 0xF80 | (EPT_ADDR_MASK & ~((1 << MAXPHYADDR) - 1)) | (0xFFF << 52)  # bits 11:7 (no SSS/MBEC), 63:MAXPHYADDR

LEVEL_SHIFT = {1: 12, 2: 21, 3: 30, 4: 39}
LEVEL_PAGE_SIZE = {1: 4 * KiB, 2: 2 * MiB, 3: 1 * GiB}
"""Size mapped by a leaf at each level (a PML4E is never a leaf)."""

_PHYS_RSVD = EPT_ADDR_MASK & ~((1 << MAXPHYADDR) - 1)            # bits 51:MAXPHYADDR
_RSVD_TABLE = 0xF8 | _PHYS_RSVD                                   # non-leaf: bits 7:3
_RSVD_LEAF = {
    3: (((1 << 30) - 1) & ~0xFFF) | _PHYS_RSVD,                   # 1 GiB page: bits 29:12
    2: (((1 << 21) - 1) & ~0xFFF) | _PHYS_RSVD,                   # 2 MiB page: bits 20:12
    1: _PHYS_RSVD,
}
_BAD_PERMS = (1 << 0b010) | (1 << 0b110) | (1 << 0b100)          # W-only, WX, X-only (no exec-only cap)
_BAD_MEMTYPES = (1 << 2) | (1 << 3) | (1 << 7)

# Per-level walk data: (level, shift, bit that makes the entry a leaf, reserved bits if a
# leaf, mask of the page offset). The "leaf bit" of a PT is all ones (every present PTE is a
# leaf); a PML4E is never a leaf (its bit 7 is reserved). A table pointer must have R (W-only,
# WX and X-only misconfigure it) and no bit of _RSVD_TABLE set: one test, _TABLE_CHECK.
_WALK = (
    (4, 39, 0, 0, 0),
    (3, 30, EPT_PAGE_SIZE, _RSVD_LEAF[3], GiB - 1),
    (2, 21, EPT_PAGE_SIZE, _RSVD_LEAF[2], 2 * MiB - 1),
    (1, 12, -1, _RSVD_LEAF[1], PAGE_SIZE - 1),
)
_TABLE_CHECK = _RSVD_TABLE | EPT_R
# Bit i is set if a leaf whose bits 5:0 are i has valid R/W/X and memory type.
_LEAF_OK = sum(1 << i for i in range(64) if i & EPT_PERM_MASK and not (_BAD_PERMS >> (i & 7)) & 1
               and not (_BAD_MEMTYPES >> (i >> 3)) & 1)

_U64 = struct.Struct("<Q")
_TABLE = struct.Struct("<512Q")
_ZERO_TABLE = bytes(PAGE_SIZE)
_LITTLE = sys.byteorder == "little"


class Access(IntEnum):
    """The kind of access being translated; the value is the bit number of the permission it needs."""

    READ = 0
    WRITE = 1
    FETCH = 2


READ, WRITE, FETCH = Access.READ, Access.WRITE, Access.FETCH


class EptPerm(IntFlag):
    """EPT permission bits 2:0."""

    NONE = 0
    R = EPT_R
    W = EPT_W
    X = EPT_X
    RW = EPT_R | EPT_W
    RX = EPT_R | EPT_X
    RWX = EPT_R | EPT_W | EPT_X

    def __str__(self) -> str:
        return "".join(c if self & b else "-" for c, b in (("r", EPT_R), ("w", EPT_W), ("x", EPT_X)))


class MemType(IntEnum):
    """EPT memory types (SDM 29.3.7); 2, 3 and 7 are reserved and misconfigure a leaf."""

    UC = 0
    WC = 1
    WT = 4
    WP = 5
    WB = 6


_PERMS = tuple(EptPerm(i) for i in range(8))
_MEMTYPES = {int(m): m for m in MemType}
_ACCESS = tuple(Access)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

class EptFault(SecondStageFault):
    """Base class of the two EPT-induced VM exits (a second-stage fault to the vCPU)."""


class EptViolation(EptFault):
    """EPT violation (VM-exit reason 48).

    `perms_found` is the logical AND of bits 2:0 of the entries the walk used, as the exit
    qualification reports them (0 when the walk reached a non-present entry); `level` is the
    level of the entry at which the walk stopped.
    """

    def __init__(self, gpa: int, access: Access, perms_found: EptPerm, level: int = 0) -> None:
        self.gpa = gpa
        self.access = Access(access)
        self.perms_found = EptPerm(perms_found)
        self.level = level
        what = "not present" if not self.perms_found else f"perms {self.perms_found}"
        super().__init__(f"EPT violation: {self.access.name} at GPA {gpa:#x} ({what}, level {level})")

    @property
    def exit_qualification(self) -> int:
        """Exit qualification bits 0-5 (access kind, then the R/W/X found); GLA bits left 0."""
        return (1 << self.access) | (int(self.perms_found) << 3)


class MisconfigReason(str, Enum):
    WRITE_WITHOUT_READ = "write permission without read permission"
    EXECUTE_ONLY = "execute-only translation, which this CPU does not support"
    RESERVED_BITS = "reserved bits set"
    MEMORY_TYPE = "invalid memory type"


class EptMisconfig(EptFault):
    """EPT misconfiguration (VM-exit reason 49): `entry` is the raw offending entry."""

    def __init__(self, gpa: int, entry: int, reason: MisconfigReason, level: int = 0, detail: str = "") -> None:
        self.gpa = gpa
        self.entry = entry
        self.reason = reason
        self.level = level
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(f"EPT misconfiguration at GPA {gpa:#x}: level-{level} entry {entry:#018x}: "
                         f"{reason.value}{extra}")


def _misconfig(gpa: int, entry: int, level: int, rsvd: int) -> EptMisconfig:
    """Explain why a present entry is misconfigured (called only once a check has failed)."""
    p = entry & EPT_PERM_MASK
    if p & EPT_W and not p & EPT_R:
        return EptMisconfig(gpa, entry, MisconfigReason.WRITE_WITHOUT_READ, level)
    if p == EPT_X:
        return EptMisconfig(gpa, entry, MisconfigReason.EXECUTE_ONLY, level)
    if entry & rsvd:
        detail = f"bits {entry & rsvd:#x}"
        if level == 4 and entry & EPT_PAGE_SIZE:
            detail += "; bit 7 (page size) in a PML4E"
        return EptMisconfig(gpa, entry, MisconfigReason.RESERVED_BITS, level, detail)
    mt = (entry >> EPT_MEMTYPE_SHIFT) & 7
    return EptMisconfig(gpa, entry, MisconfigReason.MEMORY_TYPE, level, f"type {mt}")


# --------------------------------------------------------------------------------------------
# EPTP
# --------------------------------------------------------------------------------------------

def make_eptp(pml4: int, *, ad: bool = False, memtype: MemType = MemType.WB) -> int:
    """EPTP for a 4-level EPT rooted at `pml4` (memory type of the paging structures: UC or WB)."""
    if pml4 & 0xFFF or pml4 >> MAXPHYADDR:
        raise ValueError(f"bad PML4 address {pml4:#x}")
    if memtype not in (MemType.UC, MemType.WB):
        raise ValueError(f"EPTP memory type must be UC or WB, not {memtype}")
    return pml4 | int(memtype) | (3 << EPTP_WALK_SHIFT) | (EPTP_AD_ENABLE if ad else 0)


def parse_eptp(eptp: int) -> tuple[int, bool]:
    """Check an EPTP as VM entry does (SDM 27.2.1.1) and return (pml4 address, A/D enabled)."""
    mt = eptp & EPTP_MEMTYPE_MASK
    if mt not in (MemType.UC, MemType.WB):
        raise ValueError(f"EPTP {eptp:#x}: memory type {mt} is not UC or WB")
    if (eptp & EPTP_WALK_MASK) >> EPTP_WALK_SHIFT != 3:
        raise ValueError(f"EPTP {eptp:#x}: page-walk length is not 4")
    if eptp & EPTP_RESERVED:
        raise ValueError(f"EPTP {eptp:#x}: reserved bits {eptp & EPTP_RESERVED:#x} set")
    return eptp & EPT_ADDR_MASK, bool(eptp & EPTP_AD_ENABLE)


# --------------------------------------------------------------------------------------------
# The hardware walk
# --------------------------------------------------------------------------------------------

class EptWalker:
    """The page walker of the EPT hardware, over one `PhysicalMemory`.

    Stateless apart from the memory's region layout: every walk reads the four (or fewer)
    entries from memory. Use one walker per machine; `Ept` has its own.
    """

    __slots__ = ("memory", "_view", "_regions", "_fast")

    def __init__(self, memory: PhysicalMemory, hint: int | None = None) -> None:
        """`hint`: an address where the tables usually live (the frame allocator's range); its
        RAM region is tried first on every entry read."""
        self.memory = memory
        self._view = memory.view
        # (base, end, delta): mmap offset = paddr + delta
        regions = [(r.base, r.end, r.offset - r.base) for r in memory.regions]
        if hint is not None:
            regions.sort(key=lambda r: not r[0] <= hint < r[1])
        self._regions = tuple(regions)
        self._fast = regions[0]

    def offset(self, paddr: int, length: int = 8) -> int:
        """Offset of `paddr` in `memory.view`; raises `MemoryError_` if the range is not RAM."""
        base, end, delta = self._fast
        if base <= paddr and paddr + length <= end:
            return paddr + delta
        for base, end, delta in self._regions:
            if base <= paddr and paddr + length <= end:
                return paddr + delta
        raise MemoryError_(f"EPT structure at {paddr:#x} is not in RAM")

    def walk(self, pml4: int, gpa: int, access: int = READ, ad: bool = False) -> tuple[int, EptPerm, int]:
        """Translate `gpa` for `access` through the tables rooted at `pml4`.

        Returns (hpa, effective permissions, leaf level). Raises `EptViolation` or
        `EptMisconfig`. With `ad` (EPTP bit 6) a successful walk sets the accessed flag of every
        entry it used and, for a write, the dirty flag of the leaf.
        """
        if not 0 <= gpa < GPA_LIMIT:
            raise ValueError(f"GPA {gpa:#x} is outside the 48-bit guest-physical space")
        view = self._view
        lo, hi, delta = self._fast
        unpack = _U64.unpack_from
        table = pml4
        perms = EPT_PERM_MASK
        # Every TLB fill that misses the EptTlb walks here: the checks of the common case (a
        # valid table pointer, a valid leaf) are one test each, the faults sorted out after.
        for level, shift, leaf_bit, rsvd_leaf, page_mask in _WALK:
            ea = table + (((gpa >> shift) & 0x1FF) << 3)
            entry = unpack(view, ea + delta if lo <= ea < hi else self.offset(ea))[0]
            if entry & leaf_bit:
                break
            if entry & _TABLE_CHECK != EPT_R:
                if not entry & EPT_PERM_MASK:
                    raise EptViolation(gpa, _ACCESS[access], _PERMS[0], level)
                raise _misconfig(gpa, entry, level, _RSVD_TABLE)
            perms &= entry
            table = entry & EPT_ADDR_MASK
        p = entry & EPT_PERM_MASK
        if not p:
            raise EptViolation(gpa, _ACCESS[access], _PERMS[0], level)
        if not (_LEAF_OK >> (entry & 0x3F)) & 1 or entry & rsvd_leaf:
            raise _misconfig(gpa, entry, level, rsvd_leaf)
        perms &= p
        if not (perms >> access) & 1:
            raise EptViolation(gpa, _ACCESS[access], _PERMS[perms], level)
        if ad:
            self._set_ad(pml4, gpa, level, access == WRITE)
        return (entry & EPT_ADDR_MASK) | (gpa & page_mask), _PERMS[perms], level

    def _set_ad(self, pml4: int, gpa: int, leaf_level: int, write: bool) -> None:
        """Set A on each entry of a (successful) walk, and D on the leaf for a write."""
        table = pml4
        for level, shift, *_ in _WALK:
            off = self.offset(table + (((gpa >> shift) & 0x1FF) << 3))
            entry = _U64.unpack_from(self._view, off)[0]
            new = entry | EPT_ACCESSED
            if level == leaf_level and write:
                new |= EPT_DIRTY
            if new != entry:
                _U64.pack_into(self._view, off, new)
            if level == leaf_level:
                return
            table = entry & EPT_ADDR_MASK

    def entries(self, pml4: int, gpa: int) -> list[tuple[int, int, int]]:
        """The entries a walk for `gpa` reads: [(level, entry address, entry)], for debugging.

        Stops after the leaf or at the first non-present entry; does not check misconfiguration.
        """
        out = []
        table = pml4
        for level, shift, leaf_bit, *_ in _WALK:
            ea = table + (((gpa >> shift) & 0x1FF) << 3)
            entry = _U64.unpack_from(self._view, self.offset(ea))[0]
            out.append((level, ea, entry))
            if not entry & EPT_PERM_MASK or entry & leaf_bit:
                break
            table = entry & EPT_ADDR_MASK
        return out


def translate_eptp(memory: PhysicalMemory, eptp: int, gpa: int, access: int = READ) -> tuple[int, EptPerm, int]:
    """Walk the EPT named by `eptp` (as the CPU would after VM entry checked it).

    Convenience for one-off walks; hot paths should keep an `EptWalker` and call `walk`.
    """
    pml4, ad = parse_eptp(eptp)
    return EptWalker(memory).walk(pml4, gpa, access, ad)


# --------------------------------------------------------------------------------------------
# Building and editing tables
# --------------------------------------------------------------------------------------------

class EptMapping(NamedTuple):
    """A run of guest-physical memory mapped contiguously with the same attributes."""

    gpa: int
    hpa: int
    size: int
    perms: EptPerm
    memtype: MemType | int


class EptRun(NamedTuple):
    """Like `EptMapping`, but a run may also be an alias run: `alias_page` > 0 means every
    `alias_page`-sized page of [gpa, gpa+size) maps to the same host range [hpa, hpa+alias_page)."""

    gpa: int
    hpa: int
    size: int
    perms: EptPerm
    memtype: MemType | int
    alias_page: int = 0


def _check_perms(perms: int) -> EptPerm:
    perms = EptPerm(perms)
    if not perms:
        raise ValueError("no permissions: use unmap() to remove a mapping")
    if perms & EptPerm.W and not perms & EptPerm.R:
        raise ValueError(f"permissions {perms} are W without R (an EPT misconfiguration)")
    if perms == EptPerm.X:
        raise ValueError("execute-only mappings are not supported by this CPU")
    return perms


def _check_memtype(memtype: int) -> MemType:
    if memtype not in _MEMTYPES:
        raise ValueError(f"invalid EPT memory type {memtype}")
    return _MEMTYPES[memtype]


def _pack_entries(first: int, count: int, step: int) -> bytes:
    """`count` little-endian u64 entries first, first+step, ... (step 0: all the same)."""
    if step == 0:
        return _U64.pack(first) * count
    a = array("Q", range(first, first + count * step, step))
    if not _LITTLE:
        a.byteswap()
    return a.tobytes()


class Ept:
    """One 4-level EPT hierarchy in emulated physical memory.

    `map`, `map_alias`, `unmap` and `protect` edit the entries in memory; `translate` walks
    them like the CPU. The only Python-side state is the set of table frames this object
    allocated (so `destroy` can free them and edits never touch a table they do not own) and
    the PML4 address; no translation is cached.

    Edits overwrite whatever was mapped before. A leaf is never merged back into a larger page.
    After every edit, each callable in `invalidate_hooks` is called with (gpa, size): the
    equivalent of the INVEPT software must issue, for code that caches translations.
    """

    def __init__(self, memory: PhysicalMemory, frames: FrameAllocator, *, ad: bool = False) -> None:
        self.memory = memory
        self.frames = frames
        self.ad = ad
        self.walker = EptWalker(memory, hint=frames.base)
        self._view = memory.view
        self._tables: set[int] = set()
        self.owned_frames: list[int] = []
        """Extra frames (e.g. a zero page) freed with the tables by `destroy`."""
        self.invalidate_hooks: list[Callable[[int, int], None]] = []
        self._pml4: int | None = self._alloc_table()

    # ---------------------------------------------------------------- properties

    @property
    def pml4(self) -> int:
        if self._pml4 is None:
            raise RuntimeError("EPT was destroyed")
        return self._pml4

    @property
    def eptp(self) -> int:
        """EPTP value: WB paging structures, 4-level walk, A/D enable if `ad`, PML4 address."""
        return make_eptp(self.pml4, ad=self.ad)

    @property
    def table_count(self) -> int:
        """Number of 4 KiB table frames in use (PML4 included)."""
        return len(self._tables)

    @property
    def table_frames(self) -> frozenset[int]:
        return frozenset(self._tables)

    # ---------------------------------------------------------------- translation

    def translate(self, gpa: int, access: int = READ) -> tuple[int, EptPerm, int]:
        """Walk the tables in memory for `gpa`: (hpa, effective perms, leaf level).

        Raises `EptViolation` (non-present entry or missing permission) or `EptMisconfig`.
        """
        return self.walker.walk(self.pml4, gpa, access, self.ad)

    def entries(self, gpa: int) -> list[tuple[int, int, int]]:
        """[(level, entry address, raw entry)] along the walk for `gpa` (see `EptWalker.entries`)."""
        return self.walker.entries(self.pml4, gpa)

    def entry_address(self, gpa: int, level: int | None = None) -> int:
        """Physical address of the entry for `gpa` at `level` (default: the last one a walk reads)."""
        ents = self.entries(gpa)
        if level is None:
            return ents[-1][1]
        for lvl, ea, _ in ents:
            if lvl == level:
                return ea
        raise LookupError(f"no level-{level} entry for GPA {gpa:#x}")

    # ---------------------------------------------------------------- editing

    def map(self, gpa: int, hpa: int, size: int, perms: int, memtype: int = MemType.WB, *,
            ipat: bool = False, suppress_ve: bool = False, max_page_size: int = GiB) -> None:
        """Map [gpa, gpa+size) to [hpa, hpa+size).

        Uses the largest leaf (1 GiB, 2 MiB, 4 KiB; at most `max_page_size`) that the alignment
        of gpa and hpa and the remaining size allow. A large page that the range only partly
        covers is split first, its attributes copied into the new table so the rest of it keeps
        its mapping. Tables left unused under a replaced entry are freed.
        """
        self._check_range(gpa, size)
        if hpa % PAGE_SIZE or hpa < 0 or (hpa + size) > 1 << MAXPHYADDR:
            raise ValueError(f"bad host-physical address {hpa:#x}+{size:#x}")
        attrs = self._leaf_attrs(perms, memtype, ipat, suppress_ve)
        self._map(self.pml4, 4, gpa, gpa + size, hpa - gpa, False, attrs, self._max_level(max_page_size))
        self._invalidate(gpa, size)

    def map_alias(self, gpa: int, size: int, hpa: int, perms: int, memtype: int = MemType.WB, *,
                  page_size: int = PAGE_SIZE, ipat: bool = False, suppress_ve: bool = False) -> None:
        """Map every page of [gpa, gpa+size) to the same host range [hpa, hpa+page_size).

        For the root EPT's holes: all of them read one zero page. `page_size` (4 KiB, 2 MiB or
        1 GiB) is the size of that host range; `hpa` must be aligned to it. Leaves of size
        `page_size` are used where gpa alignment allows, smaller leaves (pointing at `hpa`) at
        unaligned edges.
        """
        self._check_range(gpa, size)
        if page_size not in LEVEL_PAGE_SIZE.values():
            raise ValueError(f"alias page size {page_size:#x} is not 4 KiB, 2 MiB or 1 GiB")
        if hpa % page_size or hpa < 0 or hpa + page_size > 1 << MAXPHYADDR:
            raise ValueError(f"alias target {hpa:#x} is not aligned to {page_size:#x}")
        attrs = self._leaf_attrs(perms, memtype, ipat, suppress_ve)
        self._map(self.pml4, 4, gpa, gpa + size, hpa, True, attrs, self._max_level(page_size))
        self._invalidate(gpa, size)

    def unmap(self, gpa: int, size: int) -> None:
        """Make [gpa, gpa+size) non-present, splitting large pages at the edges; frees emptied tables."""
        self._check_range(gpa, size)
        self._unmap(self.pml4, 4, gpa, gpa + size)
        self._invalidate(gpa, size)

    def protect(self, gpa: int, size: int, perms: int) -> None:
        """Set the permissions of the present leaves in [gpa, gpa+size); holes are left alone.

        Large pages that the range covers only in part are split first.
        """
        self._check_range(gpa, size)
        p = int(_check_perms(perms))
        self._protect(self.pml4, 4, gpa, gpa + size, p)
        self._invalidate(gpa, size)

    def destroy(self) -> None:
        """Free every table frame (and `owned_frames`); the object is unusable afterwards."""
        if self._pml4 is None:
            return
        for frame in sorted(self._tables):
            self.frames.free(frame)
        for frame in self.owned_frames:
            self.frames.free(frame)
        self._tables.clear()
        self.owned_frames.clear()
        self._pml4 = None

    # ---------------------------------------------------------------- inspection

    def _leaves(self, table: int, level: int, base: int, perms: int) -> Iterator[tuple[int, int, int, int, int]]:
        """(gpa, hpa, size, effective perms, raw entry) of every present leaf, in GPA order."""
        entries = _TABLE.unpack_from(self._view, self.walker.offset(table, PAGE_SIZE))
        shift = LEVEL_SHIFT[level]
        for i, e in enumerate(entries):
            p = e & EPT_PERM_MASK
            if not p:
                continue
            g = base + (i << shift)
            if level == 1 or (level != 4 and e & EPT_PAGE_SIZE):
                size = 1 << shift
                yield g, (e & EPT_ADDR_MASK) & ~(size - 1), size, perms & p, e
            else:
                yield from self._leaves(e & EPT_ADDR_MASK, level - 1, g, perms & p)

    def runs(self, merge_aliases: bool = True) -> Iterator[EptRun]:
        """Coalesced runs of leaves, walking the tables in memory (A/D bits are ignored).

        Adjacent leaves merge when gpa and hpa both continue with the same perms and memory
        type; with `merge_aliases`, equal-sized leaves that all point at the same host page also
        merge into one alias run.
        """
        cur: list | None = None   # [gpa, hpa, size, perms, mt, alias_page, last_leaf_size]
        for g, h, s, p, e in self._leaves(self.pml4, 4, 0, EPT_PERM_MASK):
            mt = (e >> EPT_MEMTYPE_SHIFT) & 7
            if cur is not None and g == cur[0] + cur[2] and p == cur[3] and mt == cur[4]:
                if not cur[5] and h == cur[1] + cur[2]:
                    cur[2] += s
                    cur[6] = s
                    continue
                if merge_aliases and h == cur[1] and s == cur[6] and (cur[5] == s or cur[2] == s):
                    cur[2] += s
                    cur[5] = s
                    continue
            if cur is not None:
                yield EptRun(cur[0], cur[1], cur[2], _PERMS[cur[3]], _MEMTYPES.get(cur[4], cur[4]), cur[5])
            cur = [g, h, s, p, mt, 0, s]
        if cur is not None:
            yield EptRun(cur[0], cur[1], cur[2], _PERMS[cur[3]], _MEMTYPES.get(cur[4], cur[4]), cur[5])

    def mappings(self) -> Iterator[EptMapping]:
        """Coalesced (gpa, hpa, size, perms, memtype) runs where gpa and hpa are both contiguous.

        Perms are the effective ones (AND over the walk). Alias leaves (all pointing at one
        zero page) come out one per leaf; use `runs()` or `dump()` to see them merged.
        """
        for r in self.runs(merge_aliases=False):
            yield EptMapping(r.gpa, r.hpa, r.size, r.perms, r.memtype)

    def dump(self) -> list[str]:
        """Human-readable lines for a console `info ept`."""
        lines = [f"EPTP {self.eptp:#x} (PML4 {self.pml4:#x}, {self.table_count} table frames)"]
        for r in self.runs():
            mt = r.memtype.name if isinstance(r.memtype, MemType) else f"mt{r.memtype}"
            target = (f"{r.hpa:#014x} (every {_fmt_size(r.alias_page)} page)" if r.alias_page
                      else f"{r.hpa:#014x}")
            lines.append(f"{r.gpa:#014x}-{r.gpa + r.size - 1:#014x} -> {target} "
                         f"{_fmt_size(r.size):>6} {r.perms} {mt}")
        return lines

    # ---------------------------------------------------------------- internals

    def _invalidate(self, gpa: int, size: int) -> None:
        for hook in self.invalidate_hooks:
            hook(gpa, size)

    @staticmethod
    def _check_range(gpa: int, size: int) -> None:
        if gpa % PAGE_SIZE or size % PAGE_SIZE or size <= 0 or gpa < 0 or gpa + size > GPA_LIMIT:
            raise ValueError(f"GPA range {gpa:#x}+{size:#x} must be page aligned, non-empty and below 2^48")

    @staticmethod
    def _max_level(page_size: int) -> int:
        for level in (3, 2, 1):
            if page_size >= LEVEL_PAGE_SIZE[level]:
                return level
        raise ValueError(f"page size {page_size:#x} is below 4 KiB")

    @staticmethod
    def _leaf_attrs(perms: int, memtype: int, ipat: bool, suppress_ve: bool) -> int:
        p = int(_check_perms(perms))
        mt = int(_check_memtype(memtype))
        return p | (mt << EPT_MEMTYPE_SHIFT) | (EPT_IPAT if ipat else 0) | (EPT_SUPPRESS_VE if suppress_ve else 0)

    def _alloc_table(self) -> int:
        frame = self.frames.alloc()    # zeroed by the allocator
        self._tables.add(frame)
        return frame

    def _free_table(self, table: int, level: int) -> None:
        """Free `table` (a level-`level` table) and every table below it."""
        if level > 1:
            entries = _TABLE.unpack_from(self._view, self.walker.offset(table, PAGE_SIZE))
            for e in entries:
                if e & EPT_PERM_MASK and (level == 4 or not e & EPT_PAGE_SIZE):
                    child = e & EPT_ADDR_MASK
                    if child in self._tables:
                        self._free_table(child, level - 1)
        self._tables.discard(table)
        self.frames.free(table)

    def _free_children(self, data: Iterable[int], level: int) -> None:
        """Free the subtrees of the table pointers among entries `data` of a level-`level` table."""
        if level == 1:
            return
        for e in data:
            if e & EPT_PERM_MASK and (level == 4 or not e & EPT_PAGE_SIZE):
                child = e & EPT_ADDR_MASK
                if child in self._tables:
                    self._free_table(child, level - 1)

    def _write_table_pointer(self, off: int, table: int) -> None:
        # Non-leaf entries grant RWX; the leaves carry the real permissions.
        _U64.pack_into(self._view, off, table | EPT_PERM_MASK)

    def _child(self, off: int, level: int, replace_all: bool) -> int:
        """The next-level table under the level-`level` entry at view offset `off`, created
        (or split out of a large page, unless `replace_all`) if needed."""
        e = _U64.unpack_from(self._view, off)[0]
        if e & EPT_PERM_MASK and (level == 4 or not e & EPT_PAGE_SIZE):
            table = e & EPT_ADDR_MASK
            if table not in self._tables:
                raise ValueError(f"EPT entry {e:#x} points to a table this EPT does not own")
            return table
        table = self._alloc_table()
        if e & EPT_PERM_MASK and not replace_all:
            # Split a large page: 512 leaves of the next size, same attributes, same host range.
            child_size = LEVEL_PAGE_SIZE[level - 1]
            attrs = e & ~EPT_ADDR_MASK
            if level - 1 == 1:
                attrs &= ~EPT_PAGE_SIZE
            first = (e & EPT_ADDR_MASK & ~(LEVEL_PAGE_SIZE[level] - 1)) | attrs
            toff = self.walker.offset(table, PAGE_SIZE)
            self._view[toff:toff + PAGE_SIZE] = _pack_entries(first, 512, child_size)
        self._write_table_pointer(off, table)
        return table

    def _map(self, table: int, level: int, start: int, end: int, hpa: int, alias: bool,
             attrs: int, max_level: int) -> None:
        """Map [start, end) (within this table's span) under the level-`level` `table`.

        `hpa` is the gpa->hpa delta, or with `alias` the one host address every leaf gets.
        """
        shift = LEVEL_SHIFT[level]
        size = 1 << shift
        toff = self.walker.offset(table, PAGE_SIZE)
        leafable = level <= max_level and (alias or hpa % size == 0)
        eg = start & ~(size - 1)
        while eg < end:
            idx = (eg >> shift) & 0x1FF
            off = toff + (idx << 3)
            if leafable and eg >= start and eg + size <= end:
                # A run of whole entries, all leaves: one bulk write.
                n = min((end - eg) >> shift, 512 - idx)
                old = struct.unpack_from(f"<{n}Q", self._view, off)
                if any(old):
                    self._free_children(old, level)
                large = EPT_PAGE_SIZE if level > 1 else 0
                if alias:
                    data = _pack_entries(hpa | attrs | large, n, 0)
                else:
                    data = _pack_entries((eg + hpa) | attrs | large, n, size)
                self._view[off:off + (n << 3)] = data
                eg += n << shift
                continue
            lo, hi = max(eg, start), min(eg + size, end)
            child = self._child(off, level, replace_all=(lo == eg and hi == eg + size))
            self._map(child, level - 1, lo, hi, hpa, alias, attrs, max_level)
            eg += size

    def _unmap(self, table: int, level: int, start: int, end: int) -> None:
        shift = LEVEL_SHIFT[level]
        size = 1 << shift
        toff = self.walker.offset(table, PAGE_SIZE)
        eg = start & ~(size - 1)
        while eg < end:
            idx = (eg >> shift) & 0x1FF
            off = toff + (idx << 3)
            if eg >= start and eg + size <= end:
                n = min((end - eg) >> shift, 512 - idx)
                old = struct.unpack_from(f"<{n}Q", self._view, off)
                if any(old):
                    self._free_children(old, level)
                    self._view[off:off + (n << 3)] = bytes(n << 3)
                eg += n << shift
                continue
            e = _U64.unpack_from(self._view, off)[0]
            if e & EPT_PERM_MASK:
                child = self._child(off, level, replace_all=False)
                self._unmap(child, level - 1, max(eg, start), min(eg + size, end))
                coff = self.walker.offset(child, PAGE_SIZE)
                if self._view[coff:coff + PAGE_SIZE] == _ZERO_TABLE:
                    self._tables.discard(child)
                    self.frames.free(child)
                    _U64.pack_into(self._view, off, 0)
            eg += size

    def _protect(self, table: int, level: int, start: int, end: int, perms: int) -> None:
        shift = LEVEL_SHIFT[level]
        size = 1 << shift
        toff = self.walker.offset(table, PAGE_SIZE)
        eg = start & ~(size - 1)
        while eg < end:
            idx = (eg >> shift) & 0x1FF
            off = toff + (idx << 3)
            if eg >= start and eg + size <= end:
                n = min((end - eg) >> shift, 512 - idx)
                old = struct.unpack_from(f"<{n}Q", self._view, off)
                new = list(old)
                for i, e in enumerate(old):
                    if not e & EPT_PERM_MASK:
                        continue
                    if level == 1 or (level != 4 and e & EPT_PAGE_SIZE):
                        new[i] = (e & ~EPT_PERM_MASK) | perms
                    else:
                        cstart = eg + (i << shift)
                        self._protect(self._child(off + (i << 3), level, False), level - 1,
                                      cstart, cstart + size, perms)
                if new != list(old):
                    struct.pack_into(f"<{n}Q", self._view, off, *new)
                eg += n << shift
                continue
            e = _U64.unpack_from(self._view, off)[0]
            if e & EPT_PERM_MASK:
                child = self._child(off, level, replace_all=False)
                self._protect(child, level - 1, max(eg, start), min(eg + size, end), perms)
            eg += size


def _fmt_size(size: int) -> str:
    for unit, mult in (("G", GiB), ("M", MiB), ("K", KiB)):
        if size >= mult and size % mult == 0:
            return f"{size // mult}{unit}"
    return f"{size:#x}"


# --------------------------------------------------------------------------------------------
# The monitor's root EPT
# --------------------------------------------------------------------------------------------

TPM_CRB_MMIO = (0xFED40000, 0x5000)
"""The TPM CRB MMIO window (localities 0-4), identity-mapped UC read/write in the root EPT."""


def _as_range(r) -> tuple[int, int]:
    """(base, size) from a (base, size) pair or anything with .base/.size (e.g. memory.Region)."""
    if hasattr(r, "base") and hasattr(r, "size"):
        return int(r.base), int(r.size)
    base, size = r
    return int(base), int(size)


def build_identity_ept(memory: PhysicalMemory, frames: FrameAllocator,
                       ram_regions: Iterable, holes: Iterable = (), zero_page: int | None = None, *,
                       zero_page_size: int = 2 * MiB, mmio: Iterable = (TPM_CRB_MMIO,),
                       ad: bool = False) -> Ept:
    """Build the monitor's root EPT (the one Linux runs under after launch).

    - `ram_regions`: (base, size) pairs or `Region`s; mapped GPA = HPA, RWX, WB, with the
      largest pages alignment allows (1 GiB pages for a PC's RAM, so a 64 GiB host needs only
      a handful of frames).
    - `holes`: (base, size) ranges (monitor memory, EPC) whose every page reads as ONE zero
      page: R only, WB. `zero_page` is the host address of a zero-filled, never-written region
      of `zero_page_size` bytes: 2 MiB (must be 2 MiB-aligned; 2 MiB-aligned parts of a hole get
      2 MiB leaves, unaligned edges 4 KiB leaves all pointing at its first frame) or 4 KiB (4 KiB
      leaves only). If `zero_page` is None a 4 KiB zero frame is taken from `frames` and freed
      by `destroy()` (it is in `ept.owned_frames`). The caller keeps the zero region zero: the
      root EPT never gives write access to it.
    - `mmio`: (base, size) ranges identity-mapped R/W, UC (default: the TPM CRB window).

    Order: RAM, then holes over it, then MMIO; later ranges replace earlier ones page by page.
    """
    ept = Ept(memory, frames, ad=ad)
    for r in ram_regions:
        base, size = _as_range(r)
        ept.map(base, base, size, EptPerm.RWX, MemType.WB)
    holes = [_as_range(h) for h in holes]
    if holes:
        if zero_page is None:
            zero_page = frames.alloc()
            ept.owned_frames.append(zero_page)
            zero_page_size = PAGE_SIZE
        if zero_page_size not in (PAGE_SIZE, 2 * MiB):
            raise ValueError("zero_page_size must be 4 KiB or 2 MiB")
        for base, size in holes:
            ept.map_alias(base, size, zero_page, EptPerm.R, MemType.WB, page_size=zero_page_size)
    for m in mmio:
        base, size = _as_range(m)
        ept.map(base, base, size, EptPerm.RW, MemType.UC)
    return ept
