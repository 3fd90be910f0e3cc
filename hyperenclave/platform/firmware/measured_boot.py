"""The firmware's boot path: measure each stage into the TPM and the TCG log, then load it.

Follows what PC firmware and GRUB record (TCG PC Client PFP): S-CRTM version and firmware code
in PCR0, platform configuration in PCR1, the boot loader in PCR4, the memory map and boot
configuration in PCR5, the kernel command line in PCR8, kernel and initramfs in PCR9, and a
separator closing PCRs 0-7 before the boot loader runs.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ...tpm import eventlog as tcg
from ..cpu import VCpu
from ..memory import MiB, PhysicalMemory, ReservedRange
from .bootparam import (BOOT_PARAMS_ADDR, CMDLINE_ADDR, CMDLINE_MAX, E820_RAM, E820_RESERVED,
                        EVENTLOG_AREA, FIRMWARE_AREA, INITRD_ADDR, KERNEL_MIN_ADDR, LOADER_ADDR,
                        BootParams)
from .loader import ImageError, load_kernel_elf

FIRMWARE_VERSION = "HyperEnclave-emu firmware 0.1"

# Entry page tables and GDT inside FIRMWARE_AREA.
PML4, PDPT_LOW, PDPT_HIGH, GDT = 0x10000, 0x11000, 0x12000, 0x13000
STACK_TOP = 0x1FFF0
KERNEL_CS, KERNEL_DS = 0x08, 0x10
HIGH_HALF_PML4 = 511          # 0xFFFFFFFF80000000: PDPT slots 510, 511
DIRECT_MAP_PML4 = 0x111       # 0xFFFF888000000000 (Linux PAGE_OFFSET)


class Extender(Protocol):
    def pcr_extend(self, index: int, sha256_digest: bytes) -> None: ...


@dataclass(frozen=True)
class BootImages:
    """The bytes the firmware boots: what the guest build produced."""

    loader: bytes
    kernel: bytes
    initramfs: bytes


def firmware_digest() -> bytes:
    """The firmware's own code identity: its source files, in a fixed order."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.digest()


class MeasuredBoot:
    """Measures, loads and enters the host; one instance per boot."""

    def __init__(self, memory: PhysicalMemory, tpm: Extender, config: dict[str, object]) -> None:
        self.memory = memory
        self.tpm = tpm
        self.config = config
        self.log = tcg.EventLog()

    def measure(self, pcr: int, event_type: int, data: bytes, digest: bytes | None = None) -> None:
        digest = digest if digest is not None else hashlib.sha256(data).digest()
        self.tpm.pcr_extend(pcr, digest)
        self.log.append(pcr, event_type, data, digest)

    def e820(self) -> list[tuple[int, int, int]]:
        """The memory map: firmware's first MiB reserved, the rest RAM (memmap= is the kernel's job)."""
        table = [(0, KERNEL_MIN_ADDR, E820_RESERVED)]
        for region in self.memory.regions:
            base = max(region.base, KERNEL_MIN_ADDR)
            table.append((base, region.end - base, E820_RAM))
        return table

    def boot(self, cpu: VCpu, images: BootImages, cmdline: str) -> BootParams:
        if len(cmdline.encode()) >= CMDLINE_MAX:
            raise ImageError(f"kernel command line is {len(cmdline)} bytes (max {CMDLINE_MAX - 1})")
        if len(images.loader) > 0x1000:
            raise ImageError(f"boot loader is {len(images.loader)} bytes (max 4096)")
        if INITRD_ADDR + len(images.initramfs) > self.memory.regions[0].end:
            raise ImageError("initramfs does not fit in low RAM")
        reserved = ReservedRange.from_cmdline(cmdline)
        e820 = self.e820()

        # PCR0: S-CRTM version and firmware code; PCR1: platform configuration.
        self.measure(0, tcg.EV_S_CRTM_VERSION, tcg.encode_utf16(FIRMWARE_VERSION))
        self.measure(0, tcg.EV_POST_CODE, b"POST CODE", firmware_digest())
        config = json.dumps(self.config, sort_keys=True).encode()
        self.measure(1, tcg.EV_EVENT_TAG, tcg.encode_event_tag(1, config))
        # Ready to boot: separators close the pre-OS PCRs.
        for pcr in range(8):
            self.measure(pcr, tcg.EV_SEPARATOR, b"\0\0\0\0")
        # PCR4: the boot loader image; PCR5: the memory map it will hand over.
        self.measure(4, tcg.EV_EFI_BOOT_SERVICES_APPLICATION,
                     tcg.encode_image_load_event(LOADER_ADDR, len(images.loader), LOADER_ADDR),
                     hashlib.sha256(images.loader).digest())
        e820_bytes = b"".join(struct.pack("<QQI", *entry) for entry in e820)
        self.measure(5, tcg.EV_EVENT_TAG, tcg.encode_event_tag(0xE820, e820_bytes))
        # GRUB-style: command line in PCR8, kernel and initramfs in PCR9.
        self.measure(8, tcg.EV_IPL, b"kernel_cmdline: " + cmdline.encode() + b"\0",
                     hashlib.sha256(cmdline.encode()).digest())
        self.measure(9, tcg.EV_IPL, b"/boot/vmlinuz\0", hashlib.sha256(images.kernel).digest())
        self.measure(9, tcg.EV_IPL, b"/boot/initramfs.cpio\0", hashlib.sha256(images.initramfs).digest())

        mem = self.memory
        mem.write(LOADER_ADDR, images.loader)
        kernel = load_kernel_elf(mem, images.kernel)
        if kernel.end > INITRD_ADDR:
            raise ImageError(f"kernel ends at {kernel.end:#x}, over the initramfs at {INITRD_ADDR:#x}")
        if reserved and reserved.start < INITRD_ADDR + len(images.initramfs):
            raise ImageError(f"{reserved} overlaps the kernel or initramfs")
        mem.write(INITRD_ADDR, images.initramfs)
        mem.write(CMDLINE_ADDR, cmdline.encode() + b"\0")
        log = self.log.to_bytes()
        if len(log) > EVENTLOG_AREA[1]:
            raise ImageError("event log does not fit its area")
        mem.fill(*EVENTLOG_AREA)
        mem.write(EVENTLOG_AREA[0], log)
        params = BootParams(kernel.entry, CMDLINE_ADDR, INITRD_ADDR, len(images.initramfs),
                            EVENTLOG_AREA[0], len(log), EVENTLOG_AREA[1], e820=e820)
        mem.write(BOOT_PARAMS_ADDR, params.pack())
        self._enter_long_mode(cpu)
        return params

    def _enter_long_mode(self, cpu: VCpu) -> None:
        """Page tables, GDT and registers for the loader, as docs/boot-protocol.md promises."""
        mem = self.memory
        mem.fill(*FIRMWARE_AREA)
        for i in range(4):  # 0-4 GiB in 1 GiB pages: P|RW|PS
            mem.write_u64(PDPT_LOW + 8 * i, (i << 30) | 0x83)
        mem.write_u64(PDPT_HIGH + 8 * 510, 0x83)
        mem.write_u64(PDPT_HIGH + 8 * 511, (1 << 30) | 0x83)
        mem.write_u64(PML4, PDPT_LOW | 0x3)
        mem.write_u64(PML4 + 8 * DIRECT_MAP_PML4, PDPT_LOW | 0x3)
        mem.write_u64(PML4 + 8 * HIGH_HALF_PML4, PDPT_HIGH | 0x3)
        gdt = struct.pack("<QQQ", 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)
        mem.write(GDT, gdt)
        cpu.set_descriptor_table("gdtr", GDT, len(gdt) - 1)
        cpu.set_reg("cr3", PML4)
        cpu.set_reg("cr4", cpu.reg("cr4") | (1 << 5))      # PAE (write CR4 before CR0.PG)
        cpu.set_reg("cr0", cpu.reg("cr0") | 0x8001_0001)   # PG | WP | PE
        cpu.set_msr(0xC0000080, 0x500 | (1 << 11))          # LME | LMA | NXE
        cpu.load_segments(0, KERNEL_CS, KERNEL_DS)
        for seg in ("ds", "es"):
            cpu.set_reg(seg, KERNEL_DS)
        cpu.set_reg("rsp", STACK_TOP)
        cpu.set_reg("rsi", BOOT_PARAMS_ADDR)
        cpu.set_reg("rflags", 0x2)
        cpu.rip = LOADER_ADDR

