"""The console's pure parts: x/FMT formats and dumps, address expressions, the memory-map grid."""

from __future__ import annotations

import pytest

from hyperenclave.tools.console.formats import DumpFormat, dump, parse_format
from hyperenclave.tools.console.memmap import (EPC_FREE, HOST_RAM, ZERO_PAGE, Extent, draw,
                                               enclave_kind, render_text)
from hyperenclave.tools.console.memview import ConsoleError, parse_address

MEM = bytes(range(256)) * 16


def read(addr: int, n: int) -> bytes:
    return MEM[addr:addr + n]


@pytest.mark.parametrize("text, expected", [
    ("", DumpFormat(1, "x", 4)),
    ("8gx", DumpFormat(8, "x", 8)),
    ("4i", DumpFormat(4, "i", 4)),
    ("16c", DumpFormat(16, "c", 1)),
    ("2bd", DumpFormat(2, "d", 1)),
    ("hu", DumpFormat(1, "u", 2)),
])
def test_formats_are_count_format_size_with_qemus_defaults(text, expected) -> None:
    assert parse_format(text) == expected


@pytest.mark.parametrize("text, message", [
    ("8q", "'q' is neither a format"), ("x8", "bad format /x8"), ("0x", "bad count 0"),
    ("99999gx", "bad count 99999"),
])
def test_bad_formats_name_the_bad_part(text, message) -> None:
    with pytest.raises(ConsoleError, match=message):
        parse_format(text)


def test_dump_prints_units_little_endian_sixteen_bytes_a_line() -> None:
    assert dump(parse_format("3gx"), 0x10, read) == [
        "0000000000000010: 0x1716151413121110 0x1f1e1d1c1b1a1918",
        "0000000000000020: 0x2726252423222120"]
    assert dump(parse_format("2bd"), 0xFE, read) == ["00000000000000fe: -2 -1"]
    assert dump(parse_format("3c"), 0x40, read) == ["0000000000000040: '@' 'A' 'B'"]


def test_dump_disassembles_and_marks_rip() -> None:
    code = b"\x48\x89\xc6\x0f\x01\xc1\xf4"           # mov %rax,%rsi; vmcall; hlt
    lines = dump(parse_format("3i"), 0x1000, lambda a, n: code[a - 0x1000:a - 0x1000 + n], mark=0x1003)
    assert [line.split(": ", 1)[0].strip() for line in lines] == \
        ["0000000000001000", "=> 0000000000001003", "0000000000001006"]
    assert lines[1].endswith("vmcall") and lines[2].endswith("hlt")


def test_addresses_take_numbers_registers_and_sums() -> None:
    regs = {"rsp": 0x1000, "rip": 0xFFFF_FFFF_8010_0000}
    assert parse_address("0x10", dict) == 0x10
    assert parse_address("16", dict) == 16
    assert parse_address("$rsp+8", lambda: regs) == 0x1008
    assert parse_address("$rip - 0x100 + 2", lambda: regs) == 0xFFFF_FFFF_800F_FF02


@pytest.mark.parametrize("text, message", [
    ("", "missing address"), ("$nope", "unknown register"), ("0x10 0x20", "bad address"),
    ("5-10", "outside 64 bits"), ("zz", "bad address"),
])
def test_bad_addresses_say_what_is_wrong(text, message) -> None:
    with pytest.raises(ConsoleError, match=message):
        parse_address(text, lambda: {"rsp": 0})


def test_a_cell_shows_its_most_specific_owner() -> None:
    mib = 1 << 20
    enclave = enclave_kind(0, 0x3100_0000)
    picture = draw([Extent(0, 64 * mib, HOST_RAM), Extent(32 * mib, 64 * mib, EPC_FREE),
                    Extent(30 * mib, 32 * mib, ZERO_PAGE),
                    Extent(40 * mib, 40 * mib + 0x1000, enclave)], 64 * mib)
    cells = [k for row in picture.cells for k in row]
    size = picture.cell_size
    assert size == 32 * 1024 and len(cells) == 64 * mib // size
    assert cells[0] is HOST_RAM and cells[30 * mib // size] is ZERO_PAGE
    assert cells[40 * mib // size] is enclave, "one enclave page colours its whole cell"
    assert cells[40 * mib // size + 1] is EPC_FREE
    text = "\n".join(render_text(picture))
    assert "\x1b[32m1\x1b[0m enclave 0x31000000: 4 KiB [0x2800000-0x2800fff]" in text   # coloured glyph
