"""A bare vCPU with a hand-built GDT/IDT/TSS and page tables, for platform unit tests.

Layout (physical = virtual for the low 1 GiB, user pages marked U/S):
  0x1000 GDT   0x2000 IDT   0x3000 TSS   0x10000 page tables   0x100000 kernel code
  0x200000 user code   0x300000 kernel stack top   0x380000 IST1 stack top   0x400000 user stack
"""

from __future__ import annotations

import struct
import time

from hyperenclave.platform.cpu import VCpu
from hyperenclave.platform.devices.bus import IoBus
from hyperenclave.platform.memory import MiB, PhysicalMemory

from .asm import assemble

GDT, IDT, TSS, PML4 = 0x1000, 0x2000, 0x3000, 0x10000
KERNEL, USER = 0x100000, 0x200000
KSTACK, ISTSTACK, USTACK = 0x300000, 0x380000, 0x400000
KCS, KDS, UDS, UCS, TSS_SEL = 0x10, 0x18, 0x2B, 0x33, 0x40


class Recorder:
    """Port 0xE9 (Bochs debug port) collects what the guest reports; a write to 0xEA powers
    the machine off (the snippet is done)."""

    def __init__(self, bus: IoBus) -> None:
        self.ports = range(0xE9, 0xEB)
        self.values: list[int] = []
        self.bus = bus

    def port_read(self, port: int, size: int) -> int:
        return 0

    def port_write(self, port: int, size: int, value: int) -> None:
        if port == 0xEA:
            self.bus.request_stop("poweroff")
        else:
            self.values.append(value)


def gate(offset: int, selector: int = KCS, ist: int = 0, typ: int = 0xE, dpl: int = 0) -> bytes:
    lo = (offset & 0xFFFF) | selector << 16 | ist << 32 | (0x80 | dpl << 5 | typ) << 40 \
        | ((offset >> 16) & 0xFFFF) << 48
    return struct.pack("<QQ", lo, offset >> 32)


class BareMetal:
    def __init__(self) -> None:
        self.memory = PhysicalMemory(64 * MiB)
        self.bus = IoBus()
        self.recorder = Recorder(self.bus)
        self.bus.add_port_device(self.recorder)
        self.cpu = VCpu(self.memory, self.bus, time.perf_counter_ns)
        m = self.memory
        # 4-level tables: PML4[0] -> PDPT -> PD with 2 MiB pages for 0-64 MiB, all U/S.
        m.write_u64(PML4, (PML4 + 0x1000) | 7)
        m.write_u64(PML4 + 0x1000, (PML4 + 0x2000) | 7)
        for i in range(32):
            m.write_u64(PML4 + 0x2000 + 8 * i, (i << 21) | 0x87)
        gdt = [0, 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00CF92000000FFFF,
               0x00CFF2000000FFFF, 0x00AFFA000000FFFF, 0]
        tss_lo = 0x67 | (TSS & 0xFFFFFF) << 16 | 0x89 << 40 | ((TSS >> 24) & 0xFF) << 56
        gdt += [tss_lo, TSS >> 32]
        m.write(GDT, struct.pack(f"<{len(gdt)}Q", *gdt))
        m.write_u64(TSS + 4, KSTACK)        # RSP0
        m.write_u64(TSS + 0x24, ISTSTACK)   # IST1
        cpu = self.cpu
        cpu.set_descriptor_table("gdtr", GDT, len(gdt) * 8 - 1)
        cpu.set_descriptor_table("idtr", IDT, 256 * 16 - 1)
        cpu.set_reg("cr3", PML4)
        cpu.set_reg("cr4", cpu.reg("cr4") | 0x20)
        cpu.set_reg("cr0", cpu.reg("cr0") | 0x8001_0001)
        cpu.set_msr(0xC0000080, 0xD01)  # SCE | LME | LMA | NXE
        cpu.load_segments(0, KCS, KDS)
        from unicorn.x86_const import UC_X86_REG_TR
        cpu.uc.reg_write(UC_X86_REG_TR, (TSS_SEL, TSS, 0x67, 0x89))
        cpu.set_reg("rsp", KSTACK - 0x100)

    def set_gate(self, vector: int, offset: int, **kw: int) -> None:
        self.memory.write(IDT + 16 * vector, gate(offset, **kw))

    def load(self, addr: int, source: str) -> bytes:
        code = assemble(source, addr)
        self.memory.write(addr, code)
        return code

    def run(self, rip: int, slices: int = 50) -> None:
        self.cpu.rip = rip
        for _ in range(slices):
            if self.bus.stop_requested:
                return
            self.cpu.run_slice(20_000)
