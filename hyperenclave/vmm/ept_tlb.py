"""An EPT as the vCPU's second translation stage, with the cache INVEPT flushes.

Every TLB fill of the vCPU asks `translate(gpa, access)`, which walks the EPT's tables in
emulated memory (through `EptWalker`, pointed to by the EPTP) exactly like the CPU. As on real
hardware the results are cached per guest-physical page (the "guest-physical mappings" of
SDM Vol. 3C 29.4): the cache holds only what a walk returned, and only `invept()` drops it,
so software that edits an EPT must INVEPT, as on real hardware.
"""

from __future__ import annotations

from typing import Callable

from .ept import EptWalker, parse_eptp

_ACCESS_BASE = 16        # paging.ACCESS_READ/WRITE/FETCH (16/17/18) -> ept READ/WRITE/FETCH
_MAX_CACHED = 1 << 16    # pages; a full flush beyond this keeps memory bounded


class EptTlb:
    """Second stage over the EPT named by an EPTP."""

    __slots__ = ("walker", "pml4", "ad", "_cache", "_flush_cpu_tlb", "walks")

    def __init__(self, walker: EptWalker, eptp: int, flush_cpu_tlb: Callable[[], None]) -> None:
        self.walker = walker
        self.pml4, self.ad = parse_eptp(eptp)
        self._cache: dict[int, tuple[int, int]] = {}
        self._flush_cpu_tlb = flush_cpu_tlb
        self.walks = 0

    def translate(self, gpa: int, access: int) -> tuple[int, int]:
        """Host-physical page and R/W/X (= UC_PROT_* bits) for `gpa`; raises EptViolation or
        EptMisconfig (both SecondStageFault) like the hardware walk."""
        page = gpa >> 12
        hit = self._cache.get(page)
        need = 1 << (access - _ACCESS_BASE)
        if hit is not None and hit[1] & need:
            return hit
        self.walks += 1
        hpa, perms, _level = self.walker.walk(self.pml4, gpa & ~0xFFF, access - _ACCESS_BASE, self.ad)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        result = (hpa & ~0xFFF, int(perms))
        self._cache[page] = result
        return result

    def invept(self) -> None:
        """INVEPT (single-context): forget cached translations, and the vCPU's combined TLB."""
        self.forget()
        self._flush_cpu_tlb()

    def forget(self) -> None:
        """Drop the guest-physical cache only (the next translations walk the EPT)."""
        self._cache.clear()
