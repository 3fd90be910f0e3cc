"""`struct boot_params`, mirrored from guest/include/bootparam.h (docs/boot-protocol.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

BOOT_PARAMS_ADDR = 0x1000
CMDLINE_ADDR = 0x2000
CMDLINE_MAX = 0x1000
LOADER_ADDR = 0x7000
FIRMWARE_AREA = (0x10000, 0x10000)       # entry page tables, GDT, stack
EVENTLOG_AREA = (0x80000, 0x20000)       # TCG event log, 128 KiB
KERNEL_MIN_ADDR = 0x100000
INITRD_ADDR = 0x400_0000
BOOT_PARAMS_MAGIC = 0x31304F4F42455448   # "HTEBOO01"
E820_RAM, E820_RESERVED = 1, 2
E820_MAX = 32
TSC_KHZ = 1_000_000

_HEADER = struct.Struct("<QQQQQQQQQII")
_E820 = struct.Struct("<QQII")


@dataclass
class BootParams:
    kernel_entry: int
    cmdline_addr: int
    initrd_addr: int
    initrd_size: int
    eventlog_addr: int
    eventlog_size: int
    eventlog_max: int
    tsc_khz: int = TSC_KHZ
    e820: list[tuple[int, int, int]] = field(default_factory=list)

    def pack(self) -> bytes:
        if len(self.e820) > E820_MAX:
            raise ValueError("too many e820 entries")
        head = _HEADER.pack(BOOT_PARAMS_MAGIC, self.kernel_entry, self.cmdline_addr,
                            self.initrd_addr, self.initrd_size, self.eventlog_addr,
                            self.eventlog_size, self.eventlog_max, self.tsc_khz, len(self.e820), 0)
        body = b"".join(_E820.pack(a, s, t, 0) for a, s, t in self.e820)
        return head + body + bytes(_E820.size * (E820_MAX - len(self.e820)))

    @classmethod
    def unpack(cls, raw: bytes) -> "BootParams":
        (magic, entry, cmd, ird, irs, ela, els, elm, tsc, count, _) = _HEADER.unpack_from(raw)
        if magic != BOOT_PARAMS_MAGIC:
            raise ValueError(f"boot_params magic is {magic:#x}, expected {BOOT_PARAMS_MAGIC:#x}")
        if count > E820_MAX:
            raise ValueError(f"boot_params says {count} e820 entries (max {E820_MAX})")
        e820 = [_E820.unpack_from(raw, _HEADER.size + i * _E820.size)[:3] for i in range(count)]
        return cls(entry, cmd, ird, irs, ela, els, elm, tsc, e820)
