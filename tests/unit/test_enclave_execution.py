"""Enclave execution the GU-Enclave way, from bare-metal x86: an app at CPL 3 enters with the
real ENCLU instruction (and with the EENTER hypercall), the enclave runs on the monitor's page
tables, an exception inside is an AEX delivered to the host at the AEP, ERESUME continues."""

from __future__ import annotations

import struct

import pytest

from hyperenclave.vmm.sgx import PageFlags, PageType, Tcs
from tests.support.asm import assemble
from tests.support.baremetal import KERNEL, PML4, UCS, UDS, USER, USTACK
from tests.unit.test_enclave_lifecycle import (BASE, HC_ADD, HC_CREATE, HC_INIT, PAGEINFOS,
                                               SECS_EPC, SIGSTRUCT, hypercalls, monitor_image,
                                               mrenclave, place, secs, signed)
from tests.unit.test_monitor_launch import EPC, machine
from tests.unit.test_enclave_lifecycle import key  # noqa: F401  (fixture)

R, W, X = PageFlags.R, PageFlags.W, PageFlags.X
BP_HANDLER, PF_HANDLER, GP_HANDLER = 0x112000, 0x113000, 0x114000
ENCLAVE_CODE = """
    mov %rdi, %rdx
    add $0x1111, %rdx
    {middle}
    movabs $0x10002000, %r8
    mov (%r8), %r8
    mov %rcx, %rbx             # EEXIT to the return address EENTER gave in RCX
    mov $4, %eax
    enclu
"""


def enclave_pages(middle: str) -> list[tuple[int, PageType, int, bytes]]:
    code = assemble(ENCLAVE_CODE.format(middle=middle), BASE + 0x1000).ljust(4096, b"\xcc")
    return [
        (0x0000, PageType.PT_TCS, 0, Tcs(ossa=0x3000, nssa=2, oentry=0x1000).pack()),
        (0x1000, PageType.PT_REG, R | X, code),
        (0x2000, PageType.PT_REG, R | W, b"SECRET42".ljust(4096, b"\0")),
        (0x3000, PageType.PT_REG, R | W, bytes(4096)),
        (0x4000, PageType.PT_REG, R | W, bytes(4096)),
    ]


def app(enter: str) -> str:
    """CPL-3 app code (IOPL 3, so it may report on the debug port)."""
    return f"""
        movabs ${BASE:#x}, %rbx
        lea aep(%rip), %rcx
        mov $0x40, %edi
        {enter}
        out %eax, $0xe9
        mov %rdx, %rax ; out %eax, $0xe9
        mov %r8, %rax ; out %eax, $0xe9
        mov %r8, %rax ; shr $32, %rax ; out %eax, $0xe9
        mov $0x2000, %ax ; out %ax, $0xea
    1:  jmp 1b
    aep:
        mov $3, %eax
        enclu
    """


BP_REPORT = "mov $0xb3, %eax ; out %eax, $0xe9"


def run(monitor_image: bytes, key, middle: str = "", enter: str = "mov $2, %eax ; enclu",
        after_init: tuple[tuple[int, int, int], ...] = (), before=lambda mem: None,
        prologue: str = "", bp_report: str = BP_REPORT):
    pages = enclave_pages(middle)
    calls = [(HC_CREATE, PAGEINFOS, SECS_EPC)] + [
        (HC_ADD, PAGEINFOS + 32 * i, (EPC + offset) | 1) for i, (offset, *_) in enumerate(pages, 1)]
    calls.append((HC_INIT, SECS_EPC, SIGSTRUCT))
    calls += after_init
    body = prologue + "\n" + hypercalls(calls)
    # then drop to the app at CPL 3 with IOPL 3
    body += f"pushq ${UDS} ; pushq ${USTACK - 0x80} ; pushq $0x3202 ; pushq ${UCS} ; pushq ${USER} ; iretq"
    bm, mon = machine(monitor_image, body)
    mem = bm.memory
    place(mem, secs(), pages)
    mem.write(SIGSTRUCT, signed(key, mrenclave(pages)))
    # the app's own mapping of ELRANGE, as the driver makes it: 2 MiB at BASE -> the EPC
    mem.write_u64(PML4 + 0x2000 + 8 * (BASE >> 21), EPC | 0x87)
    bm.load(USER, app(enter))
    bm.load(BP_HANDLER, f"{bp_report} ; iretq")
    bm.set_gate(3, BP_HANDLER)
    bm.load(PF_HANDLER, """mov $0xee, %eax ; out %eax, $0xe9 ; mov %cr2, %rax ; out %eax, $0xe9
                           mov (%rsp), %rax ; out %eax, $0xe9 ; mov $0x2000, %ax ; out %ax, $0xea
                        1: jmp 1b""")
    bm.set_gate(14, PF_HANDLER)
    bm.load(GP_HANDLER, """mov $0xd0, %eax ; out %eax, $0xe9 ; mov 8(%rsp), %rax ; out %eax, $0xe9
                           mov $0x2000, %ax ; out %ax, $0xea
                        1: jmp 1b""")
    bm.set_gate(13, GP_HANDLER)
    before(mem)
    bm.run(KERNEL, slices=200)
    n = len(calls) + 1
    run.memory = mem
    return bm.recorder.values[n:], bm.recorder.values[:n], mon


def test_enclu_eenter_runs_the_enclave_and_eexit_returns(monitor_image, key) -> None:  # noqa: F811
    out, setup, mon = run(monitor_image, key)
    assert setup == [0] * len(setup), mon.log_lines
    eax, rdx, r8_lo, r8_hi = out[:4]
    assert eax == 4, "EEXIT leaves RAX as the leaf number"
    assert rdx == 0x40 + 0x1111, "the enclave computed on the app's argument"
    assert struct.pack("<II", r8_lo, r8_hi) == b"SECRET42", "enclave code reads its own data"
    assert not mon.runner.inside and not mon.runner.busy_tcs


def test_the_eenter_hypercall_works_like_enclu(monitor_image, key) -> None:  # noqa: F811
    out, _, mon = run(monitor_image, key, enter="mov $0x80000000, %eax ; vmcall")
    assert out[1] == 0x40 + 0x1111


def test_an_exception_inside_is_an_aex_and_eresume_continues(monitor_image, key) -> None:  # noqa: F811
    out, _, mon = run(monitor_image, key, middle="int3")
    assert out[0] == 0xB3, "the host's #BP handler ran (at the AEP)"
    assert out[2] == 0x40 + 0x1111, "ERESUME restored the registers the AEX saved"
    assert mon.runner.aex_count == 1
    assert any("AEX from enclave" in line for line in mon.log_lines)


def test_aex_saves_the_xmm_registers_in_the_ssa_and_scrubs_them(monitor_image, key) -> None:  # noqa: F811
    """XFRM x87|SSE: the host at the AEP sees the XMM registers' initial state, ERESUME brings
    the enclave's back (its secret in XMM0 survives the exception, unseen)."""
    out, _, mon = run(monitor_image, key,
                      prologue="mov %cr4, %rax ; or $0x600, %rax ; mov %rax, %cr4",
                      middle="movabs $0x10002000, %r9 ; movq (%r9), %xmm0 ; int3 ; movq %xmm0, %rdx",
                      bp_report=f"{BP_REPORT} ; movq %xmm0, %rax ; out %eax, $0xe9 ; "
                                "shr $32, %rax ; out %eax, $0xe9 ; stmxcsr -8(%rsp) ; "
                                "mov -8(%rsp), %eax ; out %eax, $0xe9")
    assert out[:4] == [0xB3, 0, 0, 0x1F80], "the host sees scrubbed XMM0 and MXCSR's init value"
    assert struct.pack("<I", out[5]) == b"SECR", "ERESUME restored the enclave's XMM0"
    assert mon.runner.aex_count == 1


def test_aex_saves_the_x87_state_in_the_ssa_and_scrubs_it(monitor_image, key) -> None:  # noqa: F811
    """The x87 part of XFRM: at the AEP the host finds ST0 empty with TOP 0 (FXAM's C3|C0) and
    no address of the enclave's last x87 instruction (FIP 0); ERESUME brings back the stack,
    and the enclave's 64-bit integer goes through FILD/FISTP unchanged."""
    out, _, mon = run(monitor_image, key,
                      middle="fninit ; movabs $0x10002000, %r9 ; fildq (%r9) ; int3 ; "
                             "fistpq 8(%r9) ; mov 8(%r9), %rdx",
                      bp_report=f"{BP_REPORT} ; sub $64, %rsp ; fnstenv (%rsp) ; "
                                "mov 12(%rsp), %eax ; out %eax, $0xe9 ; add $64, %rsp ; "
                                "fxam ; fnstsw %ax ; out %eax, $0xe9")
    fxam_empty = 1 << 14 | 1 << 8                   # C3 and C0: ST0 is empty; TOP (13:11) is 0
    assert out[:3] == [0xB3, 0, fxam_empty], "the host sees the x87 initial state, FIP 0"
    assert struct.pack("<I", out[4]) == b"SECR", "ERESUME restored the enclave's ST0"
    assert mon.runner.aex_count == 1


def test_the_host_cannot_read_the_enclave_through_its_own_mapping(monitor_image, key) -> None:  # noqa: F811
    out, _, mon = run(monitor_image, key)
    hpa, _ = mon._cpus[0].translate(BASE + 0x2000)
    assert hpa == mon.layout.zero_page + (EPC + 0x2000) % (2 << 20)


SHARED, SHARED_RANGE = 0x600000, 0x505000
MARSHAL = "movabs $0x600000, %r9 ; mov (%r9), %r10 ; add $7, %r10 ; mov %r10, 8(%r9)"


def test_a_shared_marshalling_buffer_carries_data_both_ways(monitor_image, key) -> None:  # noqa: F811
    def before(mem) -> None:
        mem.write(SHARED_RANGE, struct.pack("<QQQ", SECS_EPC, SHARED, SHARED + 0x1000))
        mem.write(SHARED, struct.pack("<Q", 35))
    out, setup, mon = run(monitor_image, key, middle=MARSHAL,
                          after_init=((0x101, SHARED_RANGE, 0),), before=before)
    assert setup[-1] == 0, mon.log_lines
    assert struct.unpack("<Q", run.memory.read(SHARED + 8, 8))[0] == 42
    assert out[1] == 0x40 + 0x1111


def test_without_the_shared_buffer_the_enclave_cannot_touch_app_memory(monitor_image, key) -> None:  # noqa: F811
    out, _, mon = run(monitor_image, key, middle=MARSHAL, before=lambda mem: mem.write(SHARED, bytes(16)))
    assert mon.runner.aex_count == 1, "the access outside the enclave's EPT is an AEX"
    assert out[:3] == [0xEE, SHARED, 0b101], "the host sees #PF(P|U) at the page, at the AEP"
    assert run.memory.read(SHARED + 8, 8) == bytes(8)


@pytest.mark.parametrize("start, end", [(EPC, EPC + 0x1000), (BASE, BASE + 0x1000),
                                        (SHARED + 1, SHARED + 0x1000), (SHARED, SHARED + 0x10000)])
def test_bad_shared_ranges_are_refused(monitor_image, key, start: int, end: int) -> None:  # noqa: F811
    out, setup, mon = run(monitor_image, key, after_init=((0x101, SHARED_RANGE, 0),),
                          before=lambda mem: mem.write(SHARED_RANGE, struct.pack("<QQQ", SECS_EPC, start, end)))
    assert setup[-1] in ((-14) & 0xFFFF_FFFF, (-22) & 0xFFFF_FFFF), mon.log_lines


def test_eresume_with_cssa_0_is_gp_in_the_app(monitor_image, key) -> None:  # noqa: F811
    out, _, mon = run(monitor_image, key, enter="mov $3, %eax ; enclu")
    assert out[0] == 0xD0 and USER <= out[1] < USER + 0x100, "#GP at the app's ENCLU"
    assert not mon.runner.inside
    assert any("CSSA 0" in line for line in mon.log_lines)


def test_eenter_from_inside_an_enclave_is_an_aex_with_gp(monitor_image, key) -> None:  # noqa: F811
    out, _, mon = run(monitor_image, key, middle="mov $2, %eax ; enclu")
    assert mon.runner.aex_count == 1
    assert out[0] == 0xD0, "the host gets #GP at the AEP"
