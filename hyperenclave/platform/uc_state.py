"""Access to the three pieces of Unicorn's CPU state that its API does not expose.

Unicorn never delivers exceptions (the emulator does, through the guest IDT), so it must also be
able to (1) read the error code of an exception Unicorn reported, (2) clear QEMU's record of the
last exception, which otherwise turns the next fault into a #DF, and (3) change the CPL, which
QEMU keeps in `hflags` and which `reg_write(CS/SS)` refuses to raise. The offsets of these fields
in a saved context are found once per process by probing a scratch CPU, so a different Unicorn
build fails loudly here instead of misbehaving later.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import struct
from dataclasses import dataclass

from unicorn import (UC_ARCH_X86, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_64, UC_PROT_ALL,
                     UC_TLB_VIRTUAL, Uc, UcError)
from unicorn.x86_const import (UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4, UC_X86_REG_CS,
                               UC_X86_REG_GDTR, UC_X86_REG_SS)

HF_CPL_MASK = 3
EFER, STAR = 0xC0000080, 0xC0000081


@dataclass(frozen=True)
class ContextLayout:
    """Byte offsets of QEMU CPUX86State fields inside a Unicorn context blob."""

    hflags: int
    error_code: int
    old_exception: int


class CalibrationError(RuntimeError):
    """The installed Unicorn does not look like the one this emulator was built against."""


def _descriptor(code: bool, dpl: int) -> bytes:
    access = (0x9A if code else 0x92) | dpl << 5
    flags = 0xA if code else 0xC  # code: G|L, data: G|DB
    return struct.pack("<HHBBBB", 0xFFFF, 0, 0, access, flags << 4 | 0xF, 0)


def _identity_fill(uc: Uc, vaddr: int, access: int, entry, user_data) -> bool:
    entry.paddr = vaddr & 0xF_F000
    entry.perms = UC_PROT_ALL
    return True


def _words(uc: Uc) -> tuple[bytes, int]:
    ctx = uc.context_save()
    return ctypes.string_at(ctx.context.value, ctx.size), ctx.size


@functools.cache
def context_layout() -> ContextLayout:
    """Find the offsets by diffing contexts around a CPL change and a #GP with a known code."""
    size = 1 << 20
    mm = mmap.mmap(-1, size)
    buf = (ctypes.c_char * size).from_buffer(mm)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    try:
        uc.mem_map_ptr(0, size, UC_PROT_ALL, ctypes.addressof(buf))
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        uc.hook_add(UC_HOOK_TLB_FILL, _identity_fill)
        gdt = bytes(16) + _descriptor(True, 0) + _descriptor(False, 0) + bytes(8) + \
            _descriptor(False, 3) + _descriptor(True, 3)
        mm[0x1000:0x1000 + len(gdt)] = gdt
        uc.reg_write(UC_X86_REG_GDTR, (0, 0x1000, len(gdt) - 1, 0))
        uc.reg_write(UC_X86_REG_CR3, 0x10000)
        uc.reg_write(UC_X86_REG_CR4, uc.reg_read(UC_X86_REG_CR4))
        uc.reg_write(UC_X86_REG_CR0, uc.reg_read(UC_X86_REG_CR0) | 0x8000_0001)
        uc.reg_write(UC_X86_REG_CS, 0x10)
        uc.reg_write(UC_X86_REG_SS, 0x18)
        uc.msr_write(EFER, 0xD01)
        uc.msr_write(STAR, 0x23 << 48 | 0x10 << 32)
        # kernel: mov rcx, 0x3000; mov r11, 2; sysretq      user at 0x3000: mov ax,0x13; mov ds,ax
        code = bytes.fromhex("48c7c100300000" "49c7c302000000" "480f07")
        mm[0x2000:0x2000 + len(code)] = code
        user = bytes.fromhex("66b81300" "8ed8" "90")
        mm[0x3000:0x3000 + len(user)] = user
        before, n = _words(uc)
        uc.emu_start(0x2000, 0x3000)
        at_cpl3, _ = _words(uc)
        uc.hook_add(UC_HOOK_INTR, lambda uc_, intno, _: uc_.emu_stop())
        try:
            uc.emu_start(0x3000, 0x3006)
        except UcError:
            pass
        after_gp, _ = _words(uc)
    finally:
        del uc
    def u32(b: bytes, off: int) -> int:
        return struct.unpack_from("<I", b, off)[0]
    hflags = [o for o in range(0, n - 4, 4)
              if u32(before, o) & 3 == 0 and u32(at_cpl3, o) & 3 == 3
              and u32(before, o) & ~3 == u32(at_cpl3, o) & ~3]
    # mov ds, 0x13 at CPL 3 loads a DPL-0 code selector: #GP(0x10).
    error_code = [o for o in range(0, n - 4, 4) if u32(at_cpl3, o) == 0 and u32(after_gp, o) == 0x10]
    old_exc = [o for o in range(0, n - 4, 4)
               if u32(at_cpl3, o) == 0xFFFF_FFFF and u32(after_gp, o) == 13]
    if len(hflags) != 1 or len(old_exc) != 1 or not error_code:
        raise CalibrationError(
            f"cannot locate hflags/error_code/old_exception in this Unicorn's context "
            f"(candidates {hflags}, {error_code}, {old_exc}); unicorn==2.1.4 is required")
    return ContextLayout(hflags[0], error_code[0], old_exc[0])


class CpuStatePatcher:
    """Reads and changes the hidden fields through one context save/restore."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self.layout = context_layout()

    def take_exception(self) -> int:
        """Return the error code of the exception just reported and forget it (no false #DF)."""
        ctx = self.uc.context_save()
        base = ctx.context.value
        code = ctypes.c_int32.from_address(base + self.layout.error_code).value
        ctypes.c_int32.from_address(base + self.layout.old_exception).value = -1
        self.uc.context_restore(ctx)
        return code & 0xFFFF_FFFF

    def set_cpl(self, cpl: int) -> None:
        """Set the CPL before loading CS/SS for a privilege change (SYSCALL, IDT delivery, VM entry)."""
        ctx = self.uc.context_save()
        word = ctypes.c_uint32.from_address(ctx.context.value + self.layout.hflags)
        word.value = (word.value & ~HF_CPL_MASK) | cpl
        self.uc.context_restore(ctx)
