"""EPCM rules (SDM Vol. 3D EPCM and the page-adding leaves; HyperEnclave `enclave/epcm.rs`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperenclave.vmm.epcm import Epcm, OutOfEpc
from hyperenclave.vmm.sgx import (
    GP_VECTOR,
    PF_VECTOR,
    PageFlags,
    PageType,
    SgxError,
    SgxErrorCode,
    SgxFault,
)

EPC = 0x1_8000_0000           # where the reference's example puts the EPC
RW = PageFlags.R | PageFlags.W
ELRANGE = 0x7F00_0000_0000


@pytest.fixture
def epcm() -> Epcm:
    return Epcm(EPC, 16 * 4096)


def enclave(epcm: Epcm) -> int:
    secs = epcm.allocate()
    epcm.add(secs, PageType.PT_SECS)
    return secs


def test_allocator_hands_out_every_page_once(epcm: Epcm) -> None:
    pages = [epcm.allocate() for _ in range(16)]
    assert pages == [EPC + i * 4096 for i in range(16)]
    with pytest.raises(OutOfEpc):
        epcm.allocate()
    epcm.release(pages[5])
    assert epcm.allocate() == pages[5]
    with pytest.raises(ValueError, match="not allocated"):
        Epcm(EPC, 4096).release(EPC)


def test_a_valid_page_cannot_be_released(epcm: Epcm) -> None:
    secs = enclave(epcm)
    with pytest.raises(ValueError, match="EREMOVE it first"):
        epcm.release(secs)
    epcm.remove(secs)
    epcm.release(secs)


def test_add_records_the_attributes(epcm: Epcm) -> None:
    secs = enclave(epcm)
    page = epcm.allocate()
    entry = epcm.add(page, PageType.PT_REG, RW | PageFlags.X, ELRANGE + 0x1000, owner=secs)
    assert epcm.get(page) is entry
    assert (entry.page_type, entry.flags, entry.linear_address, entry.owner, entry.blocked) == \
        (PageType.PT_REG, RW | PageFlags.X, ELRANGE + 0x1000, secs, False)
    assert epcm.get(epcm.allocate()) is None          # allocated but not VALID
    assert epcm.children(secs) == [page]


def test_adding_an_already_valid_page_faults(epcm: Epcm) -> None:
    secs = enclave(epcm)
    page = epcm.allocate()
    epcm.add(page, PageType.PT_TCS, PageFlags(0), ELRANGE, owner=secs)
    with pytest.raises(SgxFault) as err:
        epcm.add(page, PageType.PT_REG, RW, ELRANGE + 0x1000, owner=secs)
    assert (err.value.vector, err.value.address) == (PF_VECTOR, page)
    assert "already VALID" in str(err.value)
    with pytest.raises(SgxError):                     # a fault is an SgxError too
        epcm.add(secs, PageType.PT_SECS)


@pytest.mark.parametrize("address", [EPC - 4096, EPC + 16 * 4096, 0, 0x1000])
def test_non_epc_addresses_are_sgx_pg_nonepc(epcm: Epcm, address: int) -> None:
    for call in (lambda: epcm.get(address), lambda: epcm.add(address, PageType.PT_SECS),
                 lambda: epcm.remove(address)):
        with pytest.raises(SgxError) as err:
            call()
        assert err.value.code == SgxErrorCode.SGX_PG_NONEPC
    assert address not in epcm


def test_misaligned_addresses_are_gp(epcm: Epcm) -> None:
    secs = enclave(epcm)
    for call in (lambda: epcm.get(EPC + 8),
                 lambda: epcm.add(EPC + 0x1800, PageType.PT_SECS),
                 lambda: epcm.add(epcm.allocate(), PageType.PT_REG, RW, ELRANGE + 1, secs)):
        with pytest.raises(SgxFault) as err:
            call()
        assert (err.value.vector, err.value.error_code) == (GP_VECTOR, 0)


def test_owner_must_be_a_valid_secs(epcm: Epcm) -> None:
    secs = enclave(epcm)
    tcs = epcm.allocate()
    epcm.add(tcs, PageType.PT_TCS, PageFlags(0), ELRANGE, owner=secs)
    for owner in (tcs, epcm.allocate()):              # a TCS; a page that is not VALID
        with pytest.raises(SgxFault) as err:
            epcm.add(epcm.allocate(), PageType.PT_REG, RW, ELRANGE + 0x1000, owner=owner)
        assert (err.value.vector, err.value.address) == (PF_VECTOR, owner)
    with pytest.raises(ValueError, match="needs its enclave's SECS"):
        epcm.add(epcm.allocate(), PageType.PT_REG, RW, ELRANGE)
    with pytest.raises(ValueError, match="no owner"):
        epcm.add(epcm.allocate(), PageType.PT_VA, owner=secs)


def test_secs_is_removed_last(epcm: Epcm) -> None:
    secs = enclave(epcm)
    pages = [epcm.allocate() for _ in range(3)]
    for i, page in enumerate(pages):
        epcm.add(page, PageType.PT_REG, RW, ELRANGE + i * 4096, owner=secs)
    with pytest.raises(SgxError) as err:
        epcm.remove(secs)
    assert err.value.code == SgxErrorCode.SGX_CHILD_PRESENT
    for page in pages:
        epcm.remove(page)
        epcm.remove(page)                             # EREMOVE of an invalid page: no-op
    epcm.remove(secs)
    assert epcm.get(secs) is None and epcm.children(secs) == []


def test_summary_counts_types_and_states(epcm: Epcm) -> None:
    secs = enclave(epcm)
    tcs = epcm.allocate()
    epcm.add(tcs, PageType.PT_TCS, PageFlags(0), ELRANGE, owner=secs)
    reg = epcm.add(epcm.allocate(), PageType.PT_REG, RW, ELRANGE + 0x1000, owner=secs)
    reg.blocked = True
    epcm.add(epcm.allocate(), PageType.PT_REG, RW | PageFlags.PENDING, ELRANGE + 0x2000,
             owner=secs)
    epcm.add(epcm.allocate(), PageType.PT_VA)
    epcm.allocate()
    summary = epcm.summary()
    assert summary == {
        "pages": 16, "free": 10, "allocated": 6, "valid": 5, "enclaves": 1,
        "PT_SECS": 1, "PT_TCS": 1, "PT_REG": 2, "PT_VA": 1, "PT_TRIM": 0, "PT_SS_FIRST": 0,
        "PT_SS_REST": 0, "PENDING": 1, "MODIFIED": 0, "PR": 0, "BLOCKED": 1,
    }


def test_range_must_be_page_aligned() -> None:
    for start, size in ((EPC + 1, 4096), (EPC, 4095), (EPC, 0)):
        with pytest.raises(ValueError):
            Epcm(start, size)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 7)), max_size=40))
def test_child_counts_stay_consistent(ops: list[tuple[str, int]]) -> None:
    """Random EADD/EREMOVE sequences: a SECS goes only when its enclave is empty."""
    epcm = Epcm(EPC, 8 * 4096)
    secs = EPC
    epcm.add(secs, PageType.PT_SECS)
    for op, slot in ops:
        page = EPC + 4096 * (1 + slot % 7)
        if op == "add" and epcm.get(page) is None and epcm.get(secs) is not None:
            epcm.add(page, PageType.PT_REG, RW, ELRANGE + slot * 4096, owner=secs)
        elif op == "remove":
            target = secs if slot == 7 else page
            try:
                epcm.remove(target)
            except SgxError as err:
                assert err.code == SgxErrorCode.SGX_CHILD_PRESENT and epcm.children(secs)
        assert epcm.summary()["valid"] == len(epcm.children(secs)) + (epcm.get(secs) is not None)
