"""The EPT as the vCPU's second stage: walks the real tables, caches, and INVEPT drops the cache."""

from __future__ import annotations

import pytest

from hyperenclave.platform.memory import FrameAllocator, MiB, PhysicalMemory
from hyperenclave.platform.paging import ACCESS_FETCH, ACCESS_READ, ACCESS_WRITE
from hyperenclave.vmm.ept import EptPerm, EptViolation, build_identity_ept
from hyperenclave.vmm.ept_tlb import EptTlb


@pytest.fixture
def setup():
    mem = PhysicalMemory(64 * MiB)
    frames = FrameAllocator(mem, 40 * MiB, 4 * MiB)
    ept = build_identity_ept(mem, frames, mem.regions, [(44 * MiB, 4 * MiB)], 46 * MiB)
    flushes = []
    return mem, ept, EptTlb(ept.walker, ept.eptp, lambda: flushes.append(1)), flushes


def test_ram_is_identity_mapped_rwx(setup) -> None:
    _, _, tlb, _ = setup
    assert tlb.translate(0x123456, ACCESS_WRITE) == (0x123000, 7)


def test_hole_reads_the_zero_page_and_refuses_write_and_fetch(setup) -> None:
    _, _, tlb, _ = setup
    hpa, perms = tlb.translate(44 * MiB + 0x5000, ACCESS_READ)
    assert 46 * MiB <= hpa < 48 * MiB and perms == int(EptPerm.R), "inside the 2 MiB zero page"
    for access in (ACCESS_WRITE, ACCESS_FETCH):
        with pytest.raises(EptViolation) as err:
            tlb.translate(44 * MiB + 0x5000, access)
        assert err.value.perms_found == EptPerm.R


def test_translations_are_cached_until_invept(setup) -> None:
    _, ept, tlb, flushes = setup
    tlb.translate(0x200000, ACCESS_READ)
    walks = tlb.walks
    tlb.translate(0x200abc, ACCESS_READ)
    assert tlb.walks == walks, "second access to the page hits the cache"
    ept.unmap(0x200000, 0x1000)
    assert tlb.translate(0x200000, ACCESS_READ)[0] == 0x200000, "stale until INVEPT, as on hardware"
    tlb.invept()
    assert flushes == [1]
    with pytest.raises(EptViolation):
        tlb.translate(0x200000, ACCESS_READ)


def test_a_cached_read_does_not_grant_a_write(setup) -> None:
    _, ept, tlb, _ = setup
    ept.protect(0x300000, 0x1000, EptPerm.R)
    tlb.translate(0x300000, ACCESS_READ)
    with pytest.raises(EptViolation):
        tlb.translate(0x300000, ACCESS_WRITE)


def test_one_walk_of_a_large_leaf_serves_every_page_under_it(setup) -> None:
    _, _, tlb, _ = setup
    tlb.translate(0x1000, ACCESS_READ)
    walks = tlb.walks
    for gpa in (0x7000, 0x1F_F000):
        assert tlb.translate(gpa, ACCESS_WRITE) == (gpa, 7)
    assert tlb.walks == walks


def test_a_page_split_out_of_a_cached_large_leaf_is_seen_after_invept(setup) -> None:
    _, ept, tlb, _ = setup
    tlb.translate(0x1000, ACCESS_READ)
    ept.protect(0x5000, 0x1000, EptPerm.R)
    tlb.invept()
    assert tlb.translate(0x6000, ACCESS_WRITE)[0] == 0x6000
    with pytest.raises(EptViolation):
        tlb.translate(0x5000, ACCESS_WRITE)


def test_guest_paging_structures_are_read_and_updated_through_the_stage(setup) -> None:
    mem, ept, tlb, _ = setup
    mem.write_u64(0x8010, 0x1234)
    assert tlb.read_u64(0x8010) == 0x1234
    tlb.write_u64(0x8018, 0x5678)
    assert mem.read_u64(0x8018) == 0x5678
    ept.protect(0x8000, 0x1000, EptPerm.R)
    tlb.invept()
    with pytest.raises(EptViolation):
        tlb.write_u64(0x8018, 0)


def test_with_ad_flags_a_cached_read_still_walks_to_set_dirty_on_write() -> None:
    mem = PhysicalMemory(64 * MiB)
    ept = build_identity_ept(mem, FrameAllocator(mem, 40 * MiB, 4 * MiB), mem.regions, ad=True)
    tlb = EptTlb(ept.walker, ept.eptp, lambda: None)
    tlb.translate(0x3000, ACCESS_READ)
    walks = tlb.walks
    tlb.translate(0x3000, ACCESS_WRITE)
    assert tlb.walks == walks + 1
    leaf = ept.entries(0x3000)[-1][2]
    assert leaf & (1 << 9) and leaf & (1 << 8), "the walk for the write set D (and A)"
