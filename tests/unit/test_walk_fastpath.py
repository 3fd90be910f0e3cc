"""The fast TLB-fill walks agree with plain transcriptions of the SDM on random tables.

`paging.fill` reads a `CachedStage` (the EptTlb) through its cache and checks each entry with
as few tests as it can; `EptWalker.walk` checks a table pointer with one test. Both are
compared here, outcome by outcome (result or fault, and the A/D bits written), with the
straightforward walks they replaced.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperenclave.platform import paging as pg
from hyperenclave.platform.memory import FrameAllocator, MemoryError_, MiB, PhysicalMemory
from hyperenclave.vmm.ept import (EptMisconfig, EptPerm, EptViolation, EptWalker, MisconfigReason,
                                  build_identity_ept)
from hyperenclave.vmm.ept_tlb import EptTlb

MEM = PhysicalMemory(64 * MiB)     # shared by all examples: each writes the entries it uses
EPT = build_identity_ept(MEM, FrameAllocator(MEM, 40 * MiB, 4 * MiB), MEM.regions)
READ_ONLY = 0x11_0000              # a guest page the EPT maps R only: A/D updates there fault
EPT.protect(READ_ONLY, 0x1000, EptPerm.R)
UNMAPPED = 0x8000_0000             # not in the EPT: an EPT violation
MMIO = 0xFED4_0000                 # the TPM CRB: translatable, but not RAM to walk
TABLES = [0x10_0000 + i * 0x1000 for i in range(8)] + [READ_ONLY, UNMAPPED, MMIO]
#: entry bits and how often (in tenths) a random entry has them; bits 13 and 21 are reserved in
#: a 2 MiB and 1 GiB page, address bits elsewhere
FLAGS = {pg.PTE_P: 9.5, pg.PTE_RW: 8, pg.PTE_US: 8, pg.PTE_A: 8, pg.PTE_D: 5, pg.PTE_G: 2,
         pg.PTE_NX: 1.5, 1 << 13: 0.5, 1 << 21: 0.5}
#: what a leaf may map: pages aligned for any size, or 4 KiB pages
PAGES = st.sampled_from([0, 1 << 30, 3 << 30]) | st.integers(0, 1 << 24).map(lambda p: p << 12)


class Plain:
    """The stage seen only through read_u64/write_u64 (the walk's generic path)."""

    def __init__(self, stage: EptTlb) -> None:
        self.read_u64, self.write_u64 = stage.read_u64, stage.write_u64


def reference_walk(phys, cr3: int, vaddr: int, access: int, user: bool, cr0_wp: bool,
                   nxe: bool) -> tuple[int, int, int]:
    """SDM Vol. 3A 4.5-4.7, level by level, as simply as it reads."""
    write, fetch = access == pg.ACCESS_WRITE, access == pg.ACCESS_FETCH
    err = (pg.PF_W if write else 0) | (pg.PF_U if user else 0) | (pg.PF_I if fetch and nxe else 0)
    if vaddr >> 47 not in (0, 0x1FFFF):
        raise pg.PageFault(vaddr, err)
    table, rw, us, nx = cr3 & pg.ADDR_MASK, True, True, False
    for shift in (39, 30, 21, 12):
        entry_gpa = table + ((vaddr >> shift) & 0x1FF) * 8
        entry = phys.read_u64(entry_gpa)
        if not entry & pg.PTE_P:
            raise pg.PageFault(vaddr, err)
        if (not nxe and entry & pg.PTE_NX) or (shift == 39 and entry & pg.PTE_PS):
            raise pg.PageFault(vaddr, err | pg.PF_P | pg.PF_RSVD)
        rw, us = rw and bool(entry & pg.PTE_RW), us and bool(entry & pg.PTE_US)
        nx = nx or bool(entry & pg.PTE_NX)
        if shift == 12 or (shift != 39 and entry & pg.PTE_PS):
            if shift != 12 and entry & ((1 << shift) - 1) & ~0x1FFF:
                raise pg.PageFault(vaddr, err | pg.PF_P | pg.PF_RSVD)
            break
        if not entry & pg.PTE_A:
            phys.write_u64(entry_gpa, entry | pg.PTE_A)
        table = entry & pg.ADDR_MASK
    if user and not us:
        raise pg.PageFault(vaddr, err | pg.PF_P)
    may_write = rw or (not user and not cr0_wp)
    if (write and not may_write) or (fetch and nx and nxe):
        raise pg.PageFault(vaddr, err | pg.PF_P)
    update = entry | pg.PTE_A | (pg.PTE_D if write else 0)
    if update != entry:
        phys.write_u64(entry_gpa, update)
    perms = pg.PROT_READ | (pg.PROT_WRITE if may_write and update & pg.PTE_D else 0) \
        | (0 if nx and nxe else pg.PROT_EXEC)
    size = 1 << shift
    return (entry & pg.ADDR_MASK & ~(size - 1)) + (vaddr & (size - 1) & ~0xFFF), perms, size


def outcome(run) -> tuple:
    """What a walk did: its result or its fault, with the attributes a handler reads."""
    try:
        return ("ok",) + tuple(run())
    except pg.PageFault as f:
        return ("#PF", f.address, f.error_code)
    except EptViolation as f:
        return ("violation", f.gpa, f.access, f.perms_found, f.level)
    except EptMisconfig as f:
        return ("misconfig", f.gpa, f.entry, f.reason, f.level)
    except MemoryError_:
        return ("not RAM",)


#: 2 MiB-aligned pages a random entry may point at: zeroed RAM nothing else uses, and beyond RAM
SCRATCH = st.integers(8, 15).map(lambda i: i << 21) | st.sampled_from([1 << 32, 1 << 40])


@st.composite
def guest_tables(draw):
    """A vaddr, and along its walk one entry per level, each pointing at the next table of a
    random chain (or at a random page) with random flags: {entry gpa: entry}."""
    vaddr = draw(st.integers(0, (1 << 47) - 1)) & ~0xFFF
    if draw(st.booleans()):
        vaddr |= 0xFFFF8 << 44                                  # the upper canonical half
    if draw(st.integers(0, 30)) == 30:
        vaddr ^= 1 << 47                                        # non-canonical
    odds = draw(st.randoms(use_true_random=True)).random   # unbiased, unlike integers()
    chain = [draw(st.sampled_from(TABLES[:8] if odds() < 0.95 else TABLES[8:])) for _ in range(4)]
    entries = {}
    for level, (table, shift) in enumerate(zip(chain, (39, 30, 21, 12))):
        flags = sum(bit for bit, tenths in FLAGS.items() if odds() * 10 < tenths)
        large = shift in (30, 21) and odds() < 0.3
        if large or (shift == 39 and odds() < 0.03):            # reserved in a PML4E
            flags |= pg.PTE_PS
        if large or shift == 12:
            target = draw(PAGES)
        else:
            target = chain[level + 1] if odds() < 0.95 else draw(SCRATCH)
        if table < MEM.size:                                    # RAM: the walk can read it
            entries[table + ((vaddr >> shift) & 0x1FF) * 8] = target | flags
    return vaddr, chain[0], entries


def fresh(entries: dict[int, int], stage: EptTlb, run) -> tuple:
    """Run a walk on tables holding only the drawn entries, with an empty EPT cache: its
    outcome, then the entries (with the A/D bits it set)."""
    for table in TABLES:
        if table < MEM.size:
            MEM.write(table, bytes(0x1000))
    for gpa, value in entries.items():
        MEM.write_u64(gpa, value)
    stage.forget()
    return outcome(run), {gpa: MEM.read_u64(gpa) for gpa in entries}


ACCESSES = st.sampled_from([pg.ACCESS_READ, pg.ACCESS_WRITE, pg.ACCESS_FETCH])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(guest_tables(), ACCESSES, st.booleans(), st.booleans(), st.booleans())
def test_fill_through_the_cache_agrees_with_the_reference_walk(tables, access, user, cr0_wp, nxe):
    vaddr, cr3, entries = tables
    stage = EptTlb(EPT.walker, EPT.eptp, lambda: None)
    args = (cr3, vaddr, access, user, cr0_wp, nxe)
    cached = fresh(entries, stage, lambda: pg.fill(stage, *args))
    generic = fresh(entries, stage, lambda: pg.fill(Plain(stage), *args))
    reference = fresh(entries, stage, lambda: reference_walk(Plain(stage), *args))
    assert cached == generic == reference


@settings(max_examples=100, deadline=None)
@given(guest_tables(), ACCESSES)
def test_walk_records_the_entries_the_fill_read(tables, access):
    vaddr, cr3, entries = tables
    stage = EptTlb(EPT.walker, EPT.eptp, lambda: None)
    recorded: list[tuple[int, int]] = []
    filled = fresh(entries, stage, lambda: pg.fill(stage, cr3, vaddr, access, False, True, True,
                                                   recorded))
    for phys in (stage, Plain(stage)):
        walked = fresh(entries, stage, lambda: pg.walk(phys, cr3, vaddr, access, False))
        if filled[0][0] == "ok":
            assert walked[0] == filled[0] + (tuple(recorded),) and walked[1] == filled[1]
        else:
            assert walked == filled


# ------------------------------------------------------------------------------------ the EPT

def reference_ept_walk(walker: EptWalker, pml4: int, gpa: int, access: int, ad: bool):
    """SDM Vol. 3C 29.3.2-29.3.3, level by level (a misconfiguration's reason left out)."""
    rsvd_phys = ((1 << 52) - 1) & ~((1 << 46) - 1)
    table, perms = pml4, 7
    for level, shift in ((4, 39), (3, 30), (2, 21), (1, 12)):
        entry = MEM.read_u64(table + ((gpa >> shift) & 0x1FF) * 8)
        p = entry & 7
        if not p:
            raise EptViolation(gpa, access, EptPerm(0), level)
        leaf = level == 1 or (level in (2, 3) and entry & 0x80)
        rsvd = rsvd_phys | (((1 << shift) - 1) & ~0xFFF if leaf else 0xF8)
        if p in (0b010, 0b110, 0b100) or entry & rsvd or (leaf and (entry >> 3) & 7 in (2, 3, 7)):
            raise EptMisconfig(gpa, entry, MisconfigReason.RESERVED_BITS, level)
        perms &= p
        if leaf:
            if not perms >> access & 1:
                raise EptViolation(gpa, access, EptPerm(perms), level)
            if ad:
                walker._set_ad(pml4, gpa, level, access == 1)
            return (entry & ((1 << 52) - 1) & ~0xFFF) | (gpa & ((1 << shift) - 1)), EptPerm(perms), level
        table = entry & ((1 << 52) - 1) & ~0xFFF


EPT_TABLES = [0x200000 + i * 0x1000 for i in range(4)]
#: where a random EPT entry may point: zeroed RAM nothing else uses, and beyond RAM
EPT_SCRATCH = st.integers(24, 31).map(lambda i: i << 21) | st.sampled_from([1 << 32, 1 << 45])


@st.composite
def ept_entries(draw):
    """A gpa and the entries of its walk: random permissions, memory type, page size, A/D,
    reserved and ignored bits over a pointer to the next table (or a random page)."""
    gpa = draw(st.integers(0, (1 << 48) - 1)) & ~0xFFF
    odds = draw(st.randoms(use_true_random=True)).random   # unbiased, unlike integers()
    values = []
    for level in (4, 3, 2, 1):
        low = 7 if odds() < 0.85 else draw(st.sampled_from([3, 5, 1, 0, 2, 4, 6]))
        leaf = level == 1 or odds() < (0.03 if level == 4 else 0.3)
        if leaf:
            low |= (0x80 if level > 1 else 0) | (6 if odds() < 0.8 else draw(st.integers(0, 7))) << 3
            target = draw(PAGES)
        else:
            target = EPT_TABLES[5 - level] if odds() < 0.95 else draw(EPT_SCRATCH)
        low |= sum(bit for bit in (0x40, 0x100, 0x200, 1 << 63, 1 << 47, 1 << 13, 1 << 22)
                   if odds() < 0.03)
        values.append(target | low)
    return gpa, values


@settings(max_examples=400, deadline=None)
@given(ept_entries(), st.sampled_from([0, 1, 2]), st.booleans())
def test_the_ept_walk_agrees_with_the_reference_walk(entries, access, ad):
    gpa, values = entries
    walker = EptWalker(MEM)
    addrs = [table + ((gpa >> shift) & 0x1FF) * 8 for table, shift in zip(EPT_TABLES, (39, 30, 21, 12))]
    results = []
    for walk in (walker.walk, lambda *a: reference_ept_walk(walker, *a)):
        for addr, value in zip(addrs, values):
            MEM.write_u64(addr, value)
        got = outcome(lambda: walk(EPT_TABLES[0], gpa, access, ad))
        if got[0] == "misconfig":
            got = got[:3] + got[4:]
        results.append((got, [MEM.read_u64(addr) for addr in addrs]))
    assert results[0] == results[1]
