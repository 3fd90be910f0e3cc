"""An EPT as the vCPU's second translation stage, with the cache INVEPT flushes.

Every TLB fill of the vCPU asks `translate(gpa, access)` (and the guest page walk reads its
tables through `read_u64`), which walks the EPT's tables in emulated memory (through
`EptWalker`, pointed to by the EPTP) exactly like the CPU. As on real hardware the results are
cached (the "guest-physical mappings" of SDM Vol. 3C 29.4), at the size of the leaf that
mapped them: one walk of a 1 GiB or 2 MiB leaf serves every 4 KiB page under it, which is what
keeps a fill with a nested walk to one EPT walk or none. The cache holds only what a walk
returned, and only `invept()` drops it, so software that edits an EPT must INVEPT, as on real
hardware.
"""

from __future__ import annotations

import struct
from typing import Callable

from hyperenclave.platform.memory import MemoryError_

from .ept import WRITE, EptPerm, EptWalker, parse_eptp

_ACCESS_BASE = 16        # paging.ACCESS_READ/WRITE/FETCH (16/17/18) -> ept READ/WRITE/FETCH
_MAX_CACHED = 1 << 16    # pages; a full flush beyond this keeps memory bounded
_LEAF_SHIFTS = {2: 21, 3: 30}    # EPT level of a large leaf -> its page-size shift
_U64 = struct.Struct("<Q")

#: (host-physical page, R/W/X, offset of the page in the memory view or -1 if it is not RAM)
_Cached = tuple[int, int, int]


class EptTlb:
    """Second stage over the EPT named by an EPTP."""

    __slots__ = ("walker", "pml4", "ad", "_pages", "_leaves", "_flush_cpu_tlb", "walks", "_view")

    def __init__(self, walker: EptWalker, eptp: int, flush_cpu_tlb: Callable[[], None]) -> None:
        self.walker = walker
        self.pml4, self.ad = parse_eptp(eptp)
        self._view = walker.memory.view
        self._pages: dict[int, _Cached] = {}
        #: large-leaf shift -> {gpa >> shift: the leaf's base as a _Cached}
        self._leaves: dict[int, dict[int, _Cached]] = {21: {}, 30: {}}
        self._flush_cpu_tlb = flush_cpu_tlb
        self.walks = 0

    def translate(self, gpa: int, access: int) -> tuple[int, int]:
        """Host-physical page and R/W/X (= UC_PROT_* bits) for `gpa`; raises EptViolation or
        EptMisconfig (both SecondStageFault) like the hardware walk."""
        hit = self._pages.get(gpa >> 12)
        if hit is None or not hit[1] & (1 << (access - _ACCESS_BASE)):
            hit = self._miss(gpa, access)
        return hit[0], hit[1]

    def read_u64(self, gpa: int) -> int:
        """A guest paging-structure read: the entry at `gpa`, through this stage."""
        hit = self._pages.get(gpa >> 12)
        if hit is None or not hit[1] & 1:
            hit = self._miss(gpa, _ACCESS_BASE)
        if hit[2] < 0:
            raise MemoryError_(f"guest paging structure at {gpa:#x} is not in RAM")
        return _U64.unpack_from(self._view, hit[2] + (gpa & 0xFF8))[0]

    def write_u64(self, gpa: int, value: int) -> None:
        """A guest paging-structure update (A/D bits) at `gpa`, through this stage."""
        hit = self._pages.get(gpa >> 12)
        if hit is None or not hit[1] & 2:
            hit = self._miss(gpa, _ACCESS_BASE + 1)
        if hit[2] < 0:
            raise MemoryError_(f"guest paging structure at {gpa:#x} is not in RAM")
        _U64.pack_into(self._view, hit[2] + (gpa & 0xFF8), value)

    def _miss(self, gpa: int, access: int) -> _Cached:
        """Serve the page from a cached large leaf, or walk the EPT."""
        need = 1 << (access - _ACCESS_BASE)
        for shift, leaves in self._leaves.items():
            leaf = leaves.get(gpa >> shift)
            if leaf is not None and leaf[1] & need:
                delta = gpa & ((1 << shift) - 1) & ~0xFFF
                return self._cache_page(gpa, (leaf[0] + delta, leaf[1],
                                              leaf[2] + delta if leaf[2] >= 0 else -1))
        self.walks += 1
        hpa, found, level = self.walker.walk(self.pml4, gpa & ~0xFFF, access - _ACCESS_BASE, self.ad)
        perms = int(found)
        if self.ad and access - _ACCESS_BASE != WRITE:
            perms &= ~int(EptPerm.W)      # the first write must walk again to set the D flag
        shift = _LEAF_SHIFTS.get(level, 12)
        base = (hpa >> shift) << shift
        try:
            offset = self.walker.offset(base, 1 << shift)   # a RAM leaf lies in one region
        except MemoryError_:
            offset = -1                    # MMIO: translatable, not readable as a page table
        leaf = (base, perms, offset)
        if shift != 12:
            self._leaves[shift][gpa >> shift] = leaf
        delta = hpa & ((1 << shift) - 1) & ~0xFFF
        return self._cache_page(gpa, (base + delta, perms, offset + delta if offset >= 0 else -1))

    def _cache_page(self, gpa: int, result: _Cached) -> _Cached:
        if len(self._pages) >= _MAX_CACHED:
            self._pages.clear()
        self._pages[gpa >> 12] = result
        return result

    def invept(self) -> None:
        """INVEPT (single-context): forget cached translations, and the vCPU's combined TLB."""
        self.forget()
        self._flush_cpu_tlb()

    def forget(self) -> None:
        """Drop the guest-physical cache only (the next translations walk the EPT)."""
        self._pages.clear()
        for leaves in self._leaves.values():
            leaves.clear()
