"""The DMA test engine: a bus-master memory-to-memory copier on port I/O.

Registers (32-bit, at DMA_BASE; the contract is `hyperenclave/guest/include/hyperenclave.h`):

    0x00 SRC_LO  0x04 SRC_HI   source bus address
    0x08 DST_LO  0x0C DST_HI   destination bus address
    0x10 LEN                   bytes, at most 1 MiB
    0x14 CMD                   write DMA_CMD_COPY to start (reads 0)
    0x18 STATUS                0 idle, DMA_STATUS_DONE, DMA_STATUS_FAULT
    0x1C FAULT_LO 0x20 FAULT_HI   first blocked bus address
    0x24 FAULT_REASON          VT-d fault reason, or one of the engine's own (below)

Both the reads of the source and the writes of the destination are DMA: each goes through the
IOMMU, page by page. The copy proceeds in chunks that cross no 4 KiB page of either side; for
each chunk the source page is translated, then the destination page, then the bytes move. The
first blocked request stops the copy, so everything before it was copied and nothing after it
was written (a read fault writes nothing more). Requests the engine refuses itself:

    FAULT_REASON 0       LEN above 1 MiB (nothing is copied, FAULT_LO/HI = 0)
    FAULT_REASON 0x100   master abort: the host-physical address is not RAM (not a VT-d
                         reason, which is 8 bits)

Unicorn may run an I/O instruction again when a time slice ends inside the device callback,
so a CMD write only latches the request (with the SRC/DST/LEN it was given) and the copy runs
when STATUS is next read: a repeated CMD write latches the same request again, a repeated
STATUS read finds nothing latched and returns the same status.
"""

from __future__ import annotations

from ..iommu import PAGE_SIZE, READ, WRITE, Iommu, IommuFault
from ..memory import MiB, PhysicalMemory

DMA_BASE = 0xD000
DMA_SRC_LO, DMA_SRC_HI, DMA_DST_LO, DMA_DST_HI = 0x00, 0x04, 0x08, 0x0C
DMA_LEN, DMA_CMD, DMA_STATUS = 0x10, 0x14, 0x18
DMA_FAULT_LO, DMA_FAULT_HI, DMA_FAULT_REASON = 0x1C, 0x20, 0x24
DMA_PORTS = 0x28
DMA_CMD_COPY = 1
DMA_STATUS_IDLE, DMA_STATUS_DONE, DMA_STATUS_FAULT = 0, 1, 2
DMA_MAX_LEN = 1 * MiB

DMA_FAULT_BAD_LENGTH = 0
DMA_FAULT_MASTER_ABORT = 0x100

DMA_SOURCE_ID = 0x0020
"""Requester id of the engine: bus 0, device 4, function 0."""


class _Blocked(Exception):
    def __init__(self, addr: int, reason: int) -> None:
        self.addr = addr
        self.reason = reason


class DmaEngine:
    """The copy engine; `transfers`, `faults` and `bytes_copied` count what it did."""

    def __init__(self, memory: PhysicalMemory, iommu: Iommu, source_id: int = DMA_SOURCE_ID) -> None:
        self.ports = range(DMA_BASE, DMA_BASE + DMA_PORTS)
        self.memory = memory
        self.iommu = iommu
        self.source_id = source_id
        self._program = bytearray(DMA_CMD)       # SRC, DST, LEN as the guest wrote them
        self._latched: tuple[int, int, int] | None = None
        self.status = DMA_STATUS_IDLE
        self.fault_addr = 0
        self.fault_reason = 0
        self.transfers = 0
        self.faults = 0
        self.bytes_copied = 0

    # ------------------------------------------------------------------ registers
    def _reg(self, offset: int) -> int:
        return int.from_bytes(self._program[offset:offset + 4], "little")

    def port_write(self, port: int, size: int, value: int) -> None:
        for i, byte in enumerate((value & ((1 << 8 * size) - 1)).to_bytes(size, "little")):
            offset = port - DMA_BASE + i
            if offset < DMA_CMD:
                self._program[offset] = byte
            elif offset == DMA_CMD and byte & DMA_CMD_COPY:
                self._latched = (self._reg(DMA_SRC_LO) | self._reg(DMA_SRC_HI) << 32,
                                 self._reg(DMA_DST_LO) | self._reg(DMA_DST_HI) << 32,
                                 self._reg(DMA_LEN))
            # STATUS and FAULT_* are read-only

    def port_read(self, port: int, size: int) -> int:
        offset = port - DMA_BASE
        if offset <= DMA_STATUS < offset + size and self._latched is not None:
            request, self._latched = self._latched, None
            self._run(*request)
        regs = bytes(self._program) + b"\0" * 4 + b"".join(v.to_bytes(4, "little") for v in (
            self.status, self.fault_addr & 0xFFFF_FFFF, self.fault_addr >> 32, self.fault_reason))
        data = regs[offset:offset + size].ljust(size, b"\xff")  # past the last register: no device
        return int.from_bytes(data, "little")

    # ------------------------------------------------------------------ the transfer
    def _run(self, src: int, dst: int, length: int) -> None:
        try:
            if length > DMA_MAX_LEN:
                raise _Blocked(0, DMA_FAULT_BAD_LENGTH)
            self._copy(src, dst, length)
        except _Blocked as b:
            self.status, self.fault_addr, self.fault_reason = DMA_STATUS_FAULT, b.addr, b.reason
            self.faults += 1
        else:
            self.status, self.fault_addr, self.fault_reason = DMA_STATUS_DONE, 0, 0
            self.transfers += 1

    def _copy(self, src: int, dst: int, length: int) -> None:
        done = 0
        while done < length:
            s, d = src + done, dst + done
            chunk = min(length - done, PAGE_SIZE - (s & 0xFFF), PAGE_SIZE - (d & 0xFFF))
            data = self.memory.read(self._host_address(s, chunk, READ), chunk)
            self.memory.write(self._host_address(d, chunk, WRITE), data)
            done += chunk
            self.bytes_copied += chunk

    def _host_address(self, bus_addr: int, length: int, access: int) -> int:
        """Where a request within one bus page lands in RAM, or _Blocked."""
        try:
            hpa = self.iommu.translate(bus_addr, access, self.source_id)
        except IommuFault as f:
            raise _Blocked(bus_addr, f.record.reason) from f
        if not self.memory.is_ram(hpa, length):
            raise _Blocked(bus_addr, DMA_FAULT_MASTER_ABORT)
        return hpa
