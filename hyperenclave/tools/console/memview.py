"""The console's view of guest memory: page walks done in software, with no side effect.

The vCPU's own walk (`VCpu.translate`) sets accessed/dirty bits and fills the EPT cache, as
the hardware does; a debugger must not. Here every paging-structure entry is read from
host-physical memory directly: the guest walk reads its tables through the EPT walk without
A/D updates, and nothing is cached. Supervisor reads ignore U/S and NX, like QEMU's debug
accesses (`cpu_memory_rw_debug`), so any present mapping can be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from hyperenclave.platform import paging
from hyperenclave.platform.cpu import REG_IDS, IdentityStage
from hyperenclave.platform.memory import MemoryError_
from hyperenclave.vmm.ept import (EPT_PAGE_SIZE, EPT_PERM_MASK, READ, EptFault, EptPerm,
                                  EptWalker)
from hyperenclave.vmm.ept_tlb import EptTlb

if TYPE_CHECKING:
    from hyperenclave.machine import Machine
    from hyperenclave.platform.cpu import VCpu

GUEST_LEVELS = ((39, "PML4E"), (30, "PDPTE"), (21, "PDE"), (12, "PTE"))
EPT_LEVELS = {4: "EPT PML4E", 3: "EPT PDPTE", 2: "EPT PDE", 1: "EPT PTE"}
_PTE_FLAGS = ((paging.PTE_P, "P"), (paging.PTE_RW, "RW"), (paging.PTE_US, "US"),
              (paging.PTE_PWT, "PWT"), (paging.PTE_PCD, "PCD"), (paging.PTE_A, "A"),
              (paging.PTE_D, "D"), (paging.PTE_PS, "PS"), (paging.PTE_G, "G"),
              (paging.PTE_NX, "NX"))


class ConsoleError(Exception):
    """A command cannot do what was asked; the message names what was wrong."""


@dataclass(frozen=True)
class Level:
    """One paging-structure entry a walk read."""

    name: str
    address: int        # where the entry is (guest-physical for the guest walk, host-physical for the EPT)
    value: int
    flags: str


@dataclass(frozen=True)
class SecondStage:
    """The EPT a translation goes through (None: identity, before the monitor launches)."""

    name: str
    walker: EptWalker | None
    pml4: int


def current_stage(cpu: "VCpu", vm_name: str) -> SecondStage:
    stage = cpu.second_stage
    if isinstance(stage, IdentityStage):
        return SecondStage("identity (no monitor)", None, 0)
    if isinstance(stage, EptTlb):
        return SecondStage(vm_name, stage.walker, stage.pml4)
    raise ConsoleError(f"unknown second stage {type(stage).__name__}")


def pte_flags(entry: int) -> str:
    return " ".join(name for bit, name in _PTE_FLAGS if entry & bit)


def ept_flags(entry: int, leaf: bool) -> str:
    perms = str(EptPerm(entry & EPT_PERM_MASK)) if entry & EPT_PERM_MASK else "---"
    if leaf:
        return f"{perms} memtype {(entry >> 3) & 7}" + (" A" if entry & 0x100 else "") + \
            (" D" if entry & 0x200 else "")
    return perms


class MemView:
    """Side-effect-free translation and reads for one machine's vCPU."""

    def __init__(self, machine: "Machine", vm_name: Callable[[], str]) -> None:
        self.machine = machine
        self._vm_name = vm_name

    @property
    def cpu(self) -> "VCpu":
        cpu = self.machine.cpu
        if cpu is None:
            raise ConsoleError("the machine has no vCPU (it is shut down)")
        return cpu

    # ------------------------------------------------------------------ second stage
    def stage(self) -> SecondStage:
        return current_stage(self.cpu, self._vm_name())

    def ept_levels(self, stage: SecondStage, gpa: int) -> list[Level]:
        if stage.walker is None:
            return []
        try:
            entries = stage.walker.entries(stage.pml4, gpa & ~0xFFF)
        except MemoryError_ as err:
            raise ConsoleError(f"EPT table outside RAM: {err}") from None
        return [Level(EPT_LEVELS[level], ea, e,
                      ept_flags(e, level == 1 or bool(e & EPT_PAGE_SIZE)))
                for level, ea, e in entries]

    def gpa_to_hpa(self, gpa: int, stage: SecondStage | None = None) -> int:
        """Guest-physical -> host-physical for a read; ConsoleError if the EPT maps nothing."""
        stage = stage or self.stage()
        if not 0 <= gpa < 1 << 48:
            raise ConsoleError(f"guest-physical address {gpa:#x} is outside the 48-bit space")
        if stage.walker is None:
            return gpa
        try:
            hpa, _perms, _level = stage.walker.walk(stage.pml4, gpa, READ, ad=False)
        except EptFault as fault:
            raise ConsoleError(f"guest-physical {gpa:#x} is not readable in the {stage.name} "
                               f"EPT ({fault})") from None
        except MemoryError_ as err:
            raise ConsoleError(f"EPT table outside RAM: {err}") from None
        return hpa

    # ------------------------------------------------------------------ guest walk
    def _read_table(self, gpa: int, stage: SecondStage) -> int:
        hpa = self.gpa_to_hpa(gpa, stage)
        try:
            return self.machine.memory.read_u64(hpa)
        except MemoryError_:
            raise ConsoleError(f"page-table entry at guest-physical {gpa:#x} is not RAM") from None

    def guest_levels(self, gva: int, cr3: int | None = None) -> tuple[list[Level], int | None]:
        """Every guest paging entry a walk of `gva` reads, and the guest-physical address
        (None when the walk ends at a non-present entry)."""
        cpu = self.cpu
        if gva >> 47 not in (0, 0x1FFFF) or gva >> 64:
            raise ConsoleError(f"{gva:#x} is not a canonical 64-bit address")
        if not cpu.reg("cr0") & paging.CR0_PG:
            return [], gva
        stage = self.stage()
        table = (cpu.reg("cr3") if cr3 is None else cr3) & paging.ADDR_MASK
        levels: list[Level] = []
        for shift, name in GUEST_LEVELS:
            entry_gpa = table + ((gva >> shift) & 0x1FF) * 8
            entry = self._read_table(entry_gpa, stage)
            levels.append(Level(name, entry_gpa, entry, pte_flags(entry)))
            if not entry & paging.PTE_P:
                return levels, None
            if shift == 12 or (shift in (30, 21) and entry & paging.PTE_PS):
                size = 1 << shift
                return levels, ((entry & paging.ADDR_MASK) & ~(size - 1)) | (gva & (size - 1))
            table = entry & paging.ADDR_MASK
        raise AssertionError("unreachable: a PTE is always a leaf")

    def gva_to_gpa(self, gva: int) -> int:
        levels, gpa = self.guest_levels(gva)
        if gpa is None:
            raise ConsoleError(f"virtual address {gva:#x} is not mapped ({levels[-1].name} at "
                               f"{levels[-1].address:#x} is {levels[-1].value:#x}, not present)")
        return gpa

    # ------------------------------------------------------------------ reads
    def read_virtual(self, gva: int, length: int) -> bytes:
        out = bytearray()
        while length:
            chunk = min(length, 0x1000 - (gva & 0xFFF))
            out += self.read_guest_physical(self.gva_to_gpa(gva), chunk)
            gva = (gva + chunk) & 0xFFFF_FFFF_FFFF_FFFF
            length -= chunk
        return bytes(out)

    def read_guest_physical(self, gpa: int, length: int) -> bytes:
        out = bytearray()
        stage = self.stage()
        while length:
            chunk = min(length, 0x1000 - (gpa & 0xFFF))
            out += self.read_host_physical(self.gpa_to_hpa(gpa, stage), chunk)
            gpa += chunk
            length -= chunk
        return bytes(out)

    def read_host_physical(self, hpa: int, length: int) -> bytes:
        try:
            return self.machine.memory.read(hpa, length)
        except MemoryError_:
            raise ConsoleError(f"host-physical range {hpa:#x}+{length:#x} is not RAM") from None


_TERM = re.compile(r"\s*([+-]?)\s*(\$[a-z0-9_]+|0x[0-9a-f]+|[0-9]+)\s*", re.IGNORECASE)


def parse_address(text: str, registers: Callable[[], dict[str, int]]) -> int:
    """An address as QEMU's monitor takes it: numbers (0x hex or decimal), `$reg`, and + / -
    between them (`$rsp+8`). `registers` is asked only if a register is named."""
    text = text.strip()
    if not text:
        raise ConsoleError("missing address")
    pos, value, regs = 0, 0, None
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m or m.end() == pos or (pos and not m.group(1)):
            raise ConsoleError(f"bad address {text!r}: use a number (0x...), $register and + or -")
        sign = -1 if m.group(1) == "-" else 1
        term = m.group(2).lower()
        if term.startswith("$"):
            name = term[1:]
            if name not in REG_IDS and name != "efer":
                raise ConsoleError(f"unknown register ${name} (registers: "
                                   f"{', '.join(sorted(REG_IDS))})")
            regs = regs if regs is not None else registers()
            number = regs[name]
        else:
            number = int(term, 16) if term.startswith("0x") else int(term, 10)
        value += sign * number
        pos = m.end()
    if value < 0 or value >> 64:
        raise ConsoleError(f"address {text!r} = {value:#x} is outside 64 bits")
    return value
