"""The hypercall ABI: supervisor codes from CPL 0 only, user codes from CPL 3 only, else #UD."""

from __future__ import annotations

import errno

import pytest

from hyperenclave.vmm.hypercall import (HypercallArgs, HypercallCode, HypercallError,
                                        HypercallTable, InvalidOpcode, is_user_code)


@pytest.fixture
def table() -> HypercallTable:
    t = HypercallTable()
    t.register(HypercallCode.RESET_STATS, lambda a: 0)
    t.register(HypercallCode.ENCLAVE_ENTER, lambda a: 7)

    def fail(a: HypercallArgs) -> int:
        raise HypercallError(errno.EFAULT, "bad pointer")
    t.register(HypercallCode.INIT_CMRM, fail)
    return t


def test_bits_31_and_30_make_a_code_user_level() -> None:
    assert is_user_code(0x8000_0000) and is_user_code(0x4000_0000)
    assert not is_user_code(0x0) and not is_user_code(0x201)


def test_supervisor_code_runs_from_cpl0_and_counts(table: HypercallTable) -> None:
    assert table.call(HypercallArgs(0x100, 0, 0, cpl=0)) == 0
    assert table.counts[0x100] == 1


@pytest.mark.parametrize("cpl", [1, 2, 3])
def test_supervisor_code_from_user_mode_is_ud(table: HypercallTable, cpl: int) -> None:
    with pytest.raises(InvalidOpcode, match="supervisor-level"):
        table.call(HypercallArgs(0x100, 0, 0, cpl=cpl))
    assert table.failures[0x100] == 1


def test_user_code_from_kernel_mode_is_ud(table: HypercallTable) -> None:
    with pytest.raises(InvalidOpcode, match="user-level"):
        table.call(HypercallArgs(0x8000_0000, 0, 0, cpl=0))


def test_user_code_from_cpl3_runs(table: HypercallTable) -> None:
    assert table.call(HypercallArgs(0x8000_0000, 0, 0, cpl=3)) == 7


def test_unknown_supervisor_code_is_enosys_and_unknown_user_code_is_ud(table: HypercallTable) -> None:
    assert table.call(HypercallArgs(0x999, 0, 0, cpl=0)) == -errno.ENOSYS
    with pytest.raises(InvalidOpcode):
        table.call(HypercallArgs(0x8000_0777, 0, 0, cpl=3))


def test_code_wider_than_32_bits_is_ud(table: HypercallTable) -> None:
    with pytest.raises(InvalidOpcode, match="32 bits"):
        table.call(HypercallArgs(1 << 32, 0, 0, cpl=0))


def test_handler_errors_propagate_and_count(table: HypercallTable) -> None:
    with pytest.raises(HypercallError) as err:
        table.call(HypercallArgs(0x200, 0, 0, cpl=0))
    assert err.value.errno == errno.EFAULT
    assert table.failures[0x200] == 1
