"""`memmap`: a picture of host-physical memory, in the terminal (coloured) or as SVG.

Who owns what is read from the monitor's own records: its layout (image, per-CPU areas,
heap, the zero page every monitor/EPC GPA maps to), the EPCM (each enclave's EPC pages) and
each enclave's EPT (the app pages it shares). One cell covers many pages, so a cell shows its
most specific owner: a single enclave page makes its cell that enclave's.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from hyperenclave.vmm.ept import EptPerm

if TYPE_CHECKING:
    from hyperenclave.machine import Machine

COLUMNS = 64
MAX_ROWS = 32


@dataclass(frozen=True)
class Kind:
    """One kind of owner: its glyph, colour and how it ranks when a cell has several."""

    name: str
    glyph: str
    ansi: str           # SGR colour
    rgb: str
    rank: int


HOST_RAM = Kind("host RAM", ".", "2;37", "#d9d9d9", 0)
RESERVED = Kind("reserved (memmap=, monitor not launched)", "r", "90", "#8c8c8c", 1)
EPC_FREE = Kind("EPC (enclave pages drawn over it)", "e", "34", "#6fa8dc", 2)
MONITOR = Kind("monitor memory (image, per-CPU, heap: VMCS, EPT, GPT)", "M", "35", "#a64d79", 3)
ZERO_PAGE = Kind("zero page (what the host reads in monitor memory and EPC)", "Z", "97", "#ffffff", 4)
SHARED = Kind("shared buffer (app pages mapped into an enclave)", "S", "33", "#f1c232", 6)
_ENCLAVE_COLOURS = (("32", "#6aa84f"), ("36", "#45818e"), ("31", "#cc0000"), ("92", "#93c47d"),
                    ("96", "#76a5af"), ("91", "#e06666"))


def enclave_kind(index: int, secs: int) -> Kind:
    ansi, rgb = _ENCLAVE_COLOURS[index % len(_ENCLAVE_COLOURS)]
    glyph = "123456789abcdfghijk"[index % 19]
    return Kind(f"enclave {secs:#x}", glyph, ansi, rgb, 5)


@dataclass(frozen=True)
class Extent:
    start: int
    end: int            # exclusive
    kind: Kind
    note: str = ""


def memory_extents(machine: "Machine") -> list[Extent]:
    """Everything the picture shows, from the machine's and the monitor's records."""
    memory, monitor = machine.memory, machine.monitor
    reserved = machine.config.reserved
    extents = []
    for r in memory.regions:              # host RAM: all RAM but the memmap= range
        cuts = [(r.base, r.end)]
        if reserved is not None:
            cuts = [(a, b) for a, b in ((r.base, min(r.end, reserved.start)),
                                        (max(r.base, reserved.end), r.end)) if a < b]
        extents += [Extent(a, b, HOST_RAM) for a, b in cuts]
    layout = monitor.layout if monitor.enabled else None
    if layout is None:
        if reserved is not None:
            extents.append(Extent(reserved.start, reserved.end, RESERVED))
        return extents
    extents += [Extent(layout.hv_start, layout.hv_start + layout.image_size, MONITOR, "image"),
                Extent(layout.percpu_start, layout.heap_start, MONITOR, "per-CPU areas"),
                Extent(layout.heap_start, layout.zero_page, MONITOR, "heap"),
                Extent(layout.zero_page, layout.hv_end, ZERO_PAGE),
                Extent(layout.epc_start, layout.epc_start + layout.epc_size, EPC_FREE)]
    manager, runner = monitor.enclaves, monitor.runner
    if manager is None:
        return extents
    for index, secs in enumerate(manager.enclaves):
        kind = enclave_kind(index, secs)
        pages = [secs, *manager.epcm.children(secs)]
        extents += [Extent(start, end, kind) for start, end in _runs(sorted(pages))]
        space = runner.spaces.get(secs) if runner is not None else None
        if space is None:
            continue
        for run in space.ept.runs():
            outside_epc = not layout.epc_start <= run.hpa < layout.epc_start + layout.epc_size
            if outside_epc and run.perms == EptPerm.RW:
                extents.append(Extent(run.hpa, run.hpa + run.size, SHARED, f"enclave {secs:#x}"))
    return extents


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for page in pages:
        if runs and runs[-1][1] == page:
            runs[-1][1] = page + 0x1000
        else:
            runs.append([page, page + 0x1000])
    return [(a, b) for a, b in runs]


@dataclass(frozen=True)
class Picture:
    """The grid: `cells[row][col]` is the owning Kind (None: not memory)."""

    cell_size: int
    top: int
    cells: list[list[Kind | None]]
    extents: list[Extent]

    def row_address(self, row: int) -> int:
        return row * COLUMNS * self.cell_size


def draw(extents: list[Extent], top: int) -> Picture:
    """Lay the extents on a grid of COLUMNS x at most MAX_ROWS cells of a power-of-two size."""
    cell = 0x1000
    while top > cell * COLUMNS * MAX_ROWS:
        cell <<= 1
    n = -(-top // cell)
    owners: list[Kind | None] = [None] * n
    for ext in sorted(extents, key=lambda e: e.kind.rank):
        for i in range(ext.start // cell, min(n, -(-ext.end // cell))):
            if owners[i] is None or owners[i].rank <= ext.kind.rank:
                owners[i] = ext.kind
    rows = [owners[i:i + COLUMNS] for i in range(0, n, COLUMNS)]
    return Picture(cell, top, rows, extents)


def legend(picture: Picture) -> list[tuple[Kind, str]]:
    """(kind, description with ranges and sizes), in rank order."""
    by_kind: dict[Kind, list[Extent]] = {}
    for ext in picture.extents:
        by_kind.setdefault(ext.kind, []).append(ext)
    out = []
    for kind, exts in sorted(by_kind.items(), key=lambda kv: (kv[0].rank, kv[0].name)):
        total = sum(e.end - e.start for e in exts)
        spans = ", ".join(f"[{e.start:#x}-{e.end - 1:#x}]" + (f" {e.note}" if e.note else "")
                          for e in exts[:4]) + (f", ... ({len(exts)} ranges)" if len(exts) > 4 else "")
        out.append((kind, f"{kind.name}: {_size(total)} {spans}"))
    return out


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def render_text(picture: Picture) -> list[str]:
    """Terminal lines with ANSI colours (cmd2 strips them when the output is not a terminal)."""
    lines = [f"host-physical memory, {_size(picture.top)}; one cell = {_size(picture.cell_size)}"]
    for r, row in enumerate(picture.cells):
        cells = "".join(" " if k is None else f"\x1b[{k.ansi}m{k.glyph}\x1b[0m" for k in row)
        lines.append(f"{picture.row_address(r):#012x} {cells}")
    lines += [f"  \x1b[{k.ansi}m{k.glyph}\x1b[0m {text}" for k, text in legend(picture)]
    return lines


def render_svg(picture: Picture, title: str) -> str:
    """A standalone SVG of the same grid and legend."""
    cw, ch, left, top = 12, 16, 110, 40
    rows = len(picture.cells)
    items = legend(picture)
    width = max(left + COLUMNS * cw + 20, 40 + int(7.3 * max(len(text) for _, text in items)))
    height = top + rows * ch + 30 + len(items) * 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="10" y="20" font-size="14">{escape(title)} - one cell = '
           f'{_size(picture.cell_size)}</text>']
    for r, row in enumerate(picture.cells):
        y = top + r * ch
        out.append(f'<text x="10" y="{y + 12}">{picture.row_address(r):#010x}</text>')
        c = 0
        while c < len(row):                 # one rectangle per run of equal cells
            kind, start = row[c], c
            while c < len(row) and row[c] is kind:
                c += 1
            if kind is not None:
                out.append(f'<rect x="{left + start * cw}" y="{y}" width="{(c - start) * cw - 1}" '
                           f'height="{ch - 1}" fill="{kind.rgb}" stroke="#999999" '
                           f'stroke-width="0.5"><title>{escape(kind.name)}</title></rect>')
    y = top + rows * ch + 20
    for kind, text in items:
        out.append(f'<rect x="10" y="{y}" width="14" height="14" fill="{kind.rgb}" stroke="#555555"/>')
        out.append(f'<text x="30" y="{y + 12}">{escape(text)}</text>')
        y += 20
    out.append("</svg>")
    return "\n".join(out) + "\n"
