"""Taking shared app memory back from an enclave (HyperEnclave's HC 0x102-0x104), from
bare-metal x86: after SharedMemoryRemove the enclave's access is a #PF AEX that never reaches the
app's page; after InvalidStart/InvalidEnd the access is an AEX recorded as SHARED_MEM_FETCH, the
host sees a not-present fault it can fix, and ERESUME maps the app's page again."""

from __future__ import annotations

import errno
import struct

import pytest

from hyperenclave.vmm.gu_enclave import SHARED_MEM_FETCH
from hyperenclave.vmm.sgx import ExInfo, exinfo_offset
from tests.support.asm import assemble
from tests.unit.test_enclave_execution import MARSHAL, PF_HANDLER, SHARED, run
from tests.unit.test_enclave_lifecycle import BASE, SECS_EPC, key, monitor_image  # noqa: F401
from tests.unit.test_monitor_launch import EPC

HC_ADD, HC_REMOVE, HC_INVALID_START, HC_INVALID_END = 0x101, 0x102, 0x103, 0x104
RANGES = 0x505000                      # descriptors {SECS, start, end}, 32 bytes apart
EINVAL, EBUSY = (-errno.EINVAL) & 0xFFFF_FFFF, (-errno.EBUSY) & 0xFFFF_FFFF
SSA0_EXINFO = EPC + 0x3000 + exinfo_offset(1)          # the TCS's SSA frame 0 (see enclave_pages)
# A host #PF handler that reports (vector marker, CR2, error code) and returns to the AEP, as
# a kernel does once it has faulted the page in.
PF_RETURN = """mov $0xee, %eax ; out %eax, $0xe9 ; mov %cr2, %rax ; out %eax, $0xe9
               pop %rax ; out %eax, $0xe9 ; iretq"""


def descriptors(*ranges: tuple[int, int, int]):
    def before(mem) -> None:
        mem.write(SHARED, struct.pack("<Q", 35))
        for i, (secs, start, end) in enumerate(ranges):
            mem.write(RANGES + 32 * i, struct.pack("<QQQ", secs, start, end))
        mem.write(PF_HANDLER, assemble(PF_RETURN, PF_HANDLER))
    return before


def desc(i: int) -> int:
    return RANGES + 32 * i


BUFFER = (SECS_EPC, SHARED, SHARED + 0x1000)


def test_after_remove_the_enclave_access_is_a_pf_aex_and_misses_the_app_page(monitor_image, key) -> None:  # noqa: F811
    calls = ((HC_ADD, desc(0), 0), (HC_REMOVE, desc(0), 0))
    out, setup, mon = run(monitor_image, key, middle=MARSHAL, after_init=calls,
                          before=descriptors(BUFFER))
    assert setup[-2:] == [0, 0], mon.log_lines
    assert out[:3] == [0xEE, SHARED, 0b101], "the host sees #PF(P|U) at the buffer, at the AEP"
    assert mon.runner.aex_count >= 1
    assert run.memory.read(SHARED + 8, 8) == bytes(8), "nothing reached the app's page"
    assert ExInfo.unpack(run.memory.read(SSA0_EXINFO, ExInfo.SIZE)).errcd == 0, \
        "a removed range is no shared-memory miss"


def test_invalidated_pages_are_fetched_again_on_eresume(monitor_image, key) -> None:  # noqa: F811
    calls = ((HC_ADD, desc(0), 0), (HC_INVALID_START, desc(0), 0), (HC_INVALID_END, SECS_EPC, 0))
    out, setup, mon = run(monitor_image, key, middle=MARSHAL, after_init=calls,
                          before=descriptors(BUFFER))
    assert setup[-3:] == [0, 0, 0], mon.log_lines
    assert out[:3] == [0xEE, SHARED, 0b100], "a not-present user read the host can fix"
    assert out[3:5] == [4, 0x40 + 0x1111], "ERESUME continued the enclave, which EEXITed"
    assert struct.unpack("<Q", run.memory.read(SHARED + 8, 8))[0] == 42
    assert any("mapped again (SHARED_MEM_FETCH)" in line for line in mon.log_lines)
    assert run.memory.read(SSA0_EXINFO, ExInfo.SIZE) == bytes(ExInfo.SIZE), "ERESUME cleared it"


def test_a_miss_while_invalid_is_recorded_as_shared_mem_fetch(monitor_image, key) -> None:  # noqa: F811
    calls = ((HC_ADD, desc(0), 0), (HC_INVALID_START, desc(0), 0))
    before = descriptors(BUFFER)

    def no_return(mem) -> None:          # the host handler stops at the fault
        before(mem)
        mem.write(PF_HANDLER, assemble("mov $0xee, %eax ; out %eax, $0xe9 ; "
                                       "mov $0x2000, %ax ; out %ax, $0xea", PF_HANDLER))
    out, setup, mon = run(monitor_image, key, middle=MARSHAL, after_init=calls, before=no_return)
    assert out[:1] == [0xEE]
    exinfo = ExInfo.unpack(run.memory.read(SSA0_EXINFO, ExInfo.SIZE))
    assert exinfo.maddr == SHARED and exinfo.errcd == SHARED_MEM_FETCH | 0b100


@pytest.mark.parametrize("calls, ranges, expected", [
    # remove a range that was never shared, one that is more than a shared one, unaligned
    (((HC_REMOVE, desc(0), 0),), [BUFFER], [EINVAL]),
    (((HC_ADD, desc(0), 0), (HC_REMOVE, desc(1), 0)),
     [BUFFER, (SECS_EPC, SHARED, SHARED + 0x2000)], [0, EINVAL]),
    (((HC_ADD, desc(0), 0), (HC_REMOVE, desc(1), 0)),
     [BUFFER, (SECS_EPC, SHARED + 8, SHARED + 0x1000)], [0, EINVAL]),
    # invalidate: unknown enclave, outside every shared range, inside ELRANGE
    (((HC_ADD, desc(0), 0), (HC_INVALID_START, desc(1), 0)),
     [BUFFER, (SECS_EPC + 0x1000, SHARED, SHARED + 0x1000)], [0, EINVAL]),
    (((HC_ADD, desc(0), 0), (HC_INVALID_START, desc(1), 0)),
     [BUFFER, (SECS_EPC, SHARED + 0x1000, SHARED + 0x2000)], [0, EINVAL]),
    (((HC_INVALID_START, desc(0), 0),), [(SECS_EPC, BASE, BASE + 0x1000)], [EINVAL]),
    # an end without a start; an end for no enclave; a remove during an invalidation
    (((HC_ADD, desc(0), 0), (HC_INVALID_END, SECS_EPC, 0)), [BUFFER], [0, EINVAL]),
    (((HC_INVALID_END, EPC, 0),), [], [EINVAL]),
    (((HC_ADD, desc(0), 0), (HC_INVALID_START, desc(0), 0), (HC_REMOVE, desc(0), 0),
      (HC_INVALID_END, SECS_EPC, 0), (HC_REMOVE, desc(0), 0)), [BUFFER], [0, 0, EBUSY, 0, 0]),
])
def test_bad_arguments_are_errno_not_a_monitor_crash(monitor_image, key, calls, ranges,  # noqa: F811
                                                     expected) -> None:
    _, setup, mon = run(monitor_image, key, after_init=calls, before=descriptors(*ranges))
    assert setup[-len(expected):] == expected, mon.log_lines
    assert mon.enabled
