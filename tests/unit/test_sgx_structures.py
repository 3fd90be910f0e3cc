"""SGX structure layouts against the SDM (Vol. 3D "SGX data structures"), linux-sgx
`common/inc/internal/arch.h`, `sgx_report.h`, `sgx_key.h` and HyperEnclave's `enclave/sgx.rs`."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperenclave.vmm.sgx import (
    ATTRIBUTE_FLAGS_RESERVED,
    ENCLS_FAULT_FLAG,
    EXIT_TYPE_HARDWARE,
    EXIT_TYPE_SOFTWARE,
    STRUCTURES,
    AttributeFlags,
    Attributes,
    ExInfo,
    GprSgx,
    Int,
    KeyName,
    KeyPolicy,
    KeyRequest,
    MiscSelect,
    PageFlags,
    PageType,
    Raw,
    Report,
    ReportBody,
    SecInfo,
    Secs,
    SgxError,
    SgxErrorCode,
    SgxFault,
    SgxStruct,
    SgxStructureError,
    SigStruct,
    TargetInfo,
    Tcs,
    TcsFlags,
    exinfo_offset,
    exit_info,
    gprsgx_offset,
)

SIZES = {Attributes: 16, Secs: 4096, Tcs: 4096, GprSgx: 184, ExInfo: 16, SecInfo: 64,
         SigStruct: 1808, ReportBody: 384, Report: 432, TargetInfo: 512, KeyRequest: 512}

# (structure, field, offset, size) straight from the SDM tables / arch.h comments.
OFFSETS = [
    (Secs, "size", 0, 8), (Secs, "base", 8, 8), (Secs, "ssa_frame_size", 16, 4),
    (Secs, "misc_select", 20, 4), (Secs, "ms_buf_size", 40, 8), (Secs, "attributes", 48, 16),
    (Secs, "mr_enclave", 64, 32), (Secs, "mr_signer", 128, 32), (Secs, "config_id", 192, 64),
    (Secs, "isv_prod_id", 256, 2), (Secs, "isv_svn", 258, 2), (Secs, "config_svn", 260, 2),
    (Tcs, "stage", 0, 8), (Tcs, "flags", 8, 8), (Tcs, "ossa", 16, 8), (Tcs, "cssa", 24, 4),
    (Tcs, "nssa", 28, 4), (Tcs, "oentry", 32, 8), (Tcs, "aep", 40, 8), (Tcs, "ofsbase", 48, 8),
    (Tcs, "ogsbase", 56, 8), (Tcs, "fslimit", 64, 4), (Tcs, "gslimit", 68, 4),
    (GprSgx, "rax", 0, 8), (GprSgx, "rcx", 8, 8), (GprSgx, "rdx", 16, 8), (GprSgx, "rbx", 24, 8),
    (GprSgx, "rsp", 32, 8), (GprSgx, "rbp", 40, 8), (GprSgx, "rsi", 48, 8), (GprSgx, "rdi", 56, 8),
    (GprSgx, "r8", 64, 8), (GprSgx, "r9", 72, 8), (GprSgx, "r10", 80, 8), (GprSgx, "r11", 88, 8),
    (GprSgx, "r12", 96, 8), (GprSgx, "r13", 104, 8), (GprSgx, "r14", 112, 8),
    (GprSgx, "r15", 120, 8),
    (GprSgx, "rflags", 128, 8), (GprSgx, "rip", 136, 8), (GprSgx, "ursp", 144, 8),
    (GprSgx, "urbp", 152, 8), (GprSgx, "exitinfo", 160, 4), (GprSgx, "fsbase", 168, 8),
    (GprSgx, "gsbase", 176, 8),
    (ExInfo, "maddr", 0, 8), (ExInfo, "errcd", 8, 4),
    (SecInfo, "flags", 0, 8),
    (SigStruct, "header", 0, 16), (SigStruct, "vendor", 16, 4), (SigStruct, "date", 20, 4),
    (SigStruct, "header2", 24, 16), (SigStruct, "swdefined", 40, 4),
    (SigStruct, "modulus", 128, 384), (SigStruct, "exponent", 512, 4),
    (SigStruct, "signature", 516, 384), (SigStruct, "misc_select", 900, 4),
    (SigStruct, "misc_mask", 904, 4), (SigStruct, "isv_family_id", 912, 16),
    (SigStruct, "attributes", 928, 16), (SigStruct, "attribute_mask", 944, 16),
    (SigStruct, "enclave_hash", 960, 32), (SigStruct, "isv_ext_prod_id", 1008, 16),
    (SigStruct, "isv_prod_id", 1024, 2), (SigStruct, "isv_svn", 1026, 2),
    (SigStruct, "q1", 1040, 384), (SigStruct, "q2", 1424, 384),
    (ReportBody, "cpu_svn", 0, 16), (ReportBody, "misc_select", 16, 4),
    (ReportBody, "isv_ext_prod_id", 32, 16), (ReportBody, "attributes", 48, 16),
    (ReportBody, "mr_enclave", 64, 32), (ReportBody, "mr_signer", 128, 32),
    (ReportBody, "config_id", 192, 64), (ReportBody, "isv_prod_id", 256, 2),
    (ReportBody, "isv_svn", 258, 2), (ReportBody, "config_svn", 260, 2),
    (ReportBody, "isv_family_id", 304, 16), (ReportBody, "report_data", 320, 64),
    (Report, "body", 0, 384), (Report, "key_id", 384, 32), (Report, "mac", 416, 16),
    (TargetInfo, "mr_enclave", 0, 32), (TargetInfo, "attributes", 32, 16),
    (TargetInfo, "config_svn", 50, 2), (TargetInfo, "misc_select", 52, 4),
    (TargetInfo, "config_id", 64, 64),
    (KeyRequest, "key_name", 0, 2), (KeyRequest, "key_policy", 2, 2),
    (KeyRequest, "isv_svn", 4, 2), (KeyRequest, "cpu_svn", 8, 16),
    (KeyRequest, "attribute_mask", 24, 16), (KeyRequest, "key_id", 40, 32),
    (KeyRequest, "misc_mask", 72, 4), (KeyRequest, "config_svn", 76, 2),
]


def kind_size(kind) -> int:
    return kind.SIZE if isinstance(kind, type) else kind.size


# --- sizes and offsets ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", STRUCTURES, ids=lambda c: c.__name__)
def test_size_matches_the_sdm(cls: type[SgxStruct]) -> None:
    assert cls.SIZE == SIZES[cls]
    assert len(cls().pack()) == SIZES[cls]


@pytest.mark.parametrize("cls,name,offset,size", OFFSETS,
                         ids=[f"{c.__name__}.{n}" for c, n, _, _ in OFFSETS])
def test_field_offset_matches_the_sdm(cls: type[SgxStruct], name: str, offset: int,
                                      size: int) -> None:
    assert cls.offset_of(name) == offset
    kind = next(k for n, _, k in cls.LAYOUT if n == name)
    assert kind_size(kind) == size


@pytest.mark.parametrize("cls", STRUCTURES, ids=lambda c: c.__name__)
def test_every_field_is_in_the_layout_and_the_table(cls: type[SgxStruct]) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    assert names == [n for n, _, _ in cls.LAYOUT]
    if cls is not Attributes:
        assert set(names) == {n for c, n, _, _ in OFFSETS if c is cls}


def test_reserved_ranges_are_the_sdm_gaps() -> None:
    assert Secs.RESERVED == ((24, 40), (96, 128), (160, 192), (262, 4096))
    assert Tcs.RESERVED == ((72, 4096),)
    assert GprSgx.RESERVED == ((164, 168),)
    assert SigStruct.RESERVED == ((44, 128), (908, 912), (992, 1008), (1028, 1040))
    assert ReportBody.RESERVED == ((20, 32), (96, 128), (160, 192), (262, 304))
    assert TargetInfo.RESERVED == ((48, 50), (56, 64), (128, 512))
    assert KeyRequest.RESERVED == ((6, 8), (78, 512))
    assert SecInfo.RESERVED == ((8, 64),)


def pattern(size: int) -> bytes:
    return bytes((0xA0 + i) & 0xFF or 1 for i in range(size))


@pytest.mark.parametrize("cls,name,offset,size", OFFSETS,
                         ids=[f"{c.__name__}.{n}" for c, n, _, _ in OFFSETS])
def test_field_lands_at_its_offset_little_endian(cls: type[SgxStruct], name: str, offset: int,
                                                 size: int) -> None:
    kind = next(k for n, _, k in cls.LAYOUT if n == name)
    if isinstance(kind, type):
        value = kind.unpack(reserved_cleared(kind, pattern(size)))
    elif isinstance(kind, Raw):
        value = pattern(size)
    else:
        value = int.from_bytes(pattern(size), "little")
    if cls is SecInfo:
        value = 0x0107   # the only flags field: keep it valid
    if cls is Tcs and name == "flags":
        value = 3
    if cls is GprSgx and name == "exitinfo":
        value = 0x8000_030E
    base = cls().pack()
    obj = dataclasses.replace(cls(), **{name: value})
    raw = obj.pack()
    expected = value.pack() if isinstance(value, SgxStruct) else (
        value if isinstance(value, bytes) else value.to_bytes(size, "little"))
    assert raw[offset:offset + size] == expected
    assert raw[:offset] == base[:offset] and raw[offset + size:] == base[offset + size:]
    assert cls.unpack(raw) == obj


# --- strictness -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", STRUCTURES, ids=lambda c: c.__name__)
def test_wrong_size_is_refused(cls: type[SgxStruct]) -> None:
    for size in (0, cls.SIZE - 1, cls.SIZE + 1):
        with pytest.raises(SgxStructureError) as err:
            cls.unpack(bytes(size))
        assert err.value.field == "<size>"
    with pytest.raises(SgxStructureError):
        cls.unpack("not bytes")  # type: ignore[arg-type]


RESERVED_CASES = [(cls, start, end) for cls in STRUCTURES for start, end in cls.RESERVED]


@pytest.mark.parametrize("cls,start,end", RESERVED_CASES,
                         ids=[f"{c.__name__}[{s}:{e}]" for c, s, e in RESERVED_CASES])
def test_non_zero_reserved_bytes_are_refused_by_name(cls: type[SgxStruct], start: int,
                                                     end: int) -> None:
    for pos in {start, (start + end) // 2, end - 1}:
        raw = bytearray(cls().pack())
        raw[pos] = 0x01
        with pytest.raises(SgxStructureError) as err:
            cls.unpack(bytes(raw))
        assert err.value.field == f"reserved[{start}:{end}]"
        assert cls.__name__ in str(err.value)


def test_nested_reserved_bytes_are_named_by_path() -> None:
    raw = bytearray(Report().pack())
    raw[300] = 1                                    # REPORT.BODY.RESERVED[262:304]
    with pytest.raises(SgxStructureError) as err:
        Report.unpack(bytes(raw))
    assert err.value.field == "body.reserved[262:304]"


def test_pack_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(SgxStructureError, match=r"Secs\.isv_svn"):
        Secs(isv_svn=0x10000).pack()
    with pytest.raises(SgxStructureError, match=r"Secs\.size"):
        Secs(size=-1).pack()
    with pytest.raises(SgxStructureError, match=r"Secs\.mr_enclave"):
        Secs(mr_enclave=bytes(31)).pack()
    with pytest.raises(SgxStructureError, match=r"Secs\.attributes"):
        Secs(attributes=0).pack()  # type: ignore[arg-type]
    with pytest.raises(SgxStructureError, match=r"SigStruct\.modulus"):
        SigStruct(modulus=1 << 3072).pack()


def test_secinfo_flags_and_page_type() -> None:
    tcs = SecInfo.of(PageType.PT_TCS)
    assert tcs.flags == 0x100
    reg = SecInfo.of(PageType.PT_REG, PageFlags.R | PageFlags.W | PageFlags.X)
    assert reg.flags == 0x207
    assert reg.pack()[:8] == (0x207).to_bytes(8, "little")
    assert SecInfo.unpack(reg.pack()).page_type is PageType.PT_REG
    assert reg.page_flags == PageFlags.R | PageFlags.W | PageFlags.X
    pending = SecInfo.of(PageType.PT_REG, PageFlags.R | PageFlags.W | PageFlags.PENDING)
    assert pending.flags == 0x20B
    assert [int(t) for t in PageType] == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("flags", [1 << 6, 1 << 7, 1 << 16, 1 << 63, 7 << 8, 0xFF << 8])
def test_secinfo_reserved_bits_and_unknown_types_are_refused(flags: int) -> None:
    with pytest.raises(SgxStructureError, match=r"SecInfo\.flags"):
        SecInfo.unpack(flags.to_bytes(8, "little") + bytes(56))
    with pytest.raises(SgxStructureError, match=r"SecInfo\.flags"):
        SecInfo(flags).pack()


def test_tcs_flags_and_creation_rule() -> None:
    assert Tcs(flags=TcsFlags.DBGOPTIN).pack()[8] == 1
    with pytest.raises(SgxStructureError, match=r"Tcs\.flags"):
        Tcs.unpack(bytes(8) + (4).to_bytes(8, "little") + bytes(4080))
    with pytest.raises(SgxStructureError, match=r"Tcs\.flags"):
        Tcs(flags=4).pack()
    Tcs(nssa=2, ossa=0x1000).check_at_creation()
    with pytest.raises(SgxStructureError, match=r"Tcs\.stage"):
        Tcs(stage=1).check_at_creation()
    with pytest.raises(SgxStructureError, match=r"Tcs\.aep"):
        Tcs(aep=0x401000).check_at_creation()


def test_ssa_frame_pieces() -> None:
    assert gprsgx_offset(1) == 4096 - 184 == 3912
    assert exinfo_offset(1) == 3912 - 16
    assert gprsgx_offset(2) == 8192 - 184
    with pytest.raises(ValueError):
        gprsgx_offset(0)
    assert exit_info(14, EXIT_TYPE_HARDWARE) == 0x8000_030E
    assert exit_info(3, EXIT_TYPE_SOFTWARE) == 0x8000_0603
    assert GprSgx.unpack(GprSgx(exitinfo=0x8000_030E).pack()).exitinfo == 0x8000_030E
    with pytest.raises(SgxStructureError, match=r"GprSgx\.exitinfo"):
        GprSgx(exitinfo=1 << 11).pack()
    ex = ExInfo(maddr=0x7FFF_1234_5000, errcd=0x8007)
    assert ex.pack() == (0x7FFF_1234_5000).to_bytes(8, "little") + (0x8007).to_bytes(4, "little") \
        + bytes(4)


def test_named_constants_match_the_sdm() -> None:
    assert AttributeFlags.INIT == 1 and AttributeFlags.DEBUG == 2
    assert AttributeFlags.MODE64BIT == 4 and AttributeFlags.PROVISIONKEY == 0x10
    assert AttributeFlags.EINITTOKENKEY == 0x20 and AttributeFlags.KSS == 0x80
    assert ATTRIBUTE_FLAGS_RESERVED & 0xFFFF == 0xFFFF & ~0x4F7
    assert [int(k) for k in KeyName] == [0, 1, 2, 3, 4]
    assert KeyName.REPORT_KEY == 3 and KeyName.SEAL_KEY == 4
    assert KeyPolicy.MRENCLAVE == 1 and KeyPolicy.MRSIGNER == 2
    assert KeyPolicy.NOISVPRODID == 4 and KeyPolicy.CONFIGID == 8
    assert MiscSelect.EXINFO == 1


SDM_ERROR_CODES = {
    "SGX_INVALID_SIG_STRUCT": 1, "SGX_INVALID_ATTRIBUTE": 2, "SGX_BLKSTATE": 3,
    "SGX_INVALID_MEASUREMENT": 4, "SGX_NOTBLOCKABLE": 5, "SGX_PG_INVLD": 6,
    "SGX_EPC_PAGE_CONFLICT": 7, "SGX_INVALID_SIGNATURE": 8, "SGX_MAC_COMPARE_FAIL": 9,
    "SGX_PAGE_NOT_BLOCKED": 10, "SGX_NOT_TRACKED": 11, "SGX_VA_SLOT_OCCUPIED": 12,
    "SGX_CHILD_PRESENT": 13, "SGX_ENCLAVE_ACT": 14, "SGX_ENTRYEPOCH_LOCKED": 15,
    "SGX_INVALID_EINITTOKEN": 16, "SGX_PREV_TRK_INCMPL": 17, "SGX_PG_IS_SECS": 18,
    "SGX_PAGE_ATTRIBUTES_MISMATCH": 19, "SGX_PAGE_NOT_MODIFIABLE": 20,
    "SGX_PAGE_NOT_DEBUGGABLE": 21, "SGX_INVALID_COUNTER": 25, "SGX_PG_NONEPC": 26,
    "SGX_TRACK_NOT_REQUIRED": 27, "SGX_INVALID_CPUSVN": 32, "SGX_INVALID_ISVSVN": 64,
    "SGX_UNMASKED_EVENT": 128, "SGX_INVALID_KEYNAME": 256,
}


def test_error_codes_have_the_sdm_values() -> None:
    for name, value in SDM_ERROR_CODES.items():
        assert SgxErrorCode[name] == value


def test_faults_carry_vector_and_error_code() -> None:
    gp = SgxFault.gp("SECINFO reserved bits")
    assert (gp.vector, gp.error_code, gp.address, gp.code) == (13, 0, None, None)
    assert gp.linux_code == ENCLS_FAULT_FLAG | 13
    pf = SgxFault.pf(0x1_8000_0000, "page already valid")
    assert (pf.vector, pf.address) == (14, 0x1_8000_0000)
    assert pf.error_code == 1 | 1 << 15
    assert "#PF" in str(pf) and "0x180000000" in str(pf)
    assert isinstance(pf, SgxError)
    err = SgxError(SgxErrorCode.SGX_CHILD_PRESENT, "3 pages")
    assert err.code == 13 and str(err).startswith("SGX_CHILD_PRESENT")


# --- property tests -------------------------------------------------------------------------

# Fields whose valid values are narrower than their width.
NARROW = {
    (SecInfo, "flags"): st.builds(lambda t, f: t << 8 | f, st.integers(0, 6), st.integers(0, 63)),
    (Tcs, "flags"): st.integers(0, 3),
    (GprSgx, "exitinfo"): st.builds(lambda v, t, ok: ok << 31 | t << 8 | v, st.integers(0, 255),
                                    st.integers(0, 7), st.integers(0, 1)),
}


def instances(cls: type[SgxStruct]) -> st.SearchStrategy[SgxStruct]:
    def one(name: str, kind) -> st.SearchStrategy[object]:
        if (cls, name) in NARROW:
            return NARROW[(cls, name)]
        if isinstance(kind, type):
            return instances(kind)
        if isinstance(kind, Raw):
            return st.binary(min_size=kind.size, max_size=kind.size)
        assert isinstance(kind, Int)
        return st.integers(0, (1 << 8 * kind.size) - 1)
    return st.builds(cls, **{name: one(name, kind) for name, _, kind in cls.LAYOUT})


@pytest.mark.parametrize("cls", STRUCTURES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip(cls: type[SgxStruct], data: st.DataObject) -> None:
    obj = data.draw(instances(cls))
    raw = obj.pack()
    assert len(raw) == cls.SIZE
    assert cls.unpack(raw) == obj
    assert cls.unpack(bytearray(raw)).pack() == raw


def reserved_cleared(cls: type[SgxStruct], raw: bytes) -> bytes:
    out = bytearray(raw)
    for start, end in cls.RESERVED:
        out[start:end] = bytes(end - start)
    return bytes(out)


@pytest.mark.parametrize("cls", STRUCTURES, ids=lambda c: c.__name__)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_parsers_only_raise_their_own_error(cls: type[SgxStruct], data: st.DataObject) -> None:
    raw = data.draw(st.one_of(
        st.binary(max_size=2 * cls.SIZE),
        st.binary(min_size=cls.SIZE, max_size=cls.SIZE),
        st.binary(min_size=cls.SIZE, max_size=cls.SIZE).map(lambda b: reserved_cleared(cls, b)),
    ))
    try:
        obj = cls.unpack(raw)
    except SgxStructureError:
        return
    assert obj.pack() == raw     # anything accepted is canonical
