"""VT-d second-level tables for DMA remapping: the EPT format, but monitor memory and EPC are absent."""

from __future__ import annotations

import pytest

from hyperenclave.platform.memory import GiB, KiB, MiB, FrameAllocator
from hyperenclave.vmm.ept import FETCH, READ, WRITE, EptPerm, EptWalker
from hyperenclave.vmm.iommu_tables import (
    CONTEXT_AW_48BIT,
    DmaFault,
    DmaFaultReason,
    IommuDomain,
    build_dma_domain,
)

MONITOR = (32 * MiB, 16 * MiB)
EPC = (48 * MiB, 16 * MiB)


@pytest.fixture
def frames(mem):
    return FrameAllocator(mem, 32 * MiB, 8 * MiB)


@pytest.fixture
def domain(mem, frames):
    return build_dma_domain(mem, frames, mem.regions, holes=[MONITOR, EPC], rmrr=[(40 * MiB, 8 * KiB)],
                            domain_id=7)


def test_dma_capable_ram_is_identity_read_write(domain):
    assert domain.translate(0x1000, WRITE) == (0x1000, EptPerm.RW, 2)
    assert domain.translate(32 * MiB - 1, READ) == (32 * MiB - 1, EptPerm.RW, 2)


@pytest.mark.parametrize("addr", [32 * MiB, 39 * MiB, 40 * MiB + 8 * KiB, 48 * MiB, 64 * MiB - 1])
@pytest.mark.parametrize("access, reason", [(READ, DmaFaultReason.READ_DENIED), (WRITE, DmaFaultReason.WRITE_DENIED)])
def test_monitor_memory_and_epc_are_absent(domain, addr, access, reason):
    with pytest.raises(DmaFault) as exc:
        domain.translate(addr, access, source_id=0x0108)
    f = exc.value
    assert (f.addr, f.access, f.reason, f.source_id, f.domain_id) == (addr, access, reason, 0x0108, 7)
    assert "01:01.0" in str(f)


def test_rmrr_ranges_stay_mapped_even_inside_a_hole(domain):
    assert domain.translate(40 * MiB + 4 * KiB + 3, WRITE) == (40 * MiB + 4 * KiB + 3, EptPerm.RW, 1)


def test_holes_are_absent_not_aliased(domain):
    assert [(m.gpa, m.size) for m in domain.mappings()] == [(0, 32 * MiB), (40 * MiB, 8 * KiB)]


def test_read_only_page_denies_writes(domain):
    domain.protect(0x5000, 0x1000, EptPerm.R)
    assert domain.translate(0x5000, READ)[0] == 0x5000
    with pytest.raises(DmaFault) as exc:
        domain.translate(0x5000, WRITE)
    assert exc.value.reason == DmaFaultReason.WRITE_DENIED


def test_reserved_bits_fault(domain, mem):
    addr = domain.entry_address(0x1000)
    mem.write_u64(addr, mem.read_u64(addr) | 1 << 13)        # bits 20:12 of a 2 MiB page
    with pytest.raises(DmaFault) as exc:
        domain.translate(0x1000)
    assert exc.value.reason == DmaFaultReason.SL_RESERVED


def test_address_beyond_agaw(domain):
    with pytest.raises(DmaFault) as exc:
        domain.translate(1 << 48, READ)
    assert exc.value.reason == DmaFaultReason.ADDRESS_BEYOND_AGAW


def test_dma_has_no_fetch(domain):
    with pytest.raises(ValueError):
        domain.translate(0, FETCH)


def test_context_entry_encoding(domain):
    lo, hi = domain.context_entry()
    assert lo & 1 == 1                    # present
    assert (lo >> 2) & 3 == 0             # translation type: untranslated via second level
    assert lo & ~0xFFF == domain.slptptr == domain.pml4
    assert hi & 7 == CONTEXT_AW_48BIT == 0b010
    assert (hi >> 8) & 0xFFFF == 7


def test_tables_are_plain_ept_format(domain, mem):
    """The same walker reads them: the hardware formats agree for everything used here."""
    assert EptWalker(mem).walk(domain.slptptr, 0x1234, WRITE) == (0x1234, EptPerm.RW, 2)


def test_large_host_uses_1g_pages_and_destroy_frees(mem, frames):
    dom = build_dma_domain(mem, frames, [(0, 3 * GiB), (4 * GiB, 61 * GiB)], holes=[(4 * GiB, 32 * GiB)])
    assert dom.translate(36 * GiB + 5, WRITE) == (36 * GiB + 5, EptPerm.RW, 3)
    with pytest.raises(DmaFault):
        dom.translate(4 * GiB)
    assert dom.table_count == 2
    dom.destroy()
    assert frames.used == 0


def test_domain_id_must_fit(mem, frames):
    with pytest.raises(ValueError):
        IommuDomain(mem, frames, domain_id=1 << 16)
    assert IommuDomain(mem, frames).domain_id == 1
