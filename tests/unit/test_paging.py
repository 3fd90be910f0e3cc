"""The guest page walk: levels, large pages, permission bits, A/D updates, #PF error codes."""

import pytest

from hyperenclave.platform import paging as pg
from hyperenclave.platform.paging import (ACCESS_FETCH, ACCESS_READ, ACCESS_WRITE, PROT_EXEC,
                                          PROT_READ, PROT_WRITE, PageFault, walk)


class FakePhys:
    def __init__(self) -> None:
        self.words: dict[int, int] = {}
        self.reads: list[int] = []

    def read_u64(self, gpa: int) -> int:
        self.reads.append(gpa)
        return self.words.get(gpa, 0)

    def write_u64(self, gpa: int, value: int) -> None:
        self.words[gpa] = value


CR3, PDPT, PD, PT = 0x1000, 0x2000, 0x3000, 0x4000
P, RW, US, PS, A, D, NX = pg.PTE_P, pg.PTE_RW, pg.PTE_US, pg.PTE_PS, pg.PTE_A, pg.PTE_D, pg.PTE_NX


def tables(leaf_flags: int = P | RW | US, upper: int = P | RW | US) -> FakePhys:
    """0x40_0000 -> 4 KiB page at 0x9000 through four levels."""
    m = FakePhys()
    m.words[CR3] = PDPT | upper
    m.words[PDPT] = PD | upper
    m.words[PD + 2 * 8] = PT | upper
    m.words[PT] = 0x9000 | leaf_flags
    return m


def test_four_level_walk_reads_one_entry_per_level_and_returns_the_frame() -> None:
    m = tables()
    w = walk(m, CR3, 0x40_0123, ACCESS_READ, user=True)
    assert w.gpa == 0x9000 and w.page_size == 4096
    assert m.reads == [CR3, PDPT, PD + 16, PT]


def test_two_mib_and_one_gib_leaves() -> None:
    m = FakePhys()
    m.words[CR3] = PDPT | P | RW
    m.words[PDPT] = PD | P | RW
    m.words[PDPT + 8] = (5 << 30) | P | RW | PS           # 1 GiB page at 5 GiB
    m.words[PD] = (0x20_0000 * 7) | P | RW | PS             # 2 MiB page at 14 MiB
    w2 = walk(m, CR3, 0x1_2345, ACCESS_READ, user=False)
    assert (w2.gpa, w2.page_size) == (0xE0_0000 + 0x1_2000, 2 << 20)
    w1 = walk(m, CR3, (1 << 30) + 0x345_6789, ACCESS_READ, user=False)
    assert (w1.gpa, w1.page_size) == ((5 << 30) + 0x345_6000, 1 << 30)


def test_not_present_is_pf_with_access_bits_in_the_error_code() -> None:
    m = tables(leaf_flags=0)
    with pytest.raises(PageFault) as e:
        walk(m, CR3, 0x40_0008, ACCESS_WRITE, user=True)
    assert e.value.error_code == pg.PF_W | pg.PF_U
    assert e.value.address == 0x40_0008


def test_user_access_to_supervisor_page_is_protection_fault() -> None:
    m = tables(leaf_flags=P | RW)
    with pytest.raises(PageFault) as e:
        walk(m, CR3, 0x40_0000, ACCESS_READ, user=True)
    assert e.value.error_code == pg.PF_P | pg.PF_U


def test_read_only_page_blocks_user_writes_and_supervisor_writes_under_cr0_wp() -> None:
    m = tables(leaf_flags=P | US)
    with pytest.raises(PageFault):
        walk(m, CR3, 0x40_0000, ACCESS_WRITE, user=True)
    with pytest.raises(PageFault):
        walk(m, CR3, 0x40_0000, ACCESS_WRITE, user=False, cr0_wp=True)
    w = walk(m, CR3, 0x40_0000, ACCESS_WRITE, user=False, cr0_wp=False)
    assert w.perms & PROT_WRITE


def test_nx_blocks_fetch_only_when_efer_nxe_is_set() -> None:
    m = tables(leaf_flags=P | RW | US | NX)
    with pytest.raises(PageFault) as e:
        walk(m, CR3, 0x40_0000, ACCESS_FETCH, user=True, nxe=True)
    assert e.value.error_code == pg.PF_P | pg.PF_U | pg.PF_I
    assert not walk(m, CR3, 0x40_0000, ACCESS_READ, user=True).perms & PROT_EXEC
    with pytest.raises(PageFault) as rsvd:
        walk(m, CR3, 0x40_0000, ACCESS_READ, user=True, nxe=False)
    assert rsvd.value.error_code & pg.PF_RSVD


def test_accessed_bit_on_every_level_and_dirty_only_on_write() -> None:
    m = tables()
    w = walk(m, CR3, 0x40_0000, ACCESS_READ, user=True)
    assert all(m.words[a] & A for a in (CR3, PDPT, PD + 16, PT))
    assert not m.words[PT] & D
    assert w.perms == PROT_READ | PROT_EXEC      # write withheld until D can be set
    w = walk(m, CR3, 0x40_0000, ACCESS_WRITE, user=True)
    assert m.words[PT] & D and w.perms & PROT_WRITE


def test_non_canonical_address_faults() -> None:
    with pytest.raises(PageFault):
        walk(tables(), CR3, 0x0000_8000_0000_0000, ACCESS_READ, user=False)


def test_reserved_ps_bit_in_pml4e_is_rsvd_fault() -> None:
    m = tables()
    m.words[CR3] |= PS
    with pytest.raises(PageFault) as e:
        walk(m, CR3, 0x40_0000, ACCESS_READ, user=True)
    assert e.value.error_code & pg.PF_RSVD
