"""The exact linear address of a faulting access, for CR2 and the EPT exit qualification.

Unicorn's TLB-fill callback only sees the page. The instruction at RIP says which byte: decode
it (capstone) and evaluate the memory operand that falls in the faulting page.
"""

from __future__ import annotations

import functools
from typing import Callable

import capstone
from capstone import x86 as csx86

PAGE_MASK = ~0xFFF
_STACK_WRITERS = {"push", "call", "pushfq", "pushf"}
_STACK_READERS = {"pop", "ret", "popfq", "popf", "leave", "iretq"}


@functools.cache
def _disassembler() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


def _effective_address(insn: capstone.CsInsn, mem, reg: Callable[[str], int]) -> int:
    addr = mem.disp
    if mem.base:
        name = insn.reg_name(mem.base)
        addr += insn.address + insn.size if name == "rip" else reg(name)
    if mem.index:
        addr += reg(insn.reg_name(mem.index)) * mem.scale
    if mem.segment and insn.reg_name(mem.segment) in ("fs", "gs"):
        addr += reg(insn.reg_name(mem.segment) + "_base")
    return addr & 0xFFFF_FFFF_FFFF_FFFF


def memory_operand(code: bytes, rip: int, mnemonic: str, reg: Callable[[str], int]
                   ) -> tuple[bytes, int] | None:
    """If `code` at `rip` is `mnemonic` with a memory operand: (its bytes, operand address)."""
    try:
        insn = next(_disassembler().disasm(code, rip, 1))
    except StopIteration:
        return None
    if insn.mnemonic != mnemonic:
        return None
    for op in insn.operands:
        if op.type == csx86.X86_OP_MEM:
            return bytes(insn.bytes), _effective_address(insn, op.mem, reg)
    return None


def faulting_address(code: bytes, rip: int, page: int, reg: Callable[[str], int]) -> int:
    """Best linear address inside `page` touched by the instruction `code` at `rip`.

    `reg(name)` reads a register by capstone name ("rax", "fs", ...). Falls back to the page
    address when the access is implicit and not understood.
    """
    try:
        insn = next(_disassembler().disasm(code, rip, 1))
    except StopIteration:
        return page
    candidates = [(_effective_address(insn, op.mem, reg), op.size) for op in insn.operands
                  if op.type == csx86.X86_OP_MEM]
    if insn.mnemonic in _STACK_WRITERS or insn.mnemonic.startswith("push"):
        candidates.append(((reg("rsp") - 8) & 0xFFFF_FFFF_FFFF_FFFF, 8))
    if insn.mnemonic in _STACK_READERS or insn.mnemonic.startswith("pop"):
        candidates.append((reg("rsp"), 8))
    for addr, size in candidates:
        if addr & PAGE_MASK == page:
            return addr
        if addr < page < addr + max(size, 1):
            return page  # the access crosses into the faulting page
    return page
