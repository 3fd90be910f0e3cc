"""Enclave lifecycle hypercalls under the launched monitor, issued by bare-metal x86 code.

Kernel-mode code VMCALLs ECREATE/EADD/EINIT/destroy with SGX's PAGEINFO/SECINFO/SECS/SIGSTRUCT
placed in its memory; each RAX goes out on a debug port. What comes back is what Linux's
`__encls` would give the driver: 0, an SGX error code, or ENCLS_FAULT_FLAG | vector.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from hyperenclave.vmm import image as img
from hyperenclave.vmm.measure import EnclaveMeasurement
from hyperenclave.vmm.sgx import (ENCLS_FAULT_FLAG, AttributeFlags, Attributes, PageFlags,
                                  PageType, SecInfo, Secs, SgxErrorCode, SigStruct, Tcs)
from hyperenclave.vmm.sigstruct import generate_signing_key, sign_sigstruct
from tests.support.baremetal import KERNEL
from tests.unit.test_monitor_launch import EPC, machine

GP_FAULT, PF_FAULT = ENCLS_FAULT_FLAG | 13, ENCLS_FAULT_FLAG | 14
BASE, SIZE = 0x1000_0000, 0x10000                  # ELRANGE: 16 pages
SECS_EPC = EPC + 0xF000
SECS_SRC, PAGEINFOS, SECINFOS, SOURCES, SIGSTRUCT = 0x500000, 0x502000, 0x504000, 0x510000, 0x530000
R, W, X = PageFlags.R, PageFlags.W, PageFlags.X
PAGES = [  # (offset in ELRANGE, type, flags, content)
    (0x0000, PageType.PT_TCS, 0, Tcs(ossa=0x3000, nssa=1, oentry=0x1000).pack()),
    (0x1000, PageType.PT_REG, R | X, b"\x0f\x01\xd7".ljust(4096, b"\xcc")),
    (0x2000, PageType.PT_REG, R | W, b"enclave data".ljust(4096, b"\0")),
    (0x3000, PageType.PT_REG, R | W, bytes(4096)),                       # SSA
]
HC_CREATE, HC_ADD, HC_INIT, HC_PREPARE, HC_FINISH, HC_DISABLE = 0x10, 0x11, 0x12, 0x13, 0x14, 0


def secs(**kw) -> Secs:
    fields = dict(size=SIZE, base=BASE, ssa_frame_size=1, ms_buf_size=0x1000,
                  attributes=Attributes(AttributeFlags.MODE64BIT, 0x3))
    fields.update(kw)
    return Secs(**fields)


def mrenclave(pages=PAGES, ssa_frame_size: int = 1) -> bytes:
    m = EnclaveMeasurement()
    m.ecreate(ssa_frame_size, SIZE)
    for offset, ptype, flags, data in pages:
        m.add_pages(offset, data, SecInfo.of(ptype, flags))
    return m.finalize()


@pytest.fixture(scope="module")
def key():
    return generate_signing_key()


@pytest.fixture(scope="module")
def monitor_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return img.build_monitor_image(cache_dir=tmp_path_factory.mktemp("monitor"))


def signed(key, enclave_hash: bytes, **kw) -> bytes:
    template = SigStruct(enclave_hash=enclave_hash, attributes=Attributes(AttributeFlags.MODE64BIT, 0x3),
                         attribute_mask=Attributes(0xFFFF_FFFF_FFFF_FFFF & ~AttributeFlags.INIT, 0x3),
                         isv_prod_id=7, isv_svn=3, **kw)
    return sign_sigstruct(template, key).pack()


def hypercalls(calls) -> str:
    """x86 that issues each (code, arg0, arg1) as a VMCALL and reports RAX on the debug port."""
    return "".join(f"mov ${code:#x}, %eax ; movabs ${a0:#x}, %rdi ; movabs ${a1:#x}, %rsi ; "
                   f"vmcall ; out %eax, $0xe9\n" for code, a0, a1 in calls)


def place(mem, the_secs: Secs, pages) -> None:
    """The driver's inputs in memory: the SECS and its PAGEINFO at PAGEINFOS, then per page i
    (from 1) its SECINFO, source page and PAGEINFO."""
    mem.write(SECS_SRC, the_secs.pack())
    mem.write(SECINFOS, SecInfo.of(PageType.PT_SECS, 0).pack())
    mem.write(PAGEINFOS, struct.pack("<QQQQ", 0, SECS_SRC, SECINFOS, 0))
    for i, (offset, ptype, flags, data) in enumerate(pages, start=1):
        mem.write(SECINFOS + 64 * i, SecInfo.of(ptype, flags).pack())
        mem.write(SOURCES + 0x1000 * i, data)
        mem.write(PAGEINFOS + 32 * i, struct.pack("<QQQQ", BASE + offset, SOURCES + 0x1000 * i,
                                                  SECINFOS + 64 * i, SECS_EPC))


def run(monitor_image: bytes, calls: list[tuple[int, int, int]], *, the_secs: Secs | None = None,
        pages=PAGES, sigstruct: bytes = b""):
    """Place the structures, issue `calls` (code, arg0, arg1) from CPL 0; the RAX of each."""
    bm, mon = machine(monitor_image, hypercalls(calls))
    place(bm.memory, the_secs or secs(), pages)
    if sigstruct:
        bm.memory.write(SIGSTRUCT, sigstruct)
    bm.run(KERNEL)
    return [v & 0xFFFF_FFFF for v in bm.recorder.values[1:]], mon, bm


def build(n_pages: int = len(PAGES), extend: int = 1) -> list[tuple[int, int, int]]:
    return [(HC_CREATE, PAGEINFOS, SECS_EPC)] + [
        (HC_ADD, PAGEINFOS + 32 * i, (EPC + i * 0x1000) | extend) for i in range(1, n_pages + 1)]


def test_create_add_init_measures_exactly_like_sgx(monitor_image, key) -> None:
    sig = signed(key, mrenclave())
    rax, mon, bm = run(monitor_image, build() + [(HC_INIT, SECS_EPC, SIGSTRUCT)], sigstruct=sig)
    assert rax == [0] * (len(PAGES) + 2), mon.log_lines
    enclave = mon.enclaves.enclaves[SECS_EPC]
    assert enclave.initialized and enclave.tcs == [BASE]
    stored = Secs.unpack(bm.memory.read(SECS_EPC, 4096))
    assert stored.mr_enclave == mrenclave()
    modulus = SigStruct.unpack(sig).modulus.to_bytes(384, "little")
    assert stored.mr_signer == hashlib.sha256(modulus).digest()
    assert (stored.isv_prod_id, stored.isv_svn) == (7, 3)
    assert stored.attributes.flags & AttributeFlags.INIT
    assert bm.memory.read(EPC + 0x3000, 12) == b"enclave data", "the page is in its EPC page"
    assert mon.enclaves.epcm.summary()


def test_einit_refuses_a_measurement_that_is_not_the_signed_one(monitor_image, key) -> None:
    sig = signed(key, hashlib.sha256(b"another enclave").digest())
    rax, mon, _ = run(monitor_image, build() + [(HC_INIT, SECS_EPC, SIGSTRUCT)], sigstruct=sig)
    assert rax[-1] == SgxErrorCode.SGX_INVALID_MEASUREMENT
    assert not mon.enclaves.enclaves[SECS_EPC].initialized


def test_einit_verifies_the_rsa_signature(monitor_image, key) -> None:
    forged = bytearray(signed(key, mrenclave()))
    forged[516] ^= 1                                   # one bit of SIGNATURE
    rax, _, _ = run(monitor_image, build() + [(HC_INIT, SECS_EPC, SIGSTRUCT)], sigstruct=bytes(forged))
    assert rax[-1] == SgxErrorCode.SGX_INVALID_SIGNATURE


def test_einit_checks_attributes_under_the_mask(monitor_image, key) -> None:
    sig = signed(key, mrenclave())
    debug = secs(attributes=Attributes(AttributeFlags.MODE64BIT | AttributeFlags.DEBUG, 0x3))
    rax, _, _ = run(monitor_image, build() + [(HC_INIT, SECS_EPC, SIGSTRUCT)], sigstruct=sig,
                    the_secs=debug)
    assert rax[-1] == SgxErrorCode.SGX_INVALID_ATTRIBUTE


def test_a_page_other_than_the_signed_one_fails_einit(monitor_image, key) -> None:
    other = list(PAGES)
    other[2] = (0x2000, PageType.PT_REG, R | W, b"tampered data".ljust(4096, b"\0"))
    rax, _, _ = run(monitor_image, build() + [(HC_INIT, SECS_EPC, SIGSTRUCT)],
                    sigstruct=signed(key, mrenclave()), pages=other)
    assert rax[-1] == SgxErrorCode.SGX_INVALID_MEASUREMENT


def test_eadd_after_einit_is_gp(monitor_image, key) -> None:
    calls = build(3) + [(HC_INIT, SECS_EPC, SIGSTRUCT), (HC_ADD, PAGEINFOS + 32 * 4, EPC + 0x4000 | 1)]
    rax, _, _ = run(monitor_image, calls, sigstruct=signed(key, mrenclave(PAGES[:3])))
    assert rax[-2:] == [0, GP_FAULT]


@pytest.mark.parametrize("epc_page, expected", [
    (EPC + 0x1000, PF_FAULT),                     # already VALID (the first EADD took it)
    (0x600000, SgxErrorCode.SGX_PG_NONEPC),       # ordinary RAM
    (EPC + 0x2800, GP_FAULT),                     # EADD flags other than EEXTEND: #GP
])
def test_eadd_into_a_bad_epc_page(monitor_image, epc_page: int, expected: int) -> None:
    rax, _, _ = run(monitor_image, build(1) + [(HC_ADD, PAGEINFOS + 64, epc_page)])
    assert rax == [0, 0, expected]


def test_eadd_outside_elrange_and_twice_at_one_address_are_gp(monitor_image) -> None:
    outside = list(PAGES)
    outside[1] = (SIZE, PageType.PT_REG, R, bytes(4096))
    rax, _, _ = run(monitor_image, build(2), pages=outside)
    assert rax == [0, 0, GP_FAULT]
    twice = list(PAGES)
    twice[1] = PAGES[0]
    rax, _, _ = run(monitor_image, build(2), pages=twice)
    assert rax == [0, 0, GP_FAULT]


def test_a_tcs_must_be_added_with_stage_and_aep_zero(monitor_image) -> None:
    bad = list(PAGES)
    bad[0] = (0, PageType.PT_TCS, 0, Tcs(aep=0x1234, nssa=1).pack())
    rax, _, _ = run(monitor_image, build(1), pages=bad)
    assert rax == [0, GP_FAULT]


@pytest.mark.parametrize("bad", [
    dict(size=0x3000), dict(base=BASE + 0x1000), dict(ssa_frame_size=0), dict(ms_buf_size=0),
    dict(attributes=Attributes(0, 0x3)), dict(attributes=Attributes(AttributeFlags.MODE64BIT, 0x1)),
    dict(attributes=Attributes(AttributeFlags.MODE64BIT | AttributeFlags.INIT, 0x3)),
])
def test_ecreate_refuses_a_bad_secs_with_gp(monitor_image, bad: dict) -> None:
    rax, mon, _ = run(monitor_image, build(0), the_secs=secs(**bad))
    assert rax == [GP_FAULT]
    assert not mon.enclaves.enclaves


def test_overlapping_elranges_are_refused(monitor_image) -> None:
    calls = build(0) + [(HC_CREATE, PAGEINFOS, SECS_EPC - 0x1000)]
    rax, _, _ = run(monitor_image, calls)
    assert rax == [0, GP_FAULT]


def test_a_pageinfo_pointer_into_the_epc_is_efault(monitor_image) -> None:
    rax, mon, _ = run(monitor_image, [(HC_CREATE, EPC + 0x20, SECS_EPC)])
    assert rax == [(-14) & 0xFFFF_FFFF]
    assert any("PAGEINFO at GPA" in line and "the EPC" in line for line in mon.log_lines)


def test_destroy_scrubs_every_page_and_disable_waits_for_it(monitor_image, key) -> None:
    calls = build() + [(HC_DISABLE, 1, 0), (HC_FINISH, SECS_EPC, 0), (HC_PREPARE, SECS_EPC, 0),
                       (HC_FINISH, SECS_EPC, 0), (HC_DISABLE, 1, 0)]
    rax, mon, bm = run(monitor_image, calls)
    assert rax[len(PAGES) + 1:] == [(-16) & 0xFFFF_FFFF, SgxErrorCode.SGX_ENCLAVE_ACT, 0, 0, 0]
    assert bm.memory.read(EPC + 0x3000, 12) == bytes(12) and bm.memory.read(SECS_EPC, 8) == bytes(8)
    assert not mon.enabled
