"""Random map/unmap/protect sequences agree with a simple interval model of the address space.

Whatever mix of 1 GiB, 2 MiB and 4 KiB leaves, splits and frees the tables go through, a walk of
the tables in memory must give what the model says, `mappings()` must list the model's runs,
and no table frame may leak.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperenclave.platform.memory import GiB, KiB, MiB, FrameAllocator, PhysicalMemory
from hyperenclave.vmm.ept import READ, Ept, EptPerm, EptViolation, MemType

MEM = PhysicalMemory(64 * MiB)     # shared by all examples; each example uses a fresh allocator
PERMS = [EptPerm.R, EptPerm.RW, EptPerm.RX, EptPerm.RWX]


class Model:
    """Disjoint segments [start, end) -> (hpa at start, perms, memtype)."""

    def __init__(self) -> None:
        self.segs: list[list[int]] = []

    def _carve(self, s: int, e: int) -> list[list[int]]:
        keep, cut = [], []
        for seg in self.segs:
            a, b, h, p, mt = seg
            if b <= s or a >= e:
                keep.append(seg)
                continue
            if a < s:
                keep.append([a, s, h, p, mt])
            if b > e:
                keep.append([e, b, h + (e - a), p, mt])
            lo, hi = max(a, s), min(b, e)
            cut.append([lo, hi, h + (lo - a), p, mt])
        self.segs = keep
        return cut

    def map(self, g, h, size, p, mt):
        self._carve(g, g + size)
        self.segs.append([g, g + size, h, p, mt])

    def unmap(self, g, size):
        self._carve(g, g + size)

    def protect(self, g, size, p):
        for seg in self._carve(g, g + size):
            seg[3] = p
            self.segs.append(seg)

    def lookup(self, a):
        for s, e, h, p, mt in self.segs:
            if s <= a < e:
                return h + (a - s), p
        return None

    def runs(self):
        out = []
        for s, e, h, p, mt in sorted(self.segs):
            if out and out[-1][0] + out[-1][2] == s and out[-1][1] + out[-1][2] == h and out[-1][3:] == [p, mt]:
                out[-1][2] += e - s
            else:
                out.append([s, h, e - s, p, mt])
        return [tuple(r) for r in out]


units = st.sampled_from([4 * KiB, 2 * MiB, GiB])


@st.composite
def ops(draw):
    kind = draw(st.sampled_from(["map", "map", "map", "unmap", "protect"]))
    unit = draw(units)
    gpa = draw(st.integers(0, (4 * GiB) // unit - 1)) * unit + draw(st.sampled_from([0, 0, 4 * KiB, 2 * MiB]))
    size = draw(st.integers(1, 3)) * draw(units) + draw(st.sampled_from([0, 0, 4 * KiB]))
    size = min(size, 5 * GiB - gpa)
    if kind == "map":
        hunit = draw(units)
        hpa = draw(st.integers(0, 64)) * hunit + draw(st.sampled_from([0, 0, 4 * KiB]))
        if size > 16 * MiB:
            # Keep big maps to >= 2 MiB leaves (a 3 GiB run of 4 KiB leaves is slow to list).
            hpa = (hpa & ~(2 * MiB - 1)) + gpa % (2 * MiB)
        return ("map", gpa, hpa, size, draw(st.sampled_from(PERMS)), draw(st.sampled_from([MemType.WB, MemType.UC])))
    if kind == "unmap":
        return ("unmap", gpa, size)
    return ("protect", gpa, size, draw(st.sampled_from(PERMS)))


def reachable_tables(ept: Ept) -> set[int]:
    seen = set()

    def visit(table, level):
        seen.add(table)
        if level == 1:
            return
        for e in struct.unpack("<512Q", MEM.read(table, 4096)):
            if e & 7 and (level == 4 or not e & 0x80):
                visit(e & 0x000F_FFFF_FFFF_F000, level - 1)
    visit(ept.pml4, 4)
    return seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops(), min_size=1, max_size=8))
def test_random_edits_match_the_model(seq):
    frames = FrameAllocator(MEM, 16 * MiB, 48 * MiB)
    ept = Ept(MEM, frames)
    model = Model()
    for op in seq:
        getattr(ept, op[0])(*op[1:])
        getattr(model, op[0])(*op[1:])

    assert [tuple(m) for m in ept.mappings()] == model.runs()

    probes = {0, 4 * KiB, 2 * MiB - 4 * KiB, GiB}
    for s, e, *_ in model.segs:
        probes |= {s, e - 4 * KiB, e, max(0, s - 4 * KiB), (s + e) // 2 & ~0xFFF}
    for a in sorted(probes):
        want = model.lookup(a)
        if want is None:
            try:
                ept.translate(a + 0x18, READ)
            except EptViolation:
                continue
            raise AssertionError(f"{a:#x} should be unmapped")
        hpa, perms, _ = ept.translate(a + 0x18, READ)
        assert (hpa, perms) == (want[0] + 0x18, want[1]), hex(a)

    assert reachable_tables(ept) == set(ept.table_frames)
    assert frames.used == ept.table_count
    ept.destroy()
    assert frames.used == 0
