"""DMA-remapping (VT-d) second-level page tables for the monitor's IOMMU domains.

A VT-d second-level table has the EPT layout for everything we use: 4 levels (AGAW 48 bits),
R = bit 0, W = bit 1, page size = bit 7 in the PDPTE/PDE, address bits 51:12. So a domain is
an `Ept` whose walks report DMA faults instead of EPT exits. Differences from real VT-d that do
not matter here: VT-d allows write-only entries (our tables never contain any; `map` refuses
them) and only checks leaf memory types with extended memory types enabled (our leaves are WB).

Unlike the root EPT, where monitor memory and EPC read as a zero page, a DMA domain leaves them
ABSENT: a device reading or writing them gets a fault ([HE] `iommu/mod.rs`: the IOMMU table
holds only DMA-capable RAM and RMRR ranges).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Iterable

from hyperenclave.platform.memory import FrameAllocator, PhysicalMemory
from hyperenclave.vmm.ept import (
    FETCH,
    GPA_LIMIT,
    READ,
    WRITE,
    Access,
    Ept,
    EptMisconfig,
    EptPerm,
    EptViolation,
    MemType,
    _as_range,
)

__all__ = ["DmaFaultReason", "DmaFault", "IommuDomain", "build_dma_domain", "CONTEXT_AW_48BIT"]

CONTEXT_AW_48BIT = 0b010
"""Context-entry address width for a 4-level (48-bit AGAW) second-level table."""


class DmaFaultReason(IntEnum):
    """VT-d non-recoverable fault reasons (legacy-mode translation) this module can raise."""

    CONTEXT_NOT_PRESENT = 0x2      # no domain for the source id (for a remapping unit to use)
    ADDRESS_BEYOND_AGAW = 0x4
    WRITE_DENIED = 0x5             # second-level entry not present or W clear, on a write
    READ_DENIED = 0x6              # second-level entry not present or R clear, on a read
    SL_RESERVED = 0xC              # non-zero reserved field in a second-level entry


class DmaFault(Exception):
    """A DMA request the remapping hardware blocks (recorded in a fault-recording register)."""

    def __init__(self, addr: int, access: Access, reason: DmaFaultReason, source_id: int | None = None,
                 domain_id: int | None = None) -> None:
        self.addr = addr
        self.access = Access(access)
        self.reason = DmaFaultReason(reason)
        self.source_id = source_id
        self.domain_id = domain_id
        sid = "" if source_id is None else f" from {source_id >> 8:02x}:{(source_id >> 3) & 0x1F:02x}.{source_id & 7}"
        super().__init__(f"DMA fault {self.reason.value:#x} ({self.reason.name}): {self.access.name} "
                         f"at {addr:#x}{sid}")


class IommuDomain(Ept):
    """One DMA-remapping domain: a second-level table plus its domain id."""

    def __init__(self, memory: PhysicalMemory, frames: FrameAllocator, domain_id: int = 1) -> None:
        if not 0 <= domain_id < 1 << 16:
            raise ValueError(f"domain id {domain_id} does not fit 16 bits")
        super().__init__(memory, frames, ad=False)
        self.domain_id = domain_id

    @property
    def slptptr(self) -> int:
        """Second-level page-table pointer (the PML4 address) for the context entry."""
        return self.pml4

    def context_entry(self) -> tuple[int, int]:
        """(low, high) qwords of a legacy-mode context entry pointing at this domain:
        present, translation type 00 (untranslated requests through the second level),
        SLPTPTR, AW = 48-bit, DID = `domain_id`."""
        return self.slptptr | 1, CONTEXT_AW_48BIT | (self.domain_id << 8)

    def translate(self, iova: int, access: int = READ, source_id: int | None = None) -> tuple[int, EptPerm, int]:
        """Translate a DMA address for a READ or WRITE request: (hpa, perms, leaf level).

        Raises `DmaFault` for an absent page, a missing permission, a reserved bit or an address
        beyond the 48-bit AGAW.
        """
        if access == FETCH:
            raise ValueError("DMA requests are reads or writes")
        if not 0 <= iova < GPA_LIMIT:
            raise DmaFault(iova, access, DmaFaultReason.ADDRESS_BEYOND_AGAW, source_id, self.domain_id)
        try:
            return self.walker.walk(self.pml4, iova, access)
        except EptViolation as e:
            reason = DmaFaultReason.WRITE_DENIED if access == WRITE else DmaFaultReason.READ_DENIED
            raise DmaFault(iova, access, reason, source_id, self.domain_id) from e
        except EptMisconfig as e:
            raise DmaFault(iova, access, DmaFaultReason.SL_RESERVED, source_id, self.domain_id) from e


def build_dma_domain(memory: PhysicalMemory, frames: FrameAllocator, dma_regions: Iterable,
                     holes: Iterable = (), rmrr: Iterable = (), *, domain_id: int = 1) -> IommuDomain:
    """The DMA domain of the host's devices: identity (IOVA = HPA), read/write, WB.

    `dma_regions` are (base, size) pairs or `Region`s of DMA-capable RAM; `holes` (monitor
    memory, EPC) are removed from them and stay absent; `rmrr` ranges (reserved-memory regions
    firmware says devices use) are identity-mapped afterwards, even inside a hole.
    """
    dom = IommuDomain(memory, frames, domain_id)
    for r in dma_regions:
        base, size = _as_range(r)
        dom.map(base, base, size, EptPerm.RW, MemType.WB)
    for h in holes:
        base, size = _as_range(h)
        dom.unmap(base, size)
    for r in rmrr:
        base, size = _as_range(r)
        dom.map(base, base, size, EptPerm.RW, MemType.WB)
    return dom
