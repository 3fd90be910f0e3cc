"""Reading and writing guest memory named by a hypercall pointer (HyperEnclave's `gaccess.rs`).

A pointer from the host is a guest-virtual address: it is walked through the host's own page
tables (as the CPU would, for the caller's privilege), and every guest-physical page it lands
on must be normal host RAM: not monitor memory, not EPC, not MMIO, not outside RAM. Only then
does the monitor touch it (guest-physical = host-physical for host RAM under the root EPT).
This is what stops a confused-deputy pointer into the EPC or the monitor itself.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Iterable

from hyperenclave.platform.paging import ACCESS_READ, ACCESS_WRITE, PageFault

from .hypercall import HypercallError

if TYPE_CHECKING:
    from hyperenclave.platform.cpu import VCpu
    from hyperenclave.platform.memory import PhysicalMemory

MAX_ACCESS = 1 << 20     # the most one hypercall argument may name


class GuestMemory:
    """Checked access to the host's memory for one monitor instance."""

    def __init__(self, memory: "PhysicalMemory", forbidden: Iterable[tuple[str, int, int]]) -> None:
        """`forbidden`: (name, start, size) ranges no pointer may reach (monitor memory, EPC)."""
        self.memory = memory
        self.forbidden = [(name, start, start + size) for name, start, size in forbidden]

    def check_gpa(self, gpa: int, length: int, what: str) -> None:
        for name, start, end in self.forbidden:
            if gpa < end and gpa + length > start:
                raise HypercallError(errno.EFAULT, f"{what} at GPA {gpa:#x} is in {name} "
                                     f"[{start:#x}-{end - 1:#x}]")
        if not self.memory.is_ram(gpa, length):
            raise HypercallError(errno.EFAULT, f"{what} at GPA {gpa:#x} is not RAM")

    def _pages(self, cpu: "VCpu", gva: int, length: int, access: int, what: str
               ) -> list[tuple[int, int]]:
        if not 0 < length <= MAX_ACCESS:
            raise HypercallError(errno.EINVAL, f"{what}: length {length} is out of range")
        if gva + length > 1 << 64:
            raise HypercallError(errno.EFAULT, f"{what}: {gva:#x}+{length:#x} wraps around")
        pages = []
        while length:
            chunk = min(length, 0x1000 - (gva & 0xFFF))
            try:
                gpa = cpu.guest_physical(gva, access)
            except PageFault as fault:
                raise HypercallError(errno.EFAULT, f"{what}: guest page walk for {gva:#x} "
                                     f"failed (#PF error {fault.error_code:#x})") from None
            self.check_gpa(gpa, chunk, what)
            pages.append((gpa, chunk))
            gva += chunk
            length -= chunk
        return pages

    def read(self, cpu: "VCpu", gva: int, length: int, what: str = "pointer") -> bytes:
        return b"".join(self.memory.read(gpa, n)
                        for gpa, n in self._pages(cpu, gva, length, ACCESS_READ, what))

    def write(self, cpu: "VCpu", gva: int, data: bytes, what: str = "pointer") -> None:
        pages = self._pages(cpu, gva, len(data), ACCESS_WRITE, what)   # all checked first
        pos = 0
        for gpa, n in pages:
            self.memory.write(gpa, data[pos:pos + n])
            pos += n
