"""The DMA-remapping unit (a VT-d DRHD in spirit): every bus-master access goes through it.

Out of reset translation is off and a bus address is a host-physical address, so a device can
reach all of RAM. The monitor turns translation on with `enable(domain)` (on hardware: program
the root and context tables, then set GCMD.TE); from then on each request is translated by the
domain's second-level tables, one 4 KiB page at a time, and a blocked request is recorded like
a VT-d primary fault (fault recording registers, overflow when they are full) and reported to
the `listeners`, the way a fault event interrupt reaches the monitor's log.

The domain is the monitor's (`hyperenclave.vmm.iommu_tables.IommuDomain`); the platform does not
import the monitor, so it is typed by the `DmaDomain` protocol and its faults are recognised by
their `addr` and `reason` attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

PAGE_SIZE = 4096

# Request kinds: the values of `hyperenclave.vmm.ept.Access`, which the domain expects.
READ = 0
WRITE = 1

MAX_FAULT_RECORDS = 256
"""Fault recording registers of this unit (VT-d CAP.NFR + 1)."""


class DmaDomain(Protocol):
    """A DMA-remapping domain: second-level translation of one request."""

    def translate(self, iova: int, access: int) -> tuple[int, int, int]:
        """(host-physical address, permissions, leaf level); raises an exception with `addr`
        and `reason` attributes when the request is blocked."""
        ...


@dataclass(frozen=True)
class FaultRecord:
    """One primary fault, as a VT-d fault recording register holds it."""

    addr: int                 # the bus address of the blocked request (FI)
    access: int               # READ or WRITE (the FRCD T bit)
    reason: int               # VT-d fault reason (FR)
    source_id: int | None     # requester bus/device/function (SID)
    message: str              # what the domain said, for logs

    def __str__(self) -> str:
        return self.message


class IommuFault(Exception):
    """A request the remapping unit blocked; `record` is what it recorded."""

    def __init__(self, record: FaultRecord) -> None:
        super().__init__(record.message)
        self.record = record


class Iommu:
    """One remapping unit in front of all DMA-capable devices."""

    def __init__(self, max_faults: int = MAX_FAULT_RECORDS) -> None:
        self.domain: DmaDomain | None = None
        self.max_faults = max_faults
        self.faults: list[FaultRecord] = []
        self.fault_overflows = 0          # faults dropped while the records were full (FSTS.PFO)
        self.listeners: list[Callable[[FaultRecord], None]] = []

    @property
    def enabled(self) -> bool:
        """GSTS.TES: translation is on."""
        return self.domain is not None

    def enable(self, domain: DmaDomain) -> None:
        self.domain = domain

    def disable(self) -> None:
        """Back to pass-through, as when the monitor leaves (HC_DISABLE) or the machine resets."""
        self.domain = None

    def translate(self, bus_addr: int, access: int, source_id: int | None = None) -> int:
        """Host-physical address of one byte of a DMA request, or IommuFault.

        A request that crosses a 4 KiB boundary must be translated page by page: two
        adjacent bus pages need not map to adjacent host pages.
        """
        if self.domain is None:
            return bus_addr
        try:
            hpa, _perms, _level = self.domain.translate(bus_addr, access)
        except Exception as e:
            if not (hasattr(e, "addr") and hasattr(e, "reason")):
                raise
            raise IommuFault(self._record(FaultRecord(bus_addr, access, int(e.reason), source_id, str(e)))) from e
        return hpa

    def _record(self, record: FaultRecord) -> FaultRecord:
        if len(self.faults) < self.max_faults:
            self.faults.append(record)
        else:
            self.fault_overflows += 1
        for listener in self.listeners:
            listener(record)
        return record

    def clear_faults(self) -> None:
        """Software has read the fault records and cleared their F bits (and FSTS.PFO)."""
        self.faults.clear()
        self.fault_overflows = 0
