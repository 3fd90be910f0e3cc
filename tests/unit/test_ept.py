"""Extended page tables in the Intel format, living in emulated physical memory.

Each test reads as a statement of the behaviour it checks (SDM Vol. 3C 29.3).
"""

from __future__ import annotations

import time

import pytest

from hyperenclave.platform.memory import GiB, KiB, MiB, FrameAllocator
from hyperenclave.vmm.ept import (
    EPT_ACCESSED,
    EPT_DIRTY,
    FETCH,
    READ,
    TPM_CRB_MMIO,
    WRITE,
    Ept,
    EptMapping,
    EptMisconfig,
    EptPerm,
    EptViolation,
    MemType,
    MisconfigReason,
    build_identity_ept,
    make_eptp,
    parse_eptp,
    translate_eptp,
)

FRAMES_BASE, FRAMES_SIZE = 32 * MiB, 16 * MiB


@pytest.fixture
def frames(mem):
    return FrameAllocator(mem, FRAMES_BASE, FRAMES_SIZE)


@pytest.fixture
def ept(mem, frames):
    return Ept(mem, frames)


def bits(value: int, hi: int, lo: int) -> int:
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def leaf(ept: Ept, gpa: int) -> int:
    """Raw value of the last entry a walk for `gpa` reads."""
    return ept.entries(gpa)[-1][2]


# ------------------------------------------------------------------ entry and EPTP encoding

class TestEncoding:
    def test_4k_leaf_bits(self, ept, mem):
        ept.map(0x5000, 0x1234_5000, 0x1000, EptPerm.R | EptPerm.X, MemType.WT, ipat=True, suppress_ve=True)
        e = leaf(ept, 0x5000)
        assert mem.read_u64(ept.entry_address(0x5000)) == e      # the entry really is in memory
        assert bits(e, 0, 0) == 1          # R
        assert bits(e, 1, 1) == 0          # W
        assert bits(e, 2, 2) == 1          # X
        assert bits(e, 5, 3) == 4          # memory type WT
        assert bits(e, 6, 6) == 1          # ignore PAT
        assert bits(e, 7, 7) == 0          # a PTE has no page-size bit
        assert bits(e, 9, 8) == 0          # A/D clear
        assert bits(e, 51, 12) << 12 == 0x1234_5000
        assert bits(e, 62, 52) == 0
        assert bits(e, 63, 63) == 1        # suppress #VE

    def test_default_leaf_is_wb_without_ipat_or_suppress_ve(self, ept):
        ept.map(0, 0x7000, 0x1000, EptPerm.RW)
        assert leaf(ept, 0) == 0x7000 | (6 << 3) | 0b011

    def test_2m_leaf_sets_page_size_bit_in_pde(self, ept):
        ept.map(2 * MiB, 6 * MiB, 2 * MiB, EptPerm.RWX)
        level, _, e = ept.entries(2 * MiB)[-1]
        assert level == 2
        assert e == 6 * MiB | 1 << 7 | 6 << 3 | 0b111

    def test_1g_leaf_sets_page_size_bit_in_pdpte(self, ept):
        ept.map(GiB, 3 * GiB, GiB, EptPerm.RW, MemType.UC)
        level, _, e = ept.entries(GiB)[-1]
        assert level == 3
        assert e == 3 * GiB | 1 << 7 | 0 << 3 | 0b011

    def test_non_leaf_entries_are_rwx_pointers_to_the_next_table(self, ept, mem, frames):
        ept.map(0x40_0000_1000, 0x1000, 0x1000, EptPerm.R)
        walk = ept.entries(0x40_0000_1000)
        assert [lvl for lvl, _, _ in walk] == [4, 3, 2, 1]
        assert walk[0][1] == ept.pml4 + 8 * 0          # PML4 index of 0x40_0000_1000 is 0
        assert walk[1][1] == (walk[0][2] & ~0xFFF) + 8 * 256   # PDPT index 256 (256 GiB)
        for _, _, e in walk[:3]:
            assert e & 0xFFF == 0b111                   # RWX, no memory type, no page size, no A
            assert FRAMES_BASE <= e & ~0xFFF < FRAMES_BASE + FRAMES_SIZE
            assert e >> 52 == 0
        assert ept.table_count == 4

    def test_eptp_encoding(self, ept):
        eptp = ept.eptp
        assert bits(eptp, 2, 0) == 6               # WB paging structures
        assert bits(eptp, 5, 3) == 3               # 4-level walk
        assert bits(eptp, 6, 6) == 0               # A/D disabled
        assert eptp & ~0xFFF == ept.pml4
        assert bits(eptp, 11, 7) == 0
        assert make_eptp(ept.pml4, ad=True) == eptp | 1 << 6
        assert parse_eptp(eptp) == (ept.pml4, False)
        assert parse_eptp(eptp | 1 << 6) == (ept.pml4, True)

    def test_eptp_allows_uc_paging_structures(self, ept):
        assert make_eptp(ept.pml4, memtype=MemType.UC) == ept.pml4 | 3 << 3
        assert parse_eptp(ept.pml4 | 3 << 3) == (ept.pml4, False)

    @pytest.mark.parametrize("eptp_bits, why", [
        (1 | 3 << 3, "memory type WC"),
        (6 | 2 << 3, "3-level walk"),
        (6 | 4 << 3, "5-level walk"),
        (6 | 3 << 3 | 1 << 9, "reserved bit 9"),
        (6 | 3 << 3 | 1 << 50, "address above MAXPHYADDR"),
    ])
    def test_eptp_rejected_by_vm_entry(self, eptp_bits, why, ept):
        with pytest.raises(ValueError):
            parse_eptp(ept.pml4 | eptp_bits)


# ------------------------------------------------------------------ page sizes

class TestPageSizes:
    def test_largest_page_alignment_and_size_allow(self, ept):
        # 1 GiB + 2 MiB + 4 KiB, all aligned: one leaf of each size.
        ept.map(GiB, 5 * GiB, GiB + 2 * MiB + 4 * KiB, EptPerm.RWX)
        assert ept.translate(GiB)[2] == 3
        assert ept.translate(2 * GiB - 4 * KiB) == (6 * GiB - 4 * KiB, EptPerm.RWX, 3)
        assert ept.translate(2 * GiB)[2] == 2
        assert ept.translate(2 * GiB + 2 * MiB) == (6 * GiB + 2 * MiB, EptPerm.RWX, 1)
        with pytest.raises(EptViolation):
            ept.translate(2 * GiB + 2 * MiB + 4 * KiB)
        assert ept.table_count == 4          # PML4, PDPT, one PD, one PT

    def test_hpa_alignment_limits_the_page_size(self, ept):
        ept.map(0, 2 * MiB, GiB, EptPerm.RWX)            # gpa 1 GiB-aligned, hpa only 2 MiB-aligned
        assert ept.translate(0)[2] == 2
        assert ept.translate(GiB - 1) == (GiB + 2 * MiB - 1, EptPerm.RWX, 2)
        ept.map(GiB, GiB + 4 * KiB, 2 * MiB, EptPerm.RWX)  # hpa only 4 KiB-aligned
        assert ept.translate(GiB + 0x1234) == (GiB + 0x2234, EptPerm.RWX, 1)

    def test_unaligned_start_uses_4k_until_aligned(self, ept):
        ept.map(2 * MiB - 8 * KiB, 2 * MiB - 8 * KiB, 2 * MiB + 8 * KiB, EptPerm.RW)
        assert ept.translate(2 * MiB - 8 * KiB)[2] == 1
        assert ept.translate(2 * MiB - 4 * KiB)[2] == 1
        assert ept.translate(2 * MiB)[2] == 2

    def test_max_page_size(self, ept):
        ept.map(0, 0, GiB, EptPerm.RWX, max_page_size=2 * MiB)
        assert ept.translate(0)[2] == 2

    def test_1g_over_existing_small_pages_frees_their_tables(self, ept):
        ept.map(0, 0, 4 * MiB, EptPerm.RW, max_page_size=4 * KiB)
        assert ept.table_count == 5          # PML4, PDPT, PD, two PTs
        ept.map(0, 0, GiB, EptPerm.RWX)
        assert ept.table_count == 2
        assert ept.translate(0x1000) == (0x1000, EptPerm.RWX, 3)


# ------------------------------------------------------------------ splitting

class TestSplitting:
    def test_small_mapping_inside_1g_page_keeps_the_rest(self, ept):
        ept.map(0, 4 * GiB, GiB, EptPerm.RWX, MemType.UC, ipat=True)
        ept.map(0x1234_5000, 0x9000, 0x1000, EptPerm.R)
        assert ept.translate(0x1234_5678) == (0x9678, EptPerm.R, 1)
        # The rest of the old 1 GiB page: same host address, permissions, memory type, IPAT.
        for gpa, level in [(0, 2), (0x1234_4000, 1), (0x1234_6000, 1), (0x1220_0000, 1), (0x1240_0000, 2),
                           (GiB - 1, 2)]:
            hpa, perms, lvl = ept.translate(gpa, WRITE)
            assert (hpa, perms, lvl) == (4 * GiB + gpa, EptPerm.RWX, level)
            e = leaf(ept, gpa)
            assert bits(e, 5, 3) == MemType.UC and bits(e, 6, 6) == 1
        assert ept.table_count == 4

    def test_split_copies_attributes_into_every_new_entry(self, ept, mem):
        ept.map(2 * MiB, 8 * MiB, 2 * MiB, EptPerm.RX, MemType.WP, suppress_ve=True)
        big = leaf(ept, 2 * MiB)
        ept.protect(2 * MiB, 4 * KiB, EptPerm.R)
        pt = ept.entries(2 * MiB)[-1][1] & ~0xFFF
        for i in range(512):
            e = mem.read_u64(pt + 8 * i)
            assert bits(e, 51, 12) << 12 == 8 * MiB + i * 4 * KiB
            expected = (big & 0xFFF & ~(1 << 7)) | (big & (0xFFF << 52))
            if i == 0:
                expected = expected & ~0b111 | EptPerm.R
            assert (e & 0xFFF) | (e & (0xFFF << 52)) == expected

    def test_unmap_inside_large_page(self, ept):
        ept.map(0, 0, GiB, EptPerm.RWX)
        ept.unmap(3 * MiB, 4 * KiB)
        with pytest.raises(EptViolation) as exc:
            ept.translate(3 * MiB)
        assert exc.value.perms_found == EptPerm.NONE and exc.value.level == 1
        assert ept.translate(3 * MiB + 4 * KiB)[0] == 3 * MiB + 4 * KiB
        assert ept.translate(3 * MiB - 4 * KiB)[0] == 3 * MiB - 4 * KiB
        assert ept.translate(512 * MiB)[2] == 2

    def test_unmap_everything_frees_all_tables_but_the_pml4(self, ept, frames):
        ept.map(0x1000, 0x1000, 3 * GiB, EptPerm.RW)
        ept.unmap(0x1000, 3 * GiB)
        assert ept.table_count == 1
        assert frames.used == 1
        assert list(ept.mappings()) == []

    def test_partial_unmap_frees_emptied_tables(self, ept):
        ept.map(0x40_0000_0000, 0, 8 * KiB, EptPerm.RW)
        ept.map(0, 0, 8 * KiB, EptPerm.RW)
        assert ept.table_count == 6          # PML4, PDPT, and a PD + PT for each
        ept.unmap(0x40_0000_0000, 4 * KiB)
        assert ept.table_count == 6
        ept.unmap(0x40_0000_1000, 4 * KiB)
        assert ept.table_count == 4
        assert ept.translate(0x1000)[0] == 0x1000

    def test_protect_changes_only_the_range(self, ept):
        ept.map(0, 0, GiB, EptPerm.RWX)
        ept.protect(4 * MiB, 2 * MiB + 4 * KiB, EptPerm.R)
        assert ept.translate(4 * MiB) == (4 * MiB, EptPerm.R, 2)
        assert ept.translate(6 * MiB) == (6 * MiB, EptPerm.R, 1)
        assert ept.translate(6 * MiB + 4 * KiB) == (6 * MiB + 4 * KiB, EptPerm.RWX, 1)
        assert ept.translate(4 * MiB - 1, WRITE)[1] == EptPerm.RWX
        with pytest.raises(EptViolation):
            ept.translate(5 * MiB, WRITE)

    def test_protect_skips_holes(self, ept):
        ept.map(0, 0, 4 * KiB, EptPerm.RW)
        ept.map(8 * KiB, 8 * KiB, 4 * KiB, EptPerm.RW)
        ept.protect(0, 16 * KiB, EptPerm.RX)
        assert ept.translate(8 * KiB, FETCH)[1] == EptPerm.RX
        with pytest.raises(EptViolation):
            ept.translate(4 * KiB)


# ------------------------------------------------------------------ the walk

class TestTranslate:
    def test_walk_reads_the_tables_in_memory(self, ept, mem):
        ept.map(0x7F_C020_3000, 0x2000_0000, 0x1000, EptPerm.RW)
        assert ept.translate(0x7F_C020_3ABC) == (0x2000_0ABC, EptPerm.RW, 1)
        # Rewrite the PTE behind the Ept's back: the next walk sees it (no stale cache).
        pte_addr = ept.entry_address(0x7F_C020_3000)
        mem.write_u64(pte_addr, 0x3000_0000 | 6 << 3 | 0b111)
        assert ept.translate(0x7F_C020_3ABC, FETCH) == (0x3000_0ABC, EptPerm.RWX, 1)
        # And the indices used at each level are GPA bits 47:39, 38:30, 29:21, 20:12.
        walk = ept.entries(0x7F_C020_3000)
        tables = [ept.pml4] + [e & ~0xFFF for _, _, e in walk[:3]]
        indices = [(0x7F_C020_3000 >> s) & 0x1FF for s in (39, 30, 21, 12)]
        assert [ea for _, ea, _ in walk] == [t + 8 * i for t, i in zip(tables, indices)]
        assert indices == [0, 511, 1, 3]

    def test_translate_eptp_walks_from_the_eptp_alone(self, ept, mem):
        ept.map(GiB, 0, 2 * MiB, EptPerm.RW)
        assert translate_eptp(mem, ept.eptp, GiB + 0x42, WRITE) == (0x42, EptPerm.RW, 2)

    def test_effective_permissions_are_the_and_over_all_levels(self, ept, mem):
        ept.map(0, 0x5000, 0x1000, EptPerm.RWX)
        pde_addr = ept.entry_address(0, level=2)
        mem.write_u64(pde_addr, mem.read_u64(pde_addr) & ~0b110 | 0b001)     # PDE: R only
        assert ept.translate(0) == (0x5000, EptPerm.R, 1)
        with pytest.raises(EptViolation) as exc:
            ept.translate(0, WRITE)
        assert exc.value.perms_found == EptPerm.R

    @pytest.mark.parametrize("perms, access", [
        (EptPerm.R, WRITE), (EptPerm.R, FETCH), (EptPerm.RW, FETCH), (EptPerm.RX, WRITE),
    ])
    def test_violation_on_missing_permission(self, ept, perms, access):
        ept.map(0x10000, 0x20000, 0x1000, perms)
        with pytest.raises(EptViolation) as exc:
            ept.translate(0x10008, access)
        v = exc.value
        assert (v.gpa, v.access, v.perms_found, v.level) == (0x10008, access, perms, 1)
        assert v.exit_qualification == (1 << access) | (int(perms) << 3)

    @pytest.mark.parametrize("perms, access", [
        (EptPerm.R, READ), (EptPerm.RW, READ), (EptPerm.RW, WRITE), (EptPerm.RX, FETCH), (EptPerm.RWX, WRITE),
    ])
    def test_allowed_access(self, ept, perms, access):
        ept.map(0x10000, 0x20000, 0x1000, perms)
        assert ept.translate(0x10008, access) == (0x20008, perms, 1)

    @pytest.mark.parametrize("access", [READ, WRITE, FETCH])
    def test_violation_on_non_present_entry(self, ept, access):
        ept.map(0, 0, 0x1000, EptPerm.RWX)
        with pytest.raises(EptViolation) as exc:            # PTE not present
            ept.translate(0x1000, access)
        assert exc.value.level == 1 and exc.value.perms_found == 0
        with pytest.raises(EptViolation) as exc:            # PDPTE not present
            ept.translate(5 * GiB, access)
        assert exc.value.level == 3
        with pytest.raises(EptViolation) as exc:            # PML4E not present
            ept.translate(1 << 40, access)
        assert exc.value.level == 4 and exc.value.access == access

    def test_non_present_entry_with_reserved_bits_is_a_violation_not_a_misconfig(self, ept, mem):
        ept.map(0, 0, 0x1000, EptPerm.RWX)
        mem.write_u64(ept.entry_address(0), 0xFFFF_FFFF_FFFF_FFF8)   # bits 2:0 clear
        with pytest.raises(EptViolation):
            ept.translate(0)

    def test_accessed_and_dirty_flags_when_enabled(self, mem, frames):
        ept = Ept(mem, frames, ad=True)
        assert ept.eptp & 1 << 6
        ept.map(0, 0, 0x1000, EptPerm.RW)
        assert all(not e & EPT_ACCESSED for _, _, e in ept.entries(0))
        ept.translate(0, READ)
        assert all(e & EPT_ACCESSED for _, _, e in ept.entries(0))
        assert not leaf(ept, 0) & EPT_DIRTY
        ept.translate(0, WRITE)
        assert leaf(ept, 0) & EPT_DIRTY
        assert not ept.entries(0)[0][2] & EPT_DIRTY

    def test_ad_flags_untouched_when_disabled(self, ept):
        ept.map(0, 0, 0x1000, EptPerm.RW)
        ept.translate(0, WRITE)
        assert all(not e & (EPT_ACCESSED | EPT_DIRTY) for _, _, e in ept.entries(0))

    def test_gpa_beyond_48_bits_is_rejected(self, ept):
        with pytest.raises(ValueError):
            ept.translate(1 << 48)


# ------------------------------------------------------------------ misconfigurations

class TestMisconfig:
    """SDM 29.3.3.1; the emulated CPU does not report execute-only support."""

    @pytest.fixture
    def mapped(self, ept):
        ept.map(0, 0, 4 * KiB, EptPerm.RWX)            # 4 KiB leaf at GPA 0
        ept.map(2 * MiB, 2 * MiB, 2 * MiB, EptPerm.RWX)  # 2 MiB leaf
        ept.map(GiB, GiB, GiB, EptPerm.RWX)            # 1 GiB leaf
        return ept

    def poke(self, ept, mem, gpa, level, f):
        addr = ept.entry_address(gpa, level)
        value = f(mem.read_u64(addr))
        mem.write_u64(addr, value)
        return value

    @pytest.mark.parametrize("gpa, level", [(0, 1), (2 * MiB, 2), (GiB, 3), (0, 2), (0, 3), (0, 4)])
    @pytest.mark.parametrize("p, reason", [
        (0b010, MisconfigReason.WRITE_WITHOUT_READ),
        (0b110, MisconfigReason.WRITE_WITHOUT_READ),
        (0b100, MisconfigReason.EXECUTE_ONLY),
    ])
    def test_bad_permission_combinations(self, mapped, mem, gpa, level, p, reason):
        entry = self.poke(mapped, mem, gpa, level, lambda e: e & ~0b111 | p)
        for access in (READ, WRITE, FETCH):     # misconfig whatever the access
            with pytest.raises(EptMisconfig) as exc:
                mapped.translate(gpa, access)
            assert (exc.value.gpa, exc.value.entry, exc.value.reason, exc.value.level) == (gpa, entry, reason, level)

    @pytest.mark.parametrize("gpa, level, bit", [
        (0, 4, 7),                 # page size in a PML4E
        (0, 4, 3), (0, 4, 6),      # bits 7:3 of a PML4E
        (0, 3, 4),                 # bits 6:3 of a PDPTE that points to a PD (memtype field in a non-leaf)
        (0, 2, 5),                 # ... of a PDE that points to a PT
        (GiB, 3, 12), (GiB, 3, 29),          # bits 29:12 of a 1 GiB page
        (2 * MiB, 2, 12), (2 * MiB, 2, 20),  # bits 20:12 of a 2 MiB page
        (0, 1, 46), (0, 1, 51), (2 * MiB, 2, 48), (GiB, 3, 47), (0, 2, 50), (0, 4, 46),  # above MAXPHYADDR
    ])
    def test_reserved_bits(self, mapped, mem, gpa, level, bit):
        entry = self.poke(mapped, mem, gpa, level, lambda e: e | 1 << bit)
        with pytest.raises(EptMisconfig) as exc:
            mapped.translate(gpa)
        assert exc.value.reason == MisconfigReason.RESERVED_BITS
        assert (exc.value.entry, exc.value.level) == (entry, level)
        if level == 4 and bit == 7:
            assert "PML4E" in str(exc.value)

    @pytest.mark.parametrize("gpa, level, bit", [
        (0, 1, 7),                    # ignored in a PTE
        (0, 1, 11), (0, 2, 11), (0, 4, 8), (0, 4, 10),   # ignored / accessed / user-exec
        (0, 1, 52), (0, 1, 62), (0, 3, 63),              # ignored high bits
    ])
    def test_ignored_bits_do_not_misconfigure(self, mapped, mem, gpa, level, bit):
        self.poke(mapped, mem, gpa, level, lambda e: e | 1 << bit)
        assert mapped.translate(gpa)[0] == gpa

    @pytest.mark.parametrize("gpa, level", [(0, 1), (2 * MiB, 2), (GiB, 3)])
    @pytest.mark.parametrize("memtype", [2, 3, 7])
    def test_bad_memory_type_in_a_leaf(self, mapped, mem, gpa, level, memtype):
        self.poke(mapped, mem, gpa, level, lambda e: e & ~(7 << 3) | memtype << 3)
        with pytest.raises(EptMisconfig) as exc:
            mapped.translate(gpa)
        assert exc.value.reason == MisconfigReason.MEMORY_TYPE and exc.value.level == level

    @pytest.mark.parametrize("memtype", [0, 1, 4, 5, 6])
    def test_valid_memory_types(self, mapped, mem, memtype):
        self.poke(mapped, mem, 0, 1, lambda e: e & ~(7 << 3) | memtype << 3)
        assert mapped.translate(0)[0] == 0

    def test_misconfig_wins_over_a_permission_violation(self, mapped, mem):
        self.poke(mapped, mem, 0, 1, lambda e: e & ~0b111 | 0b100)   # X-only
        with pytest.raises(EptMisconfig):
            mapped.translate(0, WRITE)

    def test_map_refuses_to_create_misconfigured_entries(self, ept):
        for perms in (EptPerm.W, EptPerm.W | EptPerm.X, EptPerm.X, EptPerm.NONE):
            with pytest.raises(ValueError):
                ept.map(0, 0, 0x1000, perms)
        for memtype in (2, 3, 7, 8):
            with pytest.raises(ValueError):
                ept.map(0, 0, 0x1000, EptPerm.R, memtype)
        with pytest.raises(ValueError):
            ept.protect(0, 0x1000, EptPerm.W)
        assert ept.table_count == 1


# ------------------------------------------------------------------ input checks and lifetime

def test_unaligned_or_empty_ranges_are_rejected(ept):
    for args in [(0x800, 0, 0x1000), (0, 0x800, 0x1000), (0, 0, 0x800), (0, 0, 0), ((1 << 48) - 0x1000, 0, 0x2000)]:
        with pytest.raises(ValueError):
            ept.map(*args, EptPerm.R)


def test_destroy_frees_every_frame(mem, frames):
    ept = build_identity_ept(mem, frames, [(0, 3 * GiB), (4 * GiB, 12 * GiB)],
                             holes=[(4 * GiB + 4 * KiB, 256 * MiB)])
    assert frames.used == ept.table_count + 1      # + the 4 KiB zero frame it allocated
    ept.destroy()
    assert frames.used == 0
    with pytest.raises(RuntimeError):
        ept.eptp


def test_invalidate_hooks_are_told_about_every_edit(ept):
    seen = []
    ept.invalidate_hooks.append(lambda gpa, size: seen.append((gpa, size)))
    ept.map(0, 0, 2 * MiB, EptPerm.RW)
    ept.protect(0, 4 * KiB, EptPerm.R)
    ept.unmap(4 * KiB, 4 * KiB)
    assert seen == [(0, 2 * MiB), (0, 4 * KiB), (4 * KiB, 4 * KiB)]


# ------------------------------------------------------------------ mappings()

class TestMappings:
    def test_coalesces_contiguous_leaves_of_any_size(self, ept):
        ept.map(GiB - 4 * KiB, 9 * GiB - 4 * KiB, 4 * KiB, EptPerm.RW)   # 4 KiB
        ept.map(GiB, 9 * GiB, GiB, EptPerm.RW)                             # 1 GiB
        ept.map(2 * GiB, 10 * GiB, 2 * MiB, EptPerm.RW)                    # 2 MiB
        assert list(ept.mappings()) == [
            EptMapping(GiB - 4 * KiB, 9 * GiB - 4 * KiB, GiB + 2 * MiB + 4 * KiB, EptPerm.RW, MemType.WB)]

    def test_breaks_runs_on_perms_memtype_or_host_discontinuity(self, ept):
        ept.map(0, 0, 16 * KiB, EptPerm.RWX)
        ept.protect(4 * KiB, 4 * KiB, EptPerm.R)
        ept.map(8 * KiB, 8 * KiB, 4 * KiB, EptPerm.RWX, MemType.UC)
        ept.map(12 * KiB, 0x100000, 4 * KiB, EptPerm.RWX)
        got = [(m.gpa, m.hpa, m.size, m.perms, m.memtype) for m in ept.mappings()]
        assert got == [(0, 0, 4 * KiB, EptPerm.RWX, MemType.WB),
                       (4 * KiB, 4 * KiB, 4 * KiB, EptPerm.R, MemType.WB),
                       (8 * KiB, 8 * KiB, 4 * KiB, EptPerm.RWX, MemType.UC),
                       (12 * KiB, 0x100000, 4 * KiB, EptPerm.RWX, MemType.WB)]

    def test_reads_the_tables_not_a_shadow(self, ept, mem):
        ept.map(0, 0, 8 * KiB, EptPerm.RW)
        mem.write_u64(ept.entry_address(4 * KiB), 0)
        assert list(ept.mappings()) == [(0, 0, 4 * KiB, EptPerm.RW, MemType.WB)]

    def test_alias_runs_merge_in_runs_and_dump(self, ept):
        ept.map_alias(0, 8 * MiB, 0x20_0000, EptPerm.R, page_size=2 * MiB)
        assert len(list(ept.mappings())) == 4
        (run,) = ept.runs()
        assert (run.gpa, run.hpa, run.size, run.perms, run.alias_page) == (0, 0x20_0000, 8 * MiB, EptPerm.R, 2 * MiB)
        dump = ept.dump()
        assert "every 2M page" in dump[1] and "r--" in dump[1]


# ------------------------------------------------------------------ the monitor's root EPT

class TestIdentityRootEpt:
    """A small machine: 64 MiB RAM; the reserved range 32-64 MiB holds monitor memory
    (32-48 MiB, where the tables and the 2 MiB zero region live) and EPC (48-64 MiB)."""

    MONITOR = (32 * MiB, 16 * MiB)
    EPC = (48 * MiB, 16 * MiB)
    ZERO = 46 * MiB                     # 2 MiB zero region inside monitor memory

    @pytest.fixture
    def root(self, mem):
        frames = FrameAllocator(mem, 32 * MiB, 8 * MiB)
        mem.write(48 * MiB + 0x100, b"enclave secret")    # EPC content
        mem.write(33 * MiB, b"monitor secret")
        return build_identity_ept(mem, frames, mem.regions, holes=[self.MONITOR, self.EPC], zero_page=self.ZERO)

    def test_ram_is_identity_mapped_rwx_wb(self, root):
        for gpa in (0, 0x1000, 31 * MiB + 0x123, 32 * MiB - 1):
            assert root.translate(gpa, WRITE) == (gpa, EptPerm.RWX, 2)
        assert bits(leaf(root, 0), 5, 3) == MemType.WB

    @pytest.mark.parametrize("gpa", [32 * MiB, 33 * MiB, 48 * MiB + 0x100, 64 * MiB - 8])
    def test_holes_read_as_the_zero_page(self, root, mem, gpa):
        hpa, perms, level = root.translate(gpa, READ)
        assert (perms, level) == (EptPerm.R, 2)
        assert hpa == self.ZERO + gpa % (2 * MiB)
        assert mem.read(hpa, 8) == bytes(8)
        assert bits(leaf(root, gpa), 5, 3) == MemType.WB

    @pytest.mark.parametrize("access", [WRITE, FETCH])
    @pytest.mark.parametrize("gpa", [32 * MiB, 48 * MiB + 0x100])
    def test_holes_are_read_only(self, root, gpa, access):
        with pytest.raises(EptViolation) as exc:
            root.translate(gpa, access)
        assert exc.value.perms_found == EptPerm.R

    def test_every_hole_leaf_points_at_the_one_zero_region(self, root):
        hole_leaves = {leaf(root, g) & ~0xFFF for g in range(32 * MiB, 64 * MiB, 2 * MiB)}
        assert hole_leaves == {self.ZERO}

    def test_tpm_crb_is_uc_read_write(self, root):
        base, size = TPM_CRB_MMIO
        assert (base, size) == (0xFED40000, 0x5000)
        for gpa in range(base, base + size, 0x1000):
            assert root.translate(gpa + 4, WRITE) == (gpa + 4, EptPerm.RW, 1)
            assert bits(leaf(root, gpa), 5, 3) == MemType.UC
        with pytest.raises(EptViolation):
            root.translate(base, FETCH)
        with pytest.raises(EptViolation):
            root.translate(base + size)

    def test_nothing_else_is_mapped(self, root):
        runs = [(r.gpa, r.size, r.perms, r.alias_page) for r in root.runs()]
        assert runs == [(0, 32 * MiB, EptPerm.RWX, 0), (32 * MiB, 32 * MiB, EptPerm.R, 2 * MiB),
                        (0xFED40000, 0x5000, EptPerm.RW, 0)]

    def test_unaligned_hole_uses_4k_leaves_to_a_zero_frame(self, mem):
        frames = FrameAllocator(mem, 32 * MiB, 8 * MiB)
        ept = build_identity_ept(mem, frames, mem.regions, holes=[(40 * MiB + 4 * KiB, 12 * KiB)], mmio=())
        (zero,) = ept.owned_frames
        for gpa in (40 * MiB + 4 * KiB, 40 * MiB + 12 * KiB):
            assert ept.translate(gpa + 5) == (zero + 5, EptPerm.R, 1)
        assert ept.translate(40 * MiB)[0] == 40 * MiB
        assert ept.translate(40 * MiB + 16 * KiB, WRITE)[0] == 40 * MiB + 16 * KiB

    def test_2m_zero_region_serves_unaligned_hole_edges_with_4k_leaves(self, mem):
        frames = FrameAllocator(mem, 32 * MiB, 8 * MiB)
        ept = build_identity_ept(mem, frames, mem.regions, holes=[(2 * MiB - 4 * KiB, 2 * MiB + 8 * KiB)],
                                 zero_page=self.ZERO, mmio=())
        assert ept.translate(2 * MiB - 4 * KiB) == (self.ZERO, EptPerm.R, 1)
        assert ept.translate(2 * MiB + 5) == (self.ZERO + 5, EptPerm.R, 2)
        assert ept.translate(4 * MiB + 4 * KiB - 1) == (self.ZERO + 4 * KiB - 1, EptPerm.R, 1)
        assert ept.translate(4 * MiB + 4 * KiB)[1] == EptPerm.RWX

    def test_zero_region_must_be_aligned(self, mem):
        frames = FrameAllocator(mem, 32 * MiB, 8 * MiB)
        with pytest.raises(ValueError):
            build_identity_ept(mem, frames, mem.regions, holes=[self.EPC], zero_page=self.ZERO + 4 * KiB)

    def test_64_gib_host(self, mem):
        """The root EPT of a 64 GiB PC (RAM 0-3 GiB and 4-65 GiB, reserved range at 4 GiB:
        2 GiB monitor + 30 GiB EPC) is tiny with 1 GiB pages and fast to build."""
        frames = FrameAllocator(mem, 32 * MiB, 8 * MiB)
        ram = [(0, 3 * GiB), (4 * GiB, 61 * GiB)]
        holes = [(4 * GiB, 2 * GiB), (6 * GiB, 30 * GiB)]
        t0 = time.perf_counter()
        ept = build_identity_ept(mem, frames, ram, holes, zero_page=self.ZERO)
        build_ms = (time.perf_counter() - t0) * 1e3
        n = 20000
        t0 = time.perf_counter()
        for _ in range(n):
            ept.translate(0xFED40010)
        walk_us = (time.perf_counter() - t0) / n * 1e6
        print(f"\n64 GiB root EPT: built in {build_ms:.2f} ms with {ept.table_count} table frames; "
              f"4-level walk {walk_us:.2f} us")
        assert ept.translate(65 * GiB - 1) == (65 * GiB - 1, EptPerm.RWX, 3)
        assert ept.translate(7 * GiB + 0x10)[0:2] == (self.ZERO + 0x10, EptPerm.R)
        assert ept.table_count <= 40
        runs = [(r.gpa, r.size, r.alias_page) for r in ept.runs()]
        assert runs == [(0, 3 * GiB, 0), (0xFED40000, 0x5000, 0), (4 * GiB, 32 * GiB, 2 * MiB),
                        (36 * GiB, 29 * GiB, 0)]
        ept.destroy()
        assert frames.used == 0
