"""SGX architectural structures with their exact byte layouts (Intel SDM Vol. 3D, "SGX data
structures"), as HyperEnclave's `enclave/sgx.rs` and `report.rs` use them.

Every structure is a dataclass declared by a LAYOUT of (field, offset, kind) rows copied from the
SDM tables; the bytes no row covers are RESERVED and must be zero. `pack()` and `unpack()` are
strict both ways (wrong size, out-of-range value, non-zero reserved bytes or bits all raise
`SgxStructureError` naming the field), so a successful `unpack()` always packs back to the same
bytes. Field names follow the SDM; HyperEnclave's one addition is SECS.ms_buf_size at offset 40
(inside the SDM's RESERVED 24..48). CET fields (SECS 24/32, SIGSTRUCT 908/909, REPORT 20,
TARGETINFO 48) are not modelled: HyperEnclave has no CET, so they stay reserved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import ClassVar, Self

PAGE_SIZE = 4096


# ---------------------------------------------------------------------------------------------
# Errors


class SgxStructureError(ValueError):
    """Bytes that are not a valid instance of an SGX structure, or a value that cannot be packed."""

    def __init__(self, struct: str, field_name: str, message: str) -> None:
        super().__init__(f"{struct}.{field_name}: {message}")
        self.struct = struct
        self.field = field_name


class SgxErrorCode(IntEnum):
    """Error codes an SGX leaf returns in RAX with ZF=1 (SDM Vol. 3D, "Error or Information Codes
    for Intel SGX Instructions"; the same values as Linux `arch/x86/include/asm/sgx.h`)."""

    SGX_SUCCESS = 0
    SGX_INVALID_SIG_STRUCT = 1
    SGX_INVALID_ATTRIBUTE = 2
    SGX_BLKSTATE = 3
    SGX_INVALID_MEASUREMENT = 4
    SGX_NOTBLOCKABLE = 5
    SGX_PG_INVLD = 6
    SGX_EPC_PAGE_CONFLICT = 7          # SGX_LOCKFAIL in older SDM editions
    SGX_INVALID_SIGNATURE = 8
    SGX_MAC_COMPARE_FAIL = 9
    SGX_PAGE_NOT_BLOCKED = 10
    SGX_NOT_TRACKED = 11
    SGX_VA_SLOT_OCCUPIED = 12
    SGX_CHILD_PRESENT = 13
    SGX_ENCLAVE_ACT = 14
    SGX_ENTRYEPOCH_LOCKED = 15
    SGX_INVALID_EINITTOKEN = 16        # SGX_INVALID_LICENSE in older SDM editions
    SGX_PREV_TRK_INCMPL = 17
    SGX_PG_IS_SECS = 18
    SGX_PAGE_ATTRIBUTES_MISMATCH = 19
    SGX_PAGE_NOT_MODIFIABLE = 20
    SGX_PAGE_NOT_DEBUGGABLE = 21
    SGX_INVALID_COUNTER = 25
    SGX_PG_NONEPC = 26
    SGX_TRACK_NOT_REQUIRED = 27
    SGX_INVALID_CPUSVN = 32
    SGX_INVALID_ISVSVN = 64
    SGX_UNMASKED_EVENT = 128
    SGX_INVALID_KEYNAME = 256


class SgxError(Exception):
    """An SGX leaf refused. `code` is what it returns in RAX (with ZF=1); an `SgxFault` has no
    code because the leaf raises an exception instead."""

    def __init__(self, code: SgxErrorCode | None, message: str) -> None:
        super().__init__(f"{code.name}: {message}" if code is not None else message)
        self.code = code
        self.message = message


GP_VECTOR = 13
PF_VECTOR = 14
PF_P = 1 << 0            # page-fault error code: the page was present
PF_SGX = 1 << 15         # page-fault error code: an SGX (EPCM) access-control check failed
ENCLS_FAULT_FLAG = 0x4000_0000   # Linux `encls.h`: a faulting ENCLS returns trapnr | this flag


class SgxFault(SgxError):
    """A leaf that faults (#GP(0), #PF(address)) instead of returning an error code."""

    def __init__(self, vector: int, error_code: int, message: str,
                 address: int | None = None) -> None:
        mnemonic = {GP_VECTOR: "#GP", PF_VECTOR: "#PF"}.get(vector, f"vector {vector}")
        where = f" at {address:#x}" if address is not None else ""
        super().__init__(None, f"{mnemonic}({error_code:#x}){where}: {message}")
        self.vector = vector
        self.error_code = error_code
        self.address = address

    @classmethod
    def gp(cls, message: str) -> SgxFault:
        return cls(GP_VECTOR, 0, message)

    @classmethod
    def pf(cls, address: int, message: str, error_code: int = PF_P | PF_SGX) -> SgxFault:
        """#PF(address); the default error code is the EPCM-induced one (P and SGX bits)."""
        return cls(PF_VECTOR, error_code, message, address)

    @property
    def linux_code(self) -> int:
        """What Linux's ENCLS wrappers would return for this fault."""
        return ENCLS_FAULT_FLAG | self.vector


# ---------------------------------------------------------------------------------------------
# Named constants


class AttributeFlags(IntFlag):
    """ATTRIBUTES.FLAGS bits (SDM "Layout of ATTRIBUTES Structure")."""

    INIT = 1 << 0
    DEBUG = 1 << 1
    MODE64BIT = 1 << 2
    PROVISIONKEY = 1 << 4
    EINITTOKENKEY = 1 << 5
    CET = 1 << 6
    KSS = 1 << 7
    AEXNOTIFY = 1 << 10


ATTRIBUTE_FLAGS_RESERVED = ~sum(AttributeFlags) & 0xFFFF_FFFF_FFFF_FFFF


class MiscSelect(IntFlag):
    """MISCSELECT bits: which MISC components AEX saves into the SSA frame."""

    EXINFO = 1 << 0


class PageType(IntEnum):
    """SECINFO.FLAGS.PAGE_TYPE / EPCM.PT."""

    PT_SECS = 0
    PT_TCS = 1
    PT_REG = 2
    PT_VA = 3
    PT_TRIM = 4
    PT_SS_FIRST = 5
    PT_SS_REST = 6


class PageFlags(IntFlag):
    """SECINFO.FLAGS bits 5:0 (and the matching EPCM bits)."""

    R = 1 << 0
    W = 1 << 1
    X = 1 << 2
    PENDING = 1 << 3
    MODIFIED = 1 << 4
    PR = 1 << 5


PAGE_TYPE_SHIFT = 8


class TcsFlags(IntFlag):
    """TCS.FLAGS bits."""

    DBGOPTIN = 1 << 0
    AEXNOTIFY = 1 << 1


class KeyName(IntEnum):
    """KEYREQUEST.KEYNAME."""

    EINITTOKEN_KEY = 0
    PROVISION_KEY = 1
    PROVISION_SEAL_KEY = 2
    REPORT_KEY = 3
    SEAL_KEY = 4


class KeyPolicy(IntFlag):
    """KEYREQUEST.KEYPOLICY bits."""

    MRENCLAVE = 1 << 0
    MRSIGNER = 1 << 1
    NOISVPRODID = 1 << 2
    CONFIGID = 1 << 3
    ISVFAMILYID = 1 << 4
    ISVEXTPRODID = 1 << 5


EXIT_TYPE_HARDWARE = 3       # GPRSGX.EXITINFO.EXIT_TYPE for a hardware exception
EXIT_TYPE_SOFTWARE = 6       # ... for INT3/INTO
EXITINFO_VALID = 1 << 31

SIGSTRUCT_HEADER = bytes.fromhex("06000000E10000000000010000000000")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
SIGSTRUCT_VENDOR_INTEL = 0x8086
SIGSTRUCT_EXPONENT = 3
RSA3072_BYTES = 384


# ---------------------------------------------------------------------------------------------
# The layout engine


@dataclass(frozen=True)
class Int:
    """A little-endian unsigned integer of `size` bytes (u16..u64, and the 384-byte RSA numbers)."""

    size: int


@dataclass(frozen=True)
class Raw:
    """A byte string of exactly `size` bytes (hashes, IDs, headers)."""

    size: int


U16, U32, U64 = Int(2), Int(4), Int(8)
FieldKind = Int | Raw | type["SgxStruct"]


def _kind_size(kind: FieldKind) -> int:
    return kind.SIZE if isinstance(kind, type) else kind.size


class SgxStruct:
    """Base of every structure: LAYOUT rows are (name, offset, kind); gaps are reserved."""

    SIZE: ClassVar[int]
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]]
    RESERVED: ClassVar[tuple[tuple[int, int], ...]]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        covered = [(off, off + _kind_size(kind)) for _, off, kind in cls.LAYOUT]
        covered.sort()
        reserved, pos = [], 0
        for start, end in covered:
            if start < pos:
                raise TypeError(f"{cls.__name__}: overlapping fields at {start}")
            if start > pos:
                reserved.append((pos, start))
            pos = end
        if pos > cls.SIZE:
            raise TypeError(f"{cls.__name__}: fields end at {pos} > SIZE {cls.SIZE}")
        if pos < cls.SIZE:
            reserved.append((pos, cls.SIZE))
        cls.RESERVED = tuple(reserved)

    @classmethod
    def offset_of(cls, name: str) -> int:
        for field_name, offset, _ in cls.LAYOUT:
            if field_name == name:
                return offset
        raise KeyError(f"{cls.__name__} has no field {name!r}")

    def validate(self) -> None:
        """Checks on bits inside fields (reserved bits, known enumerations); none by default."""

    def _error(self, field_name: str, message: str) -> SgxStructureError:
        return SgxStructureError(type(self).__name__, field_name, message)

    def pack(self) -> bytes:
        self.validate()
        out = bytearray(self.SIZE)
        for name, offset, kind in self.LAYOUT:
            value = getattr(self, name)
            if isinstance(kind, Int):
                if not isinstance(value, int) or not 0 <= value < 1 << (8 * kind.size):
                    raise self._error(name, f"{value!r} is not a u{8 * kind.size}")
                out[offset:offset + kind.size] = value.to_bytes(kind.size, "little")
            elif isinstance(kind, Raw):
                if not isinstance(value, (bytes, bytearray)) or len(value) != kind.size:
                    raise self._error(name, f"must be {kind.size} bytes")
                out[offset:offset + kind.size] = value
            else:
                if not isinstance(value, kind):
                    raise self._error(name, f"must be a {kind.__name__}")
                out[offset:offset + kind.SIZE] = value.pack()
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        name = cls.__name__
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SgxStructureError(name, "<size>", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) != cls.SIZE:
            raise SgxStructureError(name, "<size>", f"{len(data)} bytes, expected {cls.SIZE}")
        for start, end in cls.RESERVED:
            if data.count(0, start, end) != end - start:      # a C scan (a TCS has 4 KiB)
                raise SgxStructureError(name, f"reserved[{start}:{end}]", "must be zero")
        values: dict[str, object] = {}
        for field_name, offset, kind in cls.LAYOUT:
            chunk = data[offset:offset + _kind_size(kind)]
            if isinstance(kind, Int):
                values[field_name] = int.from_bytes(chunk, "little")
            elif isinstance(kind, Raw):
                values[field_name] = chunk
            else:
                try:
                    values[field_name] = kind.unpack(chunk)
                except SgxStructureError as err:
                    raise SgxStructureError(name, f"{field_name}.{err.field}", str(err)) from None
        obj = cls(**values)
        obj.validate()
        return obj


# ---------------------------------------------------------------------------------------------
# Structures


@dataclass
class Attributes(SgxStruct):
    """ATTRIBUTES (16 bytes): FLAGS and XFRM; used by SECS, SIGSTRUCT, REPORT, TARGETINFO,
    KEYREQUEST. Reserved flag bits are the instructions' business (they differ per use: a mask
    may set them), so they are not checked here."""

    SIZE: ClassVar[int] = 16
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("flags", 0, U64), ("xfrm", 8, U64))
    flags: int = 0
    xfrm: int = 0


@dataclass
class Secs(SgxStruct):
    """SGX Enclave Control Structure (4096 bytes), with HyperEnclave's ms_buf_size at 40."""

    SIZE: ClassVar[int] = PAGE_SIZE
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("size", 0, U64),
        ("base", 8, U64),
        ("ssa_frame_size", 16, U32),
        ("misc_select", 20, U32),
        ("ms_buf_size", 40, U64),
        ("attributes", 48, Attributes),
        ("mr_enclave", 64, Raw(32)),
        ("mr_signer", 128, Raw(32)),
        ("config_id", 192, Raw(64)),
        ("isv_prod_id", 256, U16),
        ("isv_svn", 258, U16),
        ("config_svn", 260, U16),
    )
    size: int = 0
    base: int = 0
    ssa_frame_size: int = 0
    misc_select: int = 0
    ms_buf_size: int = 0
    attributes: Attributes = field(default_factory=Attributes)
    mr_enclave: bytes = bytes(32)
    mr_signer: bytes = bytes(32)
    config_id: bytes = bytes(64)
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_svn: int = 0


@dataclass
class Tcs(SgxStruct):
    """Thread Control Structure (4096 bytes). `stage` is the SDM's execution-state word at 0
    (HyperEnclave's name); `aep` is where the AEP is kept while a thread is inside."""

    SIZE: ClassVar[int] = PAGE_SIZE
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("stage", 0, U64),
        ("flags", 8, U64),
        ("ossa", 16, U64),
        ("cssa", 24, U32),
        ("nssa", 28, U32),
        ("oentry", 32, U64),
        ("aep", 40, U64),
        ("ofsbase", 48, U64),
        ("ogsbase", 56, U64),
        ("fslimit", 64, U32),
        ("gslimit", 68, U32),
    )
    stage: int = 0
    flags: int = 0
    ossa: int = 0
    cssa: int = 0
    nssa: int = 0
    oentry: int = 0
    aep: int = 0
    ofsbase: int = 0
    ogsbase: int = 0
    fslimit: int = 0
    gslimit: int = 0

    def validate(self) -> None:
        if self.flags & ~sum(TcsFlags):
            raise self._error("flags", f"reserved bits set in {self.flags:#x}")

    def check_at_creation(self) -> None:
        """HyperEnclave's `SgxTcs::validate_at_creation`: EADD of a TCS needs STAGE and AEP 0."""
        if self.stage:
            raise self._error("stage", "must be 0 when the TCS is added")
        if self.aep:
            raise self._error("aep", "must be 0 when the TCS is added")


GPRSGX_SIZE = 184
EXINFO_SIZE = 16


def exit_info(vector: int, exit_type: int) -> int:
    """GPRSGX.EXITINFO for an AEX caused by exception `vector` (VALID set)."""
    return EXITINFO_VALID | (exit_type & 0x7) << 8 | vector & 0xFF


@dataclass
class GprSgx(SgxStruct):
    """GPRSGX: the last 184 bytes of an SSA frame."""

    SIZE: ClassVar[int] = GPRSGX_SIZE
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = tuple(
        (name, 8 * i, U64) for i, name in enumerate(
            ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rflags", "rip", "ursp", "urbp"))
    ) + (("exitinfo", 160, U32), ("fsbase", 168, U64), ("gsbase", 176, U64))
    rax: int = 0
    rcx: int = 0
    rdx: int = 0
    rbx: int = 0
    rsp: int = 0
    rbp: int = 0
    rsi: int = 0
    rdi: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rflags: int = 0
    rip: int = 0
    ursp: int = 0
    urbp: int = 0
    exitinfo: int = 0
    fsbase: int = 0
    gsbase: int = 0

    def validate(self) -> None:
        if self.exitinfo & 0x7FFF_F800:
            raise self._error("exitinfo", f"reserved bits 30:11 set in {self.exitinfo:#x}")


@dataclass
class ExInfo(SgxStruct):
    """MISC.EXINFO (16 bytes, just below GPRSGX when MISCSELECT.EXINFO is set)."""

    SIZE: ClassVar[int] = EXINFO_SIZE
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("maddr", 0, U64), ("errcd", 8, U32))
    maddr: int = 0
    errcd: int = 0


MXCSR_INIT = 0x1F80                 # all exceptions masked, round to nearest
MXCSR_MASK = 0xFFFF
X87_FCW_INIT = 0x037F
XSAVE_ST_OFFSET = 32                # ST0-ST7 / MM0-MM7, 16 bytes each (10 used)
XSAVE_XMM_OFFSET = 160
XSAVE_HEADER_OFFSET = 512
XFEATURE_X87, XFEATURE_SSE = 1, 2
FPU_STATE_SIZE = XSAVE_HEADER_OFFSET + 64
_FXSAVE_X87 = struct.Struct("<HHBxHQQ")     # FCW, FSW, abridged FTW, FOP, FIP, FDP (64-bit form)
#: An x87 register: (64-bit significand, sign and 15-bit exponent), as Unicorn reads it.
X87Register = tuple[int, int]


@dataclass(frozen=True)
class FpuState:
    """The x87 and SSE state in an SSA frame's XSAVE area (SDM Vol. 1 10.5.1 and 13.4: the
    legacy region's FCW, FSW, abridged FTW, FOP, FIP, FDP, ST0-ST7, MXCSR and XMM0-15, and
    XSTATE_BV in the header): what AEX saves for XFRM x87|SSE and then replaces by the initial
    values (so the host sees none of it, not even the last x87 instruction's address), and
    what ERESUME loads. ST registers are in stack order, `ftw` has a bit per physical register
    (1 = not empty), as FXSAVE writes them."""

    fcw: int = X87_FCW_INIT
    fsw: int = 0
    ftw: int = 0
    fop: int = 0
    fip: int = 0
    fdp: int = 0
    st: tuple[X87Register, ...] = ((0, 0),) * 8
    mxcsr: int = MXCSR_INIT
    xmm: tuple[int, ...] = (0,) * 16

    def pack(self) -> bytes:
        area = bytearray(FPU_STATE_SIZE)
        _FXSAVE_X87.pack_into(area, 0, self.fcw, self.fsw, self.ftw, self.fop, self.fip, self.fdp)
        struct.pack_into("<II", area, 24, self.mxcsr, MXCSR_MASK)
        for i, (significand, exponent) in enumerate(self.st):
            struct.pack_into("<QH", area, XSAVE_ST_OFFSET + 16 * i, significand, exponent)
        for i, value in enumerate(self.xmm):
            area[XSAVE_XMM_OFFSET + 16 * i:XSAVE_XMM_OFFSET + 16 * (i + 1)] = value.to_bytes(16, "little")
        struct.pack_into("<Q", area, XSAVE_HEADER_OFFSET, XFEATURE_X87 | XFEATURE_SSE)
        return bytes(area)

    @classmethod
    def unpack(cls, area: bytes) -> FpuState:
        fcw, fsw, ftw, fop, fip, fdp = _FXSAVE_X87.unpack_from(area, 0)
        (mxcsr,) = struct.unpack_from("<I", area, 24)
        st = tuple(struct.unpack_from("<QH", area, XSAVE_ST_OFFSET + 16 * i) for i in range(8))
        xmm = tuple(int.from_bytes(area[XSAVE_XMM_OFFSET + 16 * i:XSAVE_XMM_OFFSET + 16 * (i + 1)],
                                   "little") for i in range(16))
        return cls(fcw, fsw, ftw, fop, fip, fdp, st, mxcsr, xmm)


def gprsgx_offset(ssa_frame_pages: int) -> int:
    """Where GPRSGX starts inside an SSA frame of `ssa_frame_pages` pages (it ends the frame)."""
    if ssa_frame_pages < 1:
        raise ValueError(f"an SSA frame has at least one page, not {ssa_frame_pages}")
    return ssa_frame_pages * PAGE_SIZE - GPRSGX_SIZE


def exinfo_offset(ssa_frame_pages: int) -> int:
    """Where MISC.EXINFO starts inside an SSA frame (right below GPRSGX)."""
    return gprsgx_offset(ssa_frame_pages) - EXINFO_SIZE


@dataclass
class SecInfo(SgxStruct):
    """SECINFO (64 bytes): FLAGS = R/W/X | PENDING/MODIFIED/PR | PAGE_TYPE << 8."""

    SIZE: ClassVar[int] = 64
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (("flags", 0, U64),)
    flags: int = 0

    @classmethod
    def of(cls, page_type: PageType, flags: PageFlags = PageFlags(0)) -> SecInfo:
        return cls(int(page_type) << PAGE_TYPE_SHIFT | int(flags))

    @property
    def page_type(self) -> PageType:
        return PageType(self.flags >> PAGE_TYPE_SHIFT & 0xFF)

    @property
    def page_flags(self) -> PageFlags:
        return PageFlags(self.flags & int(sum(PageFlags)))

    def validate(self) -> None:
        if self.flags & ~(0xFF << PAGE_TYPE_SHIFT | int(sum(PageFlags))):
            raise self._error("flags", f"reserved bits set in {self.flags:#x}")
        page_type = self.flags >> PAGE_TYPE_SHIFT & 0xFF
        if page_type not in PageType._value2member_map_:
            raise self._error("flags", f"unknown PAGE_TYPE {page_type}")


@dataclass
class SigStruct(SgxStruct):
    """Enclave Signature Structure (1808 bytes). MODULUS, SIGNATURE, Q1 and Q2 are integers
    stored little-endian in 384 bytes."""

    SIZE: ClassVar[int] = 1808
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("header", 0, Raw(16)),
        ("vendor", 16, U32),
        ("date", 20, U32),
        ("header2", 24, Raw(16)),
        ("swdefined", 40, U32),
        ("modulus", 128, Int(RSA3072_BYTES)),
        ("exponent", 512, U32),
        ("signature", 516, Int(RSA3072_BYTES)),
        ("misc_select", 900, U32),
        ("misc_mask", 904, U32),
        ("isv_family_id", 912, Raw(16)),
        ("attributes", 928, Attributes),
        ("attribute_mask", 944, Attributes),
        ("enclave_hash", 960, Raw(32)),
        ("isv_ext_prod_id", 1008, Raw(16)),
        ("isv_prod_id", 1024, U16),
        ("isv_svn", 1026, U16),
        ("q1", 1040, Int(RSA3072_BYTES)),
        ("q2", 1424, Int(RSA3072_BYTES)),
    )
    header: bytes = SIGSTRUCT_HEADER
    vendor: int = 0
    date: int = 0
    header2: bytes = SIGSTRUCT_HEADER2
    swdefined: int = 0
    modulus: int = 0
    exponent: int = SIGSTRUCT_EXPONENT
    signature: int = 0
    misc_select: int = 0
    misc_mask: int = 0
    isv_family_id: bytes = bytes(16)
    attributes: Attributes = field(default_factory=Attributes)
    attribute_mask: Attributes = field(default_factory=Attributes)
    enclave_hash: bytes = bytes(32)
    isv_ext_prod_id: bytes = bytes(16)
    isv_prod_id: int = 0
    isv_svn: int = 0
    q1: int = 0
    q2: int = 0


@dataclass
class ReportBody(SgxStruct):
    """REPORT.BODY (384 bytes): what EREPORT says about the enclave; the MAC covers it."""

    SIZE: ClassVar[int] = 384
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("cpu_svn", 0, Raw(16)),
        ("misc_select", 16, U32),
        ("isv_ext_prod_id", 32, Raw(16)),
        ("attributes", 48, Attributes),
        ("mr_enclave", 64, Raw(32)),
        ("mr_signer", 128, Raw(32)),
        ("config_id", 192, Raw(64)),
        ("isv_prod_id", 256, U16),
        ("isv_svn", 258, U16),
        ("config_svn", 260, U16),
        ("isv_family_id", 304, Raw(16)),
        ("report_data", 320, Raw(64)),
    )
    cpu_svn: bytes = bytes(16)
    misc_select: int = 0
    isv_ext_prod_id: bytes = bytes(16)
    attributes: Attributes = field(default_factory=Attributes)
    mr_enclave: bytes = bytes(32)
    mr_signer: bytes = bytes(32)
    config_id: bytes = bytes(64)
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_svn: int = 0
    isv_family_id: bytes = bytes(16)
    report_data: bytes = bytes(64)


@dataclass
class Report(SgxStruct):
    """REPORT (432 bytes): BODY, KEYID, MAC."""

    SIZE: ClassVar[int] = 432
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("body", 0, ReportBody), ("key_id", 384, Raw(32)), ("mac", 416, Raw(16)))
    body: ReportBody = field(default_factory=ReportBody)
    key_id: bytes = bytes(32)
    mac: bytes = bytes(16)


@dataclass
class TargetInfo(SgxStruct):
    """TARGETINFO (512 bytes): the enclave a REPORT is MACed for."""

    SIZE: ClassVar[int] = 512
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("mr_enclave", 0, Raw(32)),
        ("attributes", 32, Attributes),
        ("config_svn", 50, U16),
        ("misc_select", 52, U32),
        ("config_id", 64, Raw(64)),
    )
    mr_enclave: bytes = bytes(32)
    attributes: Attributes = field(default_factory=Attributes)
    config_svn: int = 0
    misc_select: int = 0
    config_id: bytes = bytes(64)


@dataclass
class KeyRequest(SgxStruct):
    """KEYREQUEST (512 bytes): EGETKEY's input."""

    SIZE: ClassVar[int] = 512
    LAYOUT: ClassVar[tuple[tuple[str, int, FieldKind], ...]] = (
        ("key_name", 0, U16),
        ("key_policy", 2, U16),
        ("isv_svn", 4, U16),
        ("cpu_svn", 8, Raw(16)),
        ("attribute_mask", 24, Attributes),
        ("key_id", 40, Raw(32)),
        ("misc_mask", 72, U32),
        ("config_svn", 76, U16),
    )
    key_name: int = 0
    key_policy: int = 0
    isv_svn: int = 0
    cpu_svn: bytes = bytes(16)
    attribute_mask: Attributes = field(default_factory=Attributes)
    key_id: bytes = bytes(32)
    misc_mask: int = 0
    config_svn: int = 0


STRUCTURES: tuple[type[SgxStruct], ...] = (
    Attributes, Secs, Tcs, GprSgx, ExInfo, SecInfo, SigStruct, ReportBody, Report, TargetInfo,
    KeyRequest)
