"""x86-64 page tables the monitor builds for an enclave (HyperEnclave's monitor-owned GPT).

The enclave's linear addresses are translated by these tables, not the host's: the host cannot
remap an enclave page, and the monitor decides each page's R/W/X from its SECINFO. The tables
live in monitor memory (frames from the monitor's heap) in the ordinary x86 format, so the
vCPU's page walker reads them like any other; A and D are preset so the walk never writes.
"""

from __future__ import annotations

import struct

from hyperenclave.platform.memory import FrameAllocator, PhysicalMemory
from hyperenclave.platform.paging import ADDR_MASK, PTE_A, PTE_D, PTE_NX, PTE_P, PTE_RW, PTE_US

_U64 = struct.Struct("<Q")
_TABLE_FLAGS = PTE_P | PTE_RW | PTE_US | PTE_A


class GuestPageTable:
    """A 4-level, 4 KiB-page x86-64 page table in emulated physical memory."""

    def __init__(self, memory: PhysicalMemory, frames: FrameAllocator) -> None:
        self.memory = memory
        self.frames = frames
        self.tables: list[int] = [frames.alloc()]

    @property
    def root(self) -> int:
        """The CR3 value (PML4 physical address)."""
        return self.tables[0]

    def map(self, vaddr: int, paddr: int, *, writable: bool, executable: bool) -> None:
        """Map one user page: present, user, A (and D when writable) preset."""
        table = self.root
        for shift in (39, 30, 21):
            slot = table + ((vaddr >> shift) & 0x1FF) * 8
            entry = self.memory.read_u64(slot)
            if not entry & PTE_P:
                child = self.frames.alloc()
                self.tables.append(child)
                entry = child | _TABLE_FLAGS
                self.memory.write_u64(slot, entry)
            table = entry & ADDR_MASK
        leaf = paddr | PTE_P | PTE_US | PTE_A
        if writable:
            leaf |= PTE_RW | PTE_D
        if not executable:
            leaf |= PTE_NX
        self.memory.write_u64(table + ((vaddr >> 12) & 0x1FF) * 8, leaf)

    def unmap(self, vaddr: int) -> int | None:
        """Clear one leaf; the physical page it mapped, or None if nothing was mapped. Tables
        stay (they are freed with the whole page table)."""
        table = self.root
        for shift in (39, 30, 21):
            entry = self.memory.read_u64(table + ((vaddr >> shift) & 0x1FF) * 8)
            if not entry & PTE_P:
                return None
            table = entry & ADDR_MASK
        slot = table + ((vaddr >> 12) & 0x1FF) * 8
        leaf = self.memory.read_u64(slot)
        if not leaf & PTE_P:
            return None
        self.memory.write_u64(slot, 0)
        return leaf & ADDR_MASK

    def destroy(self) -> None:
        """Scrub and give back every table frame."""
        for frame in self.tables:
            self.memory.fill(frame, 0x1000)
            self.frames.free(frame)
        self.tables.clear()
