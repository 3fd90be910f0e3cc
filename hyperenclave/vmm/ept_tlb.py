"""An EPT as the vCPU's second translation stage, with the cache INVEPT flushes.

Every TLB fill of the vCPU asks `translate(gpa, access)` (and the guest page walk reads its
tables through `pages` and `view`, or `read_u64`), which walks the EPT's tables in emulated
memory (through `EptWalker`, pointed to by the EPTP) exactly like the CPU. As on real
hardware the results are cached (the "guest-physical mappings" of SDM Vol. 3C 29.4), at the
size of the leaf that mapped them: one walk of a 1 GiB or 2 MiB leaf serves every 4 KiB page
under it, which is what keeps a fill with a nested walk to one EPT walk or none. The cache
holds only what a walk returned, and only `invept()` drops it, so software that edits an EPT
must INVEPT, as on real hardware.
"""

from __future__ import annotations

import struct
from typing import Callable

from hyperenclave.platform.memory import MemoryError_
from hyperenclave.platform.paging import ACCESS_READ, ACCESS_WRITE

from .ept import LEVEL_PAGE_SIZE, EptPerm, EptWalker, parse_eptp

_ACCESS_BASE = ACCESS_READ  # paging.ACCESS_READ/WRITE/FETCH minus this: ept READ/WRITE/FETCH
_MAX_CACHED = 1 << 16      # pages; a full flush beyond this keeps memory bounded
_NOT_W = ~int(EptPerm.W)
_U64 = struct.Struct("<Q")

#: (host-physical page, R/W/X, offset of the page in the memory view or -1 if it is not RAM)
_Cached = tuple[int, int, int]


class EptTlb:
    """Second stage over the EPT named by an EPTP; a `paging.CachedStage`, so the guest walk
    reads `pages` and `view` directly."""

    __slots__ = ("walker", "pml4", "ad", "view", "pages", "_leaves_2m", "_leaves_1g",
                 "_flush_cpu_tlb", "walks")

    def __init__(self, walker: EptWalker, eptp: int, flush_cpu_tlb: Callable[[], None]) -> None:
        self.walker = walker
        self.pml4, self.ad = parse_eptp(eptp)
        self.view = walker.memory.view
        self.pages: dict[int, _Cached] = {}
        #: large leaves walked: {gpa >> 21 (or 30): the leaf's base as a _Cached}
        self._leaves_2m: dict[int, _Cached] = {}
        self._leaves_1g: dict[int, _Cached] = {}
        self._flush_cpu_tlb = flush_cpu_tlb
        self.walks = 0

    def translate(self, gpa: int, access: int) -> tuple[int, int]:
        """Host-physical page and R/W/X (= UC_PROT_* bits) for `gpa`; raises EptViolation or
        EptMisconfig (both SecondStageFault) like the hardware walk."""
        hit = self.pages.get(gpa >> 12)
        if hit is None or not hit[1] & (1 << (access - _ACCESS_BASE)):
            hit = self.miss(gpa, access)
        return hit[0], hit[1]

    def read_u64(self, gpa: int) -> int:
        """A guest paging-structure read: the entry at `gpa`, through this stage."""
        hit = self.pages.get(gpa >> 12)
        if hit is None or not hit[1] & 1:
            hit = self.miss(gpa, ACCESS_READ)
        if hit[2] < 0:
            raise MemoryError_(f"guest paging structure at {gpa:#x} is not in RAM")
        return _U64.unpack_from(self.view, hit[2] + (gpa & 0xFF8))[0]

    def write_u64(self, gpa: int, value: int) -> None:
        """A guest paging-structure update (A/D bits) at `gpa`, through this stage."""
        hit = self.pages.get(gpa >> 12)
        if hit is None or not hit[1] & 2:
            hit = self.miss(gpa, ACCESS_WRITE)
        if hit[2] < 0:
            raise MemoryError_(f"guest paging structure at {gpa:#x} is not in RAM")
        _U64.pack_into(self.view, hit[2] + (gpa & 0xFF8), value)

    def miss(self, gpa: int, access: int) -> _Cached:
        """Cache and return the page at `gpa` for `access` (paging.ACCESS_*): from a cached
        large leaf, or else by an EPT walk."""
        need = 1 << (access - _ACCESS_BASE)
        leaf = self._leaves_2m.get(gpa >> 21)
        if leaf is not None and leaf[1] & need:
            delta = gpa & 0x1F_F000
        else:
            leaf = self._leaves_1g.get(gpa >> 30)
            if leaf is not None and leaf[1] & need:
                delta = gpa & 0x3FFF_F000
            else:
                leaf, delta = self._walk(gpa, access)
        page = (leaf[0] + delta, leaf[1], leaf[2] + delta if leaf[2] >= 0 else -1)
        pages = self.pages
        if len(pages) >= _MAX_CACHED:
            pages.clear()
        pages[gpa >> 12] = page
        return page

    def _walk(self, gpa: int, access: int) -> tuple[_Cached, int]:
        """Walk the EPT for `gpa` and cache the leaf if it is a large one: (the leaf, offset of
        gpa's page in it)."""
        self.walks += 1
        hpa, found, level = self.walker.walk(self.pml4, gpa & ~0xFFF, access - _ACCESS_BASE, self.ad)
        perms = int(found)
        if self.ad and access != ACCESS_WRITE:
            perms &= _NOT_W               # the first write must walk again to set the D flag
        size = LEVEL_PAGE_SIZE[level]
        base = hpa & -size
        try:
            offset = self.walker.offset(base, size)   # a RAM leaf lies in one region
        except MemoryError_:
            offset = -1                    # MMIO: translatable, not readable as a page table
        leaf = (base, perms, offset)
        if level == 2:
            self._leaves_2m[gpa >> 21] = leaf
        elif level == 3:
            self._leaves_1g[gpa >> 30] = leaf
        return leaf, hpa - base

    def invept(self) -> None:
        """INVEPT (single-context): forget cached translations, and the vCPU's combined TLB."""
        self.forget()
        self._flush_cpu_tlb()

    def forget(self) -> None:
        """Drop the guest-physical cache only (the next translations walk the EPT)."""
        self.pages.clear()
        self._leaves_2m.clear()
        self._leaves_1g.clear()
