"""EGETKEY and EREPORT: the key derivation on its own, then the leaves executed by enclave code
under the monitor on bare-metal x86 (the real ENCLU instruction and HyperEnclave's hypercalls)."""

from __future__ import annotations

import errno
import struct

import pytest

from hyperenclave.vmm.keys import (CPU_SVN, DD_REPORT_KEY, DD_SEAL_KEY, KeyName, KeyPolicy,
                                   PlatformKeys, aes_cmac, dd_report_key, dd_seal_key)
from hyperenclave.vmm.sgx import (AttributeFlags, Attributes, KeyRequest, Report, Secs,
                                  SgxError, SgxErrorCode, SgxFault, TargetInfo, Tcs)
from tests.support.asm import assemble
from tests.support.baremetal import USER
from tests.support.key_enclave import (REPORT_DATA, SEAL_MRENCLAVE, SEAL_MRSIGNER,
                                       SELF_REPORT, SOURCE, fingerprint)
from tests.unit import test_enclave_execution as execution
from tests.unit.test_enclave_execution import R, W, X, run
from tests.unit.test_enclave_lifecycle import BASE, SECS_EPC, key, monitor_image  # noqa: F401
from tests.unit.test_monitor_launch import EPC

DATA = BASE + 0x2000                       # the enclave's R|W data page in these tests
ROOT = bytes(range(32))


def identity(mr_enclave: bytes = b"E" * 32, mr_signer: bytes = b"S" * 32, isv_svn: int = 3,
             flags: int = AttributeFlags.INIT | AttributeFlags.MODE64BIT) -> Secs:
    return Secs(size=0x10000, base=BASE, ssa_frame_size=1, ms_buf_size=0x1000,
                attributes=Attributes(flags, 3), mr_enclave=mr_enclave, mr_signer=mr_signer,
                isv_prod_id=7, isv_svn=isv_svn)


def keeping_rcx(code: str) -> str:
    """An enclave snippet for test_enclave_execution's enclave, which EEXITs to RCX after it."""
    return f"mov %rcx, %r13\n{code}\nmov %r13, %rcx"


def seal(policy: int, **kw) -> KeyRequest:
    return KeyRequest(key_name=KeyName.SEAL_KEY, key_policy=policy, **kw)


# --------------------------------------------------------------------- derivation, no CPU


def test_aes_cmac_is_rfc_4493() -> None:
    k = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    assert aes_cmac(k, b"").hex() == "bb1d6929e95937287fa37d129b756746"
    msg = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert aes_cmac(k, msg).hex() == "070a16b46b4d4144f79bdd9dd04a287c"


def test_derivation_data_has_the_sdk_layouts() -> None:
    """dd_seal_key_t / dd_report_key_t offsets from the reference (gcc on deriv.h)."""
    req = seal(KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER, isv_svn=0x0102, cpu_svn=b"C" * 16,
               attribute_mask=Attributes(0xFF, 0xFF), key_id=b"K" * 32)
    dd = dd_seal_key(identity(), req, b"O" * 16)
    assert len(dd) == DD_SEAL_KEY.size == 176
    assert dd[0:2] == b"\x04\x00" and dd[8:16] == struct.pack("<Q", 0x5)   # (mask | INIT | DEBUG) & SECS flags
    assert dd[16:24] == struct.pack("<Q", 3), "xfrm = mask & SECS.XFRM"
    assert dd[24:40] == Attributes(0xFF, 0xFF).pack() and dd[40:56] == b"O" * 16
    assert dd[56:72] == b"C" * 16 and dd[72:76] == struct.pack("<HH", 0x0102, 7)
    assert dd[76:108] == b"E" * 32 and dd[108:140] == b"S" * 32 and dd[140:172] == b"K" * 32
    rd = dd_report_key(Attributes(5, 3), b"O" * 16, b"E" * 32, b"C" * 16, b"K" * 32)
    assert len(rd) == DD_REPORT_KEY.size == 120
    assert rd[0:2] == b"\x03\x00" and rd[8:24] == Attributes(5, 3).pack()
    assert rd[24:40] == b"O" * 16 and rd[40:72] == b"E" * 32 and rd[72:88] == b"C" * 16
    assert rd[88:120] == b"K" * 32


def test_keys_are_cmac_of_the_derivation_data_under_a_base_key_from_the_root() -> None:
    keys = PlatformKeys(ROOT)
    secs = identity()
    req = seal(KeyPolicy.MRSIGNER)
    base = aes_cmac(ROOT[:16], b"HyperEnclave base key" + struct.pack("<H", KeyName.SEAL_KEY))
    assert keys.egetkey(secs, req) == aes_cmac(base, dd_seal_key(secs, req, ROOT[16:]))
    assert PlatformKeys(bytes(32)).egetkey(secs, req) != keys.egetkey(secs, req), \
        "another platform (root secret) gives other keys"


def test_the_key_policy_decides_which_identity_the_seal_key_binds() -> None:
    keys = PlatformKeys(ROOT)
    a, same_signer, other_signer = identity(), identity(mr_enclave=b"F" * 32), identity(mr_signer=b"T" * 32)
    by_signer, by_enclave = seal(KeyPolicy.MRSIGNER), seal(KeyPolicy.MRENCLAVE)
    assert keys.egetkey(a, by_signer) == keys.egetkey(same_signer, by_signer)
    assert keys.egetkey(a, by_signer) != keys.egetkey(other_signer, by_signer)
    assert keys.egetkey(a, by_enclave) != keys.egetkey(same_signer, by_enclave)
    assert keys.egetkey(a, by_enclave) == keys.egetkey(other_signer, by_enclave)
    assert keys.egetkey(a, by_enclave) != keys.egetkey(a, by_signer)
    assert keys.egetkey(a, seal(3)) not in (keys.egetkey(a, by_enclave), keys.egetkey(a, by_signer))
    assert keys.egetkey(a, seal(2, key_id=b"x" * 32)) != keys.egetkey(a, by_signer)
    assert keys.egetkey(a, seal(2, isv_svn=2)) != keys.egetkey(a, by_signer), \
        "an older ISVSVN is another key (and may be asked for)"
    debug = identity(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.DEBUG)
    assert keys.egetkey(debug, by_signer) != keys.egetkey(a, by_signer), "DEBUG is always bound"


def test_newer_svns_and_keys_not_offered_are_sgx_errors() -> None:
    keys = PlatformKeys(ROOT)
    cases = [(seal(2, isv_svn=4), SgxErrorCode.SGX_INVALID_ISVSVN),
             (seal(2, cpu_svn=bytes([3]) + bytes(15)), SgxErrorCode.SGX_INVALID_CPUSVN),
             (KeyRequest(key_name=9), SgxErrorCode.SGX_INVALID_KEYNAME),
             (KeyRequest(key_name=KeyName.PROVISION_KEY), SgxErrorCode.SGX_INVALID_ATTRIBUTE),
             (KeyRequest(key_name=KeyName.EINITTOKEN_KEY), SgxErrorCode.SGX_INVALID_ATTRIBUTE)]
    for request, code in cases:
        with pytest.raises(SgxError) as err:
            keys.egetkey(identity(), request)
        assert err.value.code == code, request
    keys.egetkey(identity(), seal(2, isv_svn=3, cpu_svn=CPU_SVN))   # equal is fine
    with pytest.raises(SgxFault, match="KEYPOLICY"):
        keys.egetkey(identity(), seal(1 << 2))                       # KSS bit: #GP


def test_a_report_verifies_only_for_its_target() -> None:
    keys = PlatformKeys(ROOT)
    me, other = identity(), identity(mr_enclave=b"T" * 32)
    report = keys.ereport(me, TargetInfo(other.mr_enclave, other.attributes), REPORT_DATA)
    assert report.body.mr_enclave == me.mr_enclave and report.body.report_data == REPORT_DATA
    assert report.key_id == keys.report_key_id and report.body.cpu_svn == CPU_SVN
    assert keys.verify_report(other, report) and not keys.verify_report(me, report)
    assert not PlatformKeys(bytes(32), report_key_id=keys.report_key_id).verify_report(other, report)


def test_a_root_secret_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PlatformKeys(b"short")


# --------------------------------------------------------------------- leaves on the CPU


def run_program(monitor_image: bytes, key, op: int, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    """The SDK-style enclave of tests/support/key_enclave.py at BASE+0x1000, data right after,
    in test_enclave_execution's machine instead of its enclave."""
    code = assemble(SOURCE, BASE + 0x1000).ljust(4096, b"\xcc")
    pages = [(0x0000, execution.PageType.PT_TCS, 0, Tcs(ossa=0x3000, nssa=2, oentry=0x1000).pack()),
             (0x1000, execution.PageType.PT_REG, R | X, code),
             (0x2000, execution.PageType.PT_REG, R | W, bytes(4096)),
             (0x3000, execution.PageType.PT_REG, R | W, bytes(4096)),
             (0x4000, execution.PageType.PT_REG, R | W, bytes(4096))]
    monkeypatch.setattr(execution, "enclave_pages", lambda middle: pages)
    return run(monitor_image, key, enter=f"mov ${op}, %edi ; mov $2, %eax ; enclu")


def test_the_enclave_verifies_its_own_report_with_its_report_key(monitor_image, key, monkeypatch) -> None:  # noqa: F811
    out, setup, mon = run_program(monitor_image, key, SELF_REPORT, monkeypatch)
    assert setup == [0] * len(setup), mon.log_lines
    assert out[:2] == [4, 0b1111], "MAC matched with EGETKEY(REPORT) and VerifyReport; " \
        "a flipped bit did not"
    report = Report.unpack(run.memory.read(EPC + 0x2400, Report.SIZE))
    enclave = mon.enclaves.enclaves[SECS_EPC]
    assert report.body.report_data[1:] == REPORT_DATA[1:]
    assert report.body.mr_enclave == enclave.secs.mr_enclave
    assert report.body.isv_prod_id == 7 and report.body.isv_svn == 3
    assert run.memory.read(EPC + 0x2640, 0x1C0) == bytes(0x1C0), "the enclave scrubbed its key"


@pytest.mark.parametrize("op, policy", [(SEAL_MRSIGNER, KeyPolicy.MRSIGNER),
                                        (SEAL_MRENCLAVE, KeyPolicy.MRENCLAVE)])
def test_egetkey_gives_the_seal_key_of_the_policy(monitor_image, key, op, policy, monkeypatch) -> None:  # noqa: F811
    out, _, mon = run_program(monitor_image, key, op, monkeypatch)
    secs = mon.enclaves.enclaves[SECS_EPC].secs
    assert out[1] == fingerprint(mon.key_leaves.keys.egetkey(secs, seal(policy))) & 0xFFFF_FFFF


def test_a_seal_key_for_a_newer_isvsvn_is_sgx_invalid_isvsvn(monitor_image, key) -> None:  # noqa: F811
    """The enclave has ISVSVN 3 here, so ISVSVN 1 is older and fine; ask for 4 instead."""
    middle = f"""movabs ${DATA + 0x200:#x}, %rbx ; movw $4, (%rbx) ; movw $2, 2(%rbx) ; movw $4, 4(%rbx)
                 movabs ${DATA + 0x400:#x}, %rcx ; mov $1, %eax ; enclu
                 mov %rax, %rdx ; setz %r9b ; movzbq %r9b, %r9 ; movabs ${DATA:#x}, %r8 ; mov %r9, (%r8)"""
    out, _, _ = run(monitor_image, key, middle=keeping_rcx(middle))
    assert out[1] == SgxErrorCode.SGX_INVALID_ISVSVN
    assert out[2] == 1, "ZF set on error"


def test_egetkey_by_hypercall_is_the_same_leaf(monitor_image, key) -> None:  # noqa: F811
    middle = f"""movabs ${DATA + 0x200:#x}, %rbx ; movw $4, (%rbx) ; movw $2, 2(%rbx)
                 movabs ${DATA + 0x400:#x}, %rcx ; mov $0x8000000b, %eax ; vmcall
                 mov %rax, %rdx ; movabs ${DATA + 0x400:#x}, %r8 ; mov (%r8), %r9
                 movabs ${DATA:#x}, %r8 ; mov %r9, (%r8)"""
    out, _, mon = run(monitor_image, key, middle=keeping_rcx(middle))
    secs = mon.enclaves.enclaves[SECS_EPC].secs
    assert out[1] == 0
    expected = mon.key_leaves.keys.egetkey(secs, seal(KeyPolicy.MRSIGNER))
    assert struct.pack("<II", out[2], out[3]) == expected[:8]


def test_ereport_for_another_enclave_is_verifiable_only_by_that_enclave(monitor_image, key) -> None:  # noqa: F811
    other = identity(mr_enclave=b"\x77" * 32)
    middle = f"""movabs ${DATA + 0x200:#x}, %rbx ; movabs $0x7777777777777777, %rax
                 mov %rax, (%rbx) ; mov %rax, 8(%rbx) ; mov %rax, 16(%rbx) ; mov %rax, 24(%rbx)
                 movq ${other.attributes.flags}, 32(%rbx) ; movq $3, 40(%rbx)
                 movabs ${DATA + 0x380:#x}, %rcx ; movabs ${DATA + 0x400:#x}, %rdx
                 xor %eax, %eax ; enclu"""
    out, _, mon = run(monitor_image, key, middle=keeping_rcx(middle))
    assert out[0] == 4 and not mon.runner.aex_count, mon.log_lines
    report = Report.unpack(run.memory.read(EPC + 0x2400, Report.SIZE))
    keys = mon.key_leaves.keys
    assert keys.verify_report(other, report)
    assert not keys.verify_report(mon.enclaves.enclaves[SECS_EPC].secs, report)


def test_verify_report_hypercall_accepts_a_self_report_and_refuses_a_changed_one(monitor_image, key) -> None:  # noqa: F811
    middle = f"""movabs ${DATA:#x}, %r14
        lea 0x200(%r14), %rbx ; lea 0x380(%r14), %rcx ; lea 0x400(%r14), %rdx ; xor %eax, %eax ; enclu
        movdqu 0x440(%r14), %xmm0 ; movdqu %xmm0, 0x200(%r14)
        movdqu 0x450(%r14), %xmm0 ; movdqu %xmm0, 0x210(%r14)
        movdqu 0x430(%r14), %xmm0 ; movdqu %xmm0, 0x220(%r14)
        lea 0x200(%r14), %rbx ; lea 0x380(%r14), %rcx ; lea 0x400(%r14), %rdx ; xor %eax, %eax ; enclu
        lea 0x400(%r14), %rbx ; mov $0x8000000a, %eax ; vmcall ; mov %rax, %rdx
        xorb $1, 0x540(%r14)
        lea 0x400(%r14), %rbx ; mov $0x8000000a, %eax ; vmcall ; shl $8, %rax ; or %rax, %rdx"""
    out, _, mon = run(monitor_image, key, middle=keeping_rcx(middle))
    assert out[1] == SgxErrorCode.SGX_MAC_COMPARE_FAIL << 8, mon.log_lines


GP_AT_AEP, PF_AT_AEP = 0xD0, 0xEE


@pytest.mark.parametrize("what, middle, vector", [
    ("KEYREQUEST not 512-byte aligned",
     f"movabs ${DATA + 0x208:#x}, %rbx ; movabs ${DATA + 0x400:#x}, %rcx ; mov $1, %eax ; enclu", GP_AT_AEP),
    ("key output not 16-byte aligned",
     f"movabs ${DATA + 0x200:#x}, %rbx ; movabs ${DATA + 0x408:#x}, %rcx ; mov $1, %eax ; enclu", GP_AT_AEP),
    ("KEYREQUEST outside ELRANGE (the app's memory)",
     f"mov ${USER:#x}, %rbx ; movabs ${DATA + 0x400:#x}, %rcx ; mov $1, %eax ; enclu", GP_AT_AEP),
    ("REPORT not 512-byte aligned",
     f"movabs ${DATA:#x}, %rbx ; movabs ${DATA + 0x380:#x}, %rcx ; movabs ${DATA + 0x500:#x}, %rdx ; xor %eax, %eax ; enclu", GP_AT_AEP),
    ("REPORTDATA not 128-byte aligned",
     f"movabs ${DATA:#x}, %rbx ; movabs ${DATA + 0x3c0:#x}, %rcx ; movabs ${DATA + 0x400:#x}, %rdx ; xor %eax, %eax ; enclu", GP_AT_AEP),
    ("REPORT beyond ELRANGE's end",
     f"movabs ${DATA:#x}, %rbx ; movabs ${DATA:#x}, %rcx ; movabs ${BASE + 0x10000:#x}, %rdx ; xor %eax, %eax ; enclu", GP_AT_AEP),
    ("KEYREQUEST on the TCS page (not mapped for the enclave)",
     f"movabs ${BASE:#x}, %rbx ; movabs ${DATA + 0x400:#x}, %rcx ; mov $1, %eax ; enclu", PF_AT_AEP),
    ("KEYREQUEST in ELRANGE where no page was added",
     f"movabs ${BASE + 0x8000:#x}, %rbx ; movabs ${DATA + 0x400:#x}, %rcx ; mov $1, %eax ; enclu", PF_AT_AEP),
    ("key written to the read-only code page",
     f"movabs ${DATA + 0x200:#x}, %rbx ; movabs ${BASE + 0x1800:#x}, %rcx ; mov $1, %eax ; enclu", PF_AT_AEP),
    ("KEYREQUEST with reserved bytes set",
     f"movabs ${DATA + 0x200:#x}, %rbx ; movb $1, 0x100(%rbx) ; movabs ${DATA + 0x400:#x}, %rcx ; mov $1, %eax ; enclu", GP_AT_AEP),
])
def test_bad_operands_fault_inside_the_enclave_as_an_aex(monitor_image, key, what, middle, vector) -> None:  # noqa: F811
    out, _, mon = run(monitor_image, key, middle=middle)
    assert out[0] == vector, (what, mon.log_lines[-3:])
    assert mon.runner.aex_count == 1
    assert run.memory.read(EPC + 0x2400, 16) == bytes(16), "nothing was written"


def test_the_app_cannot_use_the_key_hypercalls_outside_an_enclave(monitor_image, key) -> None:  # noqa: F811
    out, _, mon = run(monitor_image, key, enter=f"movabs ${DATA + 0x200:#x}, %rbx ; mov $0x8000000b, %eax ; vmcall")
    assert out[0] == 6, "#UD: EGetKey is not available outside an enclave"


@pytest.mark.parametrize("report_at, rax", [
    (0x600000, SgxErrorCode.SGX_MAC_COMPARE_FAIL),      # a REPORT no EREPORT made
    (EPC + 0x2400, -errno.EFAULT & (1 << 64) - 1),      # a pointer into the EPC
])
def test_the_quote_hypercall_takes_only_reports_made_for_the_quoting_target(
        monitor_image, key, report_at, rax) -> None:  # noqa: F811
    quote = f"""movabs ${report_at:#x}, %rdi ; movabs $0x601000, %rsi ; mov $0x1000, %edx
                movabs $0x602000, %rcx ; mov $0x8000000d, %eax ; vmcall
                mov %rax, %rdx ; shr $32, %rdx ; out %eax, $0xe9 ; mov %edx, %eax"""
    out, _, mon = run(monitor_image, key, enter=quote)
    assert out[0] | out[1] << 32 == rax, mon.log_lines
    assert run.memory.read(0x601000, 16) == bytes(16), "nothing was written"

