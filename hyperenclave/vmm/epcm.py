"""The Enclave Page Cache Map: the monitor's per-EPC-page security attributes (SDM Vol. 3D "EPCM";
HyperEnclave's `enclave/epcm.rs`), plus the pool of free EPC pages handed to enclaves.

An entry exists only while its page is VALID, and records the page type, R/W/X, the
PENDING/MODIFIED/PR/BLOCKED states, the owning enclave (the EPC address of its SECS) and the
enclave linear address the page was added at. The checks are the ones every page-adding leaf
(ECREATE, EADD, EAUG, EPA) makes, with the SDM's outcomes: a misaligned address is #GP(0), a
page already VALID is #PF(address), an owner that is not a valid SECS is #PF(owner), a non-EPC
address is SGX_PG_NONEPC (leaves that must fault turn that into #PF), and removing a SECS whose
enclave still has pages is SGX_CHILD_PRESENT.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .sgx import PAGE_SIZE, PageFlags, PageType, SgxError, SgxErrorCode, SgxFault

_UNOWNED = (PageType.PT_SECS, PageType.PT_VA)


class OutOfEpc(MemoryError):
    """Every EPC page is handed out."""


@dataclass
class EpcmEntry:
    """The attributes of one VALID EPC page."""

    page_type: PageType
    flags: PageFlags            # R/W/X, PENDING, MODIFIED, PR
    linear_address: int         # where the enclave sees the page (0 for SECS and VA pages)
    owner: int | None           # EPC address of the owning SECS (None for SECS and VA pages)
    blocked: bool = False


class Epcm:
    """EPCM and free-page pool for the EPC range [start, start + size)."""

    def __init__(self, start: int, size: int) -> None:
        if start % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
            raise ValueError(f"EPC {start:#x}+{size:#x} is not a non-empty page-aligned range")
        self.start = start
        self.size = size
        self.end = start + size
        self.pages = size // PAGE_SIZE
        self._entries: dict[int, EpcmEntry] = {}
        self._children: Counter[int] = Counter()     # SECS address -> pages it owns
        self._next_fresh = start                     # below: handed out at least once
        self._released: list[int] = []
        self._allocated: set[int] = set()

    def __contains__(self, address: int) -> bool:
        return self.start <= address < self.end

    def _check(self, address: int, what: str) -> None:
        if address % PAGE_SIZE:
            raise SgxFault.gp(f"{what} {address:#x} is not page-aligned")
        if address not in self:
            raise SgxError(SgxErrorCode.SGX_PG_NONEPC, f"{what} {address:#x} is outside the "
                           f"EPC [{self.start:#x}-{self.end - 1:#x}]")

    # --- the free-page pool (the driver's view) ---

    def allocate(self) -> int:
        """A free EPC page (lowest never-used one first, then the most recently released)."""
        if self._released:
            address = self._released.pop()
        elif self._next_fresh < self.end:
            address = self._next_fresh
            self._next_fresh += PAGE_SIZE
        else:
            raise OutOfEpc(f"all {self.pages} EPC pages are in use")
        self._allocated.add(address)
        return address

    def release(self, address: int) -> None:
        """Give an allocated page back; it must have been removed from the EPCM first."""
        self._check(address, "released page")
        if address not in self._allocated:
            raise ValueError(f"EPC page {address:#x} is not allocated")
        if address in self._entries:
            raise ValueError(f"EPC page {address:#x} is still VALID (EREMOVE it first)")
        self._allocated.remove(address)
        self._released.append(address)

    # --- the EPCM proper ---

    def get(self, address: int) -> EpcmEntry | None:
        """The entry of the EPC page at `address`, or None if the page is not VALID."""
        self._check(address, "EPC page")
        return self._entries.get(address)

    def add(self, address: int, page_type: PageType, flags: PageFlags = PageFlags(0),
            linear_address: int = 0, owner: int | None = None) -> EpcmEntry:
        """Make the page VALID with these attributes (ECREATE/EADD/EAUG/EPA)."""
        self._check(address, "EPC page")
        if linear_address % PAGE_SIZE:
            raise SgxFault.gp(f"linear address {linear_address:#x} is not page-aligned")
        if address in self._entries:
            raise SgxFault.pf(address, f"EPC page {address:#x} is already VALID "
                                       f"({self._entries[address].page_type.name})")
        if page_type in _UNOWNED:
            if owner is not None or linear_address:
                raise ValueError(f"a {page_type.name} page has no owner or linear address")
        else:
            if owner is None:
                raise ValueError(f"a {page_type.name} page needs its enclave's SECS")
            self._check(owner, "SECS")
            secs = self._entries.get(owner)
            if secs is None or secs.page_type != PageType.PT_SECS:
                raise SgxFault.pf(owner, f"{owner:#x} is not a valid SECS page")
            self._children[owner] += 1
        entry = EpcmEntry(page_type, flags, linear_address, owner)
        self._entries[address] = entry
        return entry

    def remove(self, address: int) -> None:
        """EREMOVE: make the page invalid (a no-op if it already is); a SECS only once its
        enclave has no pages left."""
        entry = self.get(address)
        if entry is None:
            return
        if entry.page_type == PageType.PT_SECS and self._children[address]:
            raise SgxError(SgxErrorCode.SGX_CHILD_PRESENT,
                           f"SECS {address:#x} still owns {self._children[address]} pages")
        if entry.owner is not None:
            self._children[entry.owner] -= 1
            if not self._children[entry.owner]:
                del self._children[entry.owner]
        del self._entries[address]

    def children(self, secs: int) -> list[int]:
        """EPC addresses of the pages the enclave with this SECS owns, in address order."""
        return sorted(a for a, e in self._entries.items() if e.owner == secs)

    def summary(self) -> dict[str, int]:
        """Counts for a console: pool usage, VALID pages per type and per state."""
        entries = self._entries.values()
        counts = {
            "pages": self.pages,
            "free": self.pages - len(self._allocated),
            "allocated": len(self._allocated),
            "valid": len(self._entries),
            "enclaves": sum(e.page_type == PageType.PT_SECS for e in entries),
        }
        for page_type in PageType:
            counts[page_type.name] = sum(e.page_type == page_type for e in entries)
        for state in (PageFlags.PENDING, PageFlags.MODIFIED, PageFlags.PR):
            counts[state.name] = sum(bool(e.flags & state) for e in entries)
        counts["BLOCKED"] = sum(e.blocked for e in entries)
        return counts
