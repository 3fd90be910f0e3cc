"""Event delivery through the guest IDT (SDM Vol. 3A 6.12, 6.14): Unicorn does not do it.

The same code serves exceptions on bare metal and, later, event injection by the monitor on
VM entry, as the VMCS's VM-entry interruption-information field does in hardware.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cpu import (DF, EXCEPTION_NAMES, EXCEPTIONS_WITH_ERROR_CODE, GP, NP, PF, MachineCheck,
                  SecondStageFault)
from .memory import MemoryError_
from .paging import PageFault

if TYPE_CHECKING:
    from .cpu import VCpu

RFLAGS_TF, RFLAGS_IF, RFLAGS_NT, RFLAGS_RF, RFLAGS_VM = 1 << 8, 1 << 9, 1 << 14, 1 << 16, 1 << 17
GATE_INTERRUPT, GATE_TRAP = 0xE, 0xF
TSS_RSP0, TSS_IST1 = 4, 0x24


@dataclass(frozen=True)
class IdtGate:
    """A decoded 16-byte IA-32e interrupt or trap gate."""

    offset: int
    selector: int
    ist: int
    type: int
    dpl: int
    present: bool

    @classmethod
    def decode(cls, raw: bytes) -> "IdtGate":
        lo, hi = struct.unpack("<QQ", raw)
        offset = (lo & 0xFFFF) | ((lo >> 48) & 0xFFFF) << 16 | (hi & 0xFFFF_FFFF) << 32
        return cls(offset, (lo >> 16) & 0xFFFF, (lo >> 32) & 7, (lo >> 40) & 0xF,
                   (lo >> 45) & 3, bool(lo >> 47 & 1))


class DeliveryFault(Exception):
    """A fault raised while delivering an event (a #PF carries its linear address)."""

    def __init__(self, vector: int, error_code: int, why: str, address: int = 0) -> None:
        super().__init__(why)
        self.vector = vector
        self.error_code = error_code
        self.address = address


CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})  # #DE #TS #NP #SS #GP (SDM Table 6-4)


def deliver(cpu: "VCpu", vector: int, *, rip: int, error_code: int | None = None,
            software: bool = False, external: bool = False, _cause: str = "") -> None:
    """Vector to the guest's handler for `vector` as the processor would (SDM 6.15, Table 6-5).

    A fault while delivering a contributory exception or #PF becomes #DF; a fault while
    delivering #DF is a triple fault (a machine reset); otherwise the new fault is delivered.
    """
    try:
        _deliver_once(cpu, vector, rip, error_code, software, external)
        return
    except DeliveryFault as first:
        fault = first
    cause = _cause or f"{_name(vector)} at rip {rip:#x}"
    if vector == DF:
        raise MachineCheck(f"triple fault: {fault} while delivering #DF for {cause}", reset=True,
                           triple_fault=True)
    first_is_serious = vector in CONTRIBUTORY or vector == PF
    second_is_serious = fault.vector in CONTRIBUTORY or fault.vector == PF
    if first_is_serious and second_is_serious or fault.vector == DF:
        why = f"{cause}: {_name(vector)} could not be delivered ({fault})"
        try:
            _deliver_once(cpu, DF, rip, 0, False, False)
        except DeliveryFault as second:
            raise MachineCheck(f"triple fault: {why}, then #DF failed ({second})",
                               reset=True, triple_fault=True) from None
        return
    if fault.vector == PF:
        cpu.set_reg("cr2", fault.address)
    deliver(cpu, fault.vector, rip=rip, error_code=fault.error_code, _cause=cause)


def _name(vector: int) -> str:
    return EXCEPTION_NAMES.get(vector, f"vector {vector:#x}")


def _read(cpu: "VCpu", vaddr: int, length: int, what: str, error_code: int) -> bytes:
    try:
        return cpu.read_virtual(vaddr, length, user=False)
    except (PageFault, SecondStageFault, MemoryError_) as e:
        raise DeliveryFault(GP, error_code, f"cannot read {what} at {vaddr:#x}: {e}") from None


def _deliver_once(cpu: "VCpu", vector: int, rip: int, error_code: int | None,
                  software: bool, external: bool) -> None:
    ext = 1 if external else 0
    idt_base, idt_limit = cpu.descriptor_table("idtr")
    idt_error = vector * 8 + 2 + ext
    if vector * 16 + 15 > idt_limit:
        raise DeliveryFault(GP, idt_error, f"{_name(vector)} is beyond the IDT limit {idt_limit:#x}")
    gate = IdtGate.decode(_read(cpu, idt_base + vector * 16, 16, "IDT gate", idt_error))
    cpl = cpu.cpl
    if gate.type not in (GATE_INTERRUPT, GATE_TRAP):
        raise DeliveryFault(GP, idt_error, f"IDT entry {vector:#x} is not a 64-bit gate")
    if software and cpl > gate.dpl:
        raise DeliveryFault(GP, idt_error, f"int {vector:#x} from CPL {cpl} to a DPL {gate.dpl} gate")
    if not gate.present:
        raise DeliveryFault(NP, idt_error, f"IDT entry {vector:#x} not present")
    gdt_base, gdt_limit = cpu.descriptor_table("gdtr")
    if (gate.selector | 7) > gdt_limit:
        raise DeliveryFault(GP, gate.selector & ~3, f"gate selector {gate.selector:#x} beyond GDT")
    desc = int.from_bytes(_read(cpu, gdt_base + (gate.selector & ~7), 8, "code descriptor",
                                gate.selector), "little")
    new_cpl = (desc >> 45) & 3
    if not desc >> 47 & 1 or not desc >> 43 & 1:
        raise DeliveryFault(GP, gate.selector & ~3, f"gate selector {gate.selector:#x} is not code")
    old_cs, old_ss, old_rsp, rflags = cpu.reg("cs"), cpu.reg("ss"), cpu.reg("rsp"), cpu.reg("rflags")
    if gate.ist or new_cpl < cpl:
        _, tss_base, _ = cpu.task_register()
        slot = TSS_IST1 + 8 * (gate.ist - 1) if gate.ist else TSS_RSP0 + 8 * new_cpl
        new_rsp = int.from_bytes(_read(cpu, tss_base + slot, 8, "TSS stack pointer", ext),
                                 "little")
    else:
        new_rsp = old_rsp
    new_rsp &= ~0xF
    frame = [old_ss, old_rsp, rflags, old_cs, rip]
    if vector in EXCEPTIONS_WITH_ERROR_CODE and not software and not external:
        frame.append(error_code or 0)
    new_rsp -= 8 * len(frame)
    try:
        cpu.write_virtual(new_rsp, struct.pack(f"<{len(frame)}Q", *reversed(frame)), user=False)
    except PageFault as e:
        raise DeliveryFault(PF, e.error_code, f"cannot push the {_name(vector)} frame at "
                            f"{new_rsp:#x}: {e}", e.address) from None
    except (SecondStageFault, MemoryError_) as e:
        raise DeliveryFault(DF, 0, f"cannot push the {_name(vector)} frame at {new_rsp:#x}: {e}") \
            from None
    if new_cpl != cpl:
        cpu.load_segments(new_cpl, (gate.selector & ~3) | new_cpl, new_cpl)  # SS = NULL | RPL
    elif (old_cs & ~3) != (gate.selector & ~3):
        cpu.set_reg("cs", (gate.selector & ~3) | cpl)
    cpu.set_reg("rsp", new_rsp)
    clear = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM
    if gate.type == GATE_INTERRUPT:
        clear |= RFLAGS_IF
    cpu.set_reg("rflags", rflags & ~clear)
    cpu.rip = gate.offset
