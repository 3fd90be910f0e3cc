"""`x/FMT` and `xp/FMT` output, as QEMU's monitor prints it: /COUNT FORMAT SIZE.

FORMAT is x (hex), d (signed), u (unsigned), o (octal), c (characters) or i (instructions,
decoded with capstone in AT&T syntax like the guest's sources); SIZE is b, h, w or g (1, 2,
4, 8 bytes). The defaults are QEMU's: one unit of format x, size w.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from capstone import CS_ARCH_X86, CS_MODE_64, CS_OPT_SYNTAX_ATT, Cs

from .memview import ConsoleError

SIZES = {"b": 1, "h": 2, "w": 4, "g": 8}
FORMATS = "xduoci"
MAX_BYTES = 1 << 16
_FMT = re.compile(r"(\d*)([a-z]*)")
_MAX_INSN = 15


@dataclass(frozen=True)
class DumpFormat:
    count: int = 1
    format: str = "x"
    size: int = 4


def parse_format(text: str | None) -> DumpFormat:
    """'10gx', '4i', 'c', '' ... -> DumpFormat; ConsoleError names the bad part."""
    if not text:
        return DumpFormat()
    m = _FMT.fullmatch(text)
    if not m:
        raise ConsoleError(f"bad format /{text}: use /[COUNT][FORMAT][SIZE], FORMAT one of "
                           f"{', '.join(FORMATS)} and SIZE one of {', '.join(SIZES)} (e.g. /8gx)")
    count = int(m.group(1)) if m.group(1) else 1
    fmt, size = "x", 4
    for letter in m.group(2):
        if letter in FORMATS:
            fmt = letter
        elif letter in SIZES:
            size = SIZES[letter]
        else:
            raise ConsoleError(f"bad format /{text}: {letter!r} is neither a format "
                               f"({', '.join(FORMATS)}) nor a size ({', '.join(SIZES)})")
    if fmt == "c":
        size = 1
    if count < 1 or count * (size if fmt != "i" else _MAX_INSN) > MAX_BYTES:
        raise ConsoleError(f"bad count {count} in /{text}: 1 to {MAX_BYTES // size} units")
    return DumpFormat(count, fmt, size)


def dump(fmt: DumpFormat, address: int, read: Callable[[int, int], bytes],
         mark: int | None = None) -> list[str]:
    """The lines `x` prints for `fmt.count` units at `address`; `read(addr, n)` fetches bytes.
    With format i, `mark` (the RIP) gets an arrow."""
    if fmt.format == "i":
        return _disassemble(fmt.count, address, read, mark)
    data = read(address, fmt.count * fmt.size)
    per_line = 8 if fmt.format == "c" else max(1, 16 // fmt.size)
    lines = []
    for first in range(0, fmt.count, per_line):
        units = []
        for i in range(first, min(first + per_line, fmt.count)):
            raw = data[i * fmt.size:(i + 1) * fmt.size]
            units.append(_unit(fmt, int.from_bytes(raw, "little")))
        lines.append(f"{address + first * fmt.size:016x}: " + " ".join(units))
    return lines


def _unit(fmt: DumpFormat, value: int) -> str:
    bits = fmt.size * 8
    if fmt.format == "x":
        return f"0x{value:0{fmt.size * 2}x}"
    if fmt.format == "u":
        return str(value)
    if fmt.format == "d":
        return str(value - (1 << bits) if value >> (bits - 1) else value)
    if fmt.format == "o":
        return f"0{value:o}"
    ch = chr(value)
    return f"'{ch}'" if 0x20 <= value < 0x7F else f"'\\x{value:02x}'"


def _disassemble(count: int, address: int, read: Callable[[int, int], bytes],
                 mark: int | None) -> list[str]:
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    cs.syntax = CS_OPT_SYNTAX_ATT
    lines: list[str] = []
    pc = address
    while len(lines) < count:
        try:
            code = read(pc, _MAX_INSN)
        except ConsoleError:
            code = read(pc, 0x1000 - (pc & 0xFFF))     # the next page is not mapped
        insn = next(cs.disasm(code, pc, 1), None)
        arrow = "=> " if pc == mark else "   "
        if insn is None:
            lines.append(f"{arrow}{pc:016x}: {code[0]:02x}{'':22} (bad)")
            pc += 1
            continue
        lines.append(f"{arrow}{pc:016x}: {insn.bytes.hex(' '):<24} {insn.mnemonic} {insn.op_str}".rstrip())
        pc += insn.size
    return lines
