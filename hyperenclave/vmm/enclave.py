"""Enclave lifecycle in the monitor: ECREATE, EADD(+EEXTEND), EINIT and destroy as hypercalls.

The host driver asks with HyperEnclave's supervisor hypercalls (0x10-0x14) and SGX's PAGEINFO
layout; the monitor checks everything the way the SGX leaves do (SDM Vol. 3D ch. 40 pseudo-code)
and answers in RAX with what Linux's `__encls` would return to the driver: 0, a positive SGX
error code (EINIT), or `ENCLS_FAULT_FLAG | vector` where the leaf would fault (#GP/#PF). A
pointer the monitor cannot use is -EFAULT. Unlike HyperEnclave's open monitor, EINIT verifies
the SIGSTRUCT's RSA signature and Q1/Q2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .epcm import Epcm
from .hypercall import HypercallArgs
from .measure import EnclaveMeasurement
from .sgx import (ATTRIBUTE_FLAGS_RESERVED, PAGE_SIZE, AttributeFlags, PageFlags, PageType,
                  SecInfo, Secs, SgxError, SgxErrorCode, SgxFault, SgxStructureError, SigStruct,
                  Tcs)
from .sigstruct import mrsigner, verify_sigstruct

if TYPE_CHECKING:
    from hyperenclave.platform.cpu import VCpu
    from hyperenclave.platform.memory import PhysicalMemory

    from .gaccess import GuestMemory

PAGEINFO = struct.Struct("<QQQQ")        # linaddr, srcpge, secinfo, secs (SGX PAGEINFO)
ADD_EXTEND = 1                           # HC_ENCLAVE_ADD_PAGE arg1 bit 0: EEXTEND the page
XFRM_REQUIRED = 0x3                      # x87 and SSE state are always in XFRM
XFRM_SUPPORTED = 0x3                     # the emulated CPU's XCR0


@dataclass
class Enclave:
    """What the monitor keeps for one enclave (the SECS itself lives in its EPC page)."""

    secs_pa: int
    secs: Secs
    measurement: EnclaveMeasurement
    pages: dict[int, int] = field(default_factory=dict)   # linear address -> EPC page
    tcs: list[int] = field(default_factory=list)          # linear addresses of TCS pages
    initialized: bool = False
    destroying: bool = False
    threads_inside: int = 0

    @property
    def elrange(self) -> tuple[int, int]:
        return self.secs.base, self.secs.base + self.secs.size


class EnclaveManager:
    """The EPCM and every enclave of one monitor instance."""

    def __init__(self, memory: "PhysicalMemory", epc_start: int, epc_size: int,
                 guest_memory: "GuestMemory", cpu_for: Callable[[], "VCpu"],
                 log: Callable[[str], None]) -> None:
        self.memory = memory
        self.epcm = Epcm(epc_start, epc_size)
        self.enclaves: dict[int, Enclave] = {}
        self.guest_memory = guest_memory
        self._cpu = cpu_for
        self._log = log
        self.initialized_hooks: list[Callable[[Enclave], None]] = []   # e.g. build its GPT/EPT
        self.destroyed_hooks: list[Callable[[Enclave], None]] = []

    # ------------------------------------------------------------------ hypercall entry points
    def hc_create(self, args: HypercallArgs) -> int:
        return self._leaf("ECREATE", lambda: self._ecreate(args.arg0, args.arg1))

    def hc_add_page(self, args: HypercallArgs) -> int:
        return self._leaf("EADD", lambda: self._eadd(args.arg0, args.arg1))

    def hc_init(self, args: HypercallArgs) -> int:
        return self._leaf("EINIT", lambda: self._einit(args.arg0, args.arg1))

    def hc_prepare_destroy(self, args: HypercallArgs) -> int:
        return self._leaf("PREPARE_DESTROY", lambda: self._prepare_destroy(args.arg0))

    def hc_finish_destroy(self, args: HypercallArgs) -> int:
        return self._leaf("FINISH_DESTROY", lambda: self._finish_destroy(args.arg0))

    def _leaf(self, name: str, body: Callable[[], None]) -> int:
        """Run one leaf; turn its SGX outcome into the driver's return value."""
        try:
            body()
        except SgxFault as fault:
            self._log(f"{name}: {fault} -> #{'GP' if fault.vector == 13 else 'PF'}")
            return fault.linux_code
        except SgxError as err:
            self._log(f"{name}: {err}")
            return int(err.code)
        except SgxStructureError as err:
            self._log(f"{name}: {err} -> #GP")
            return SgxFault.gp(str(err)).linux_code
        return 0

    # ------------------------------------------------------------------ reading the driver's input
    def _read(self, gva: int, length: int, what: str) -> bytes:
        return self.guest_memory.read(self._cpu(), gva, length, what)

    def _pageinfo(self, gva: int) -> tuple[int, int, int, int]:
        if gva % 32:
            raise SgxFault.gp(f"PAGEINFO at {gva:#x} is not 32-byte aligned")
        return PAGEINFO.unpack(self._read(gva, PAGEINFO.size, "PAGEINFO"))

    def _secinfo(self, gva: int) -> SecInfo:
        if gva % 64:
            raise SgxFault.gp(f"SECINFO at {gva:#x} is not 64-byte aligned")
        return SecInfo.unpack(self._read(gva, SecInfo.SIZE, "SECINFO"))

    def _enclave(self, secs_pa: int) -> Enclave:
        enclave = self.enclaves.get(secs_pa)
        if enclave is None:
            raise SgxFault.pf(secs_pa, f"{secs_pa:#x} is not the SECS of an enclave")
        return enclave

    def _free_epc_page(self, pa: int) -> None:
        if pa % PAGE_SIZE:
            raise SgxFault.gp(f"EPC page {pa:#x} is not page-aligned")
        if pa not in self.epcm:
            raise SgxError(SgxErrorCode.SGX_PG_NONEPC, f"{pa:#x} is not an EPC page")
        if self.epcm.get(pa) is not None:
            raise SgxFault.pf(pa, f"EPC page {pa:#x} is already VALID")

    # ------------------------------------------------------------------ the leaves
    def _ecreate(self, pageinfo_gva: int, secs_pa: int) -> None:
        _, srcpge, secinfo_gva, _ = self._pageinfo(pageinfo_gva)
        secinfo = self._secinfo(secinfo_gva)
        if secinfo.page_type != PageType.PT_SECS or secinfo.page_flags:
            raise SgxFault.gp(f"ECREATE needs SECINFO PT_SECS with no flags, not {secinfo}")
        secs = Secs.unpack(self._read(srcpge, PAGE_SIZE, "SECS"))
        self._check_secs(secs)
        self._free_epc_page(secs_pa)
        lo, hi = secs.base, secs.base + secs.size
        for other in self.enclaves.values():
            olo, ohi = other.elrange
            if lo < ohi and olo < hi:
                raise SgxFault.gp(f"ELRANGE [{lo:#x}-{hi - 1:#x}] overlaps enclave "
                                  f"{other.secs_pa:#x} [{olo:#x}-{ohi - 1:#x}]")
        measurement = EnclaveMeasurement()
        measurement.ecreate(secs.ssa_frame_size, secs.size)
        self.epcm.add(secs_pa, PageType.PT_SECS)
        self.memory.write(secs_pa, secs.pack())
        self.enclaves[secs_pa] = Enclave(secs_pa, secs, measurement)
        self._log(f"ECREATE: enclave {secs_pa:#x}, ELRANGE [{lo:#x}-{hi - 1:#x}], "
                  f"SSA frame {secs.ssa_frame_size} page(s)")

    @staticmethod
    def _check_secs(secs: Secs) -> None:
        """ECREATE's checks of the SECS contents (SDM ECREATE operation)."""
        size = secs.size
        if size < 2 * PAGE_SIZE or size & (size - 1):
            raise SgxFault.gp(f"SECS.SIZE {size:#x} is not a power of two of at least 2 pages")
        if secs.base % size:
            raise SgxFault.gp(f"SECS.BASEADDR {secs.base:#x} is not aligned to SECS.SIZE")
        if secs.base >> 47 or (secs.base + size) >> 47:
            raise SgxFault.gp(f"ELRANGE at {secs.base:#x} is not in the canonical lower half")
        flags, xfrm = secs.attributes.flags, secs.attributes.xfrm
        if flags & ATTRIBUTE_FLAGS_RESERVED:
            raise SgxFault.gp(f"reserved SECS.ATTRIBUTES bits {flags & ATTRIBUTE_FLAGS_RESERVED:#x}")
        if flags & AttributeFlags.INIT:
            raise SgxFault.gp("SECS.ATTRIBUTES.INIT must be 0 at ECREATE")
        if not flags & AttributeFlags.MODE64BIT:
            raise SgxFault.gp("only 64-bit enclaves (ATTRIBUTES.MODE64BIT) are supported")
        if xfrm & XFRM_REQUIRED != XFRM_REQUIRED or xfrm & ~XFRM_SUPPORTED:
            raise SgxFault.gp(f"SECS.ATTRIBUTES.XFRM {xfrm:#x} is not x87|SSE within XCR0 "
                              f"{XFRM_SUPPORTED:#x}")
        if not secs.ssa_frame_size:
            raise SgxFault.gp("SECS.SSAFRAMESIZE is 0")
        if secs.misc_select:
            raise SgxFault.gp(f"SECS.MISCSELECT {secs.misc_select:#x} asks for unsupported state")
        if not secs.ms_buf_size or secs.ms_buf_size % PAGE_SIZE:
            raise SgxFault.gp(f"SECS.MS_BUF_SIZE {secs.ms_buf_size:#x} must be a non-zero "
                              "multiple of 4 KiB (HyperEnclave)")
        if any(secs.mr_enclave) or any(secs.mr_signer) or secs.isv_prod_id or secs.isv_svn:
            raise SgxFault.gp("measurement and identity fields of the SECS must be 0 at ECREATE")

    def _eadd(self, pageinfo_gva: int, epc_and_flags: int) -> None:
        linaddr, srcpge, secinfo_gva, secs_pa = self._pageinfo(pageinfo_gva)
        epc_pa, extend = epc_and_flags & ~(PAGE_SIZE - 1), bool(epc_and_flags & ADD_EXTEND)
        if epc_and_flags & (PAGE_SIZE - 1) & ~ADD_EXTEND:
            raise SgxFault.gp(f"unknown EADD flags {epc_and_flags & 0xFFF & ~ADD_EXTEND:#x}")
        enclave = self._enclave(secs_pa)
        if enclave.initialized:
            raise SgxFault.gp(f"EADD to enclave {secs_pa:#x} after EINIT")
        if enclave.destroying:
            raise SgxFault.gp(f"EADD to enclave {secs_pa:#x}, which is being destroyed")
        lo, hi = enclave.elrange
        if linaddr % PAGE_SIZE or not lo <= linaddr < hi:
            raise SgxFault.gp(f"linear address {linaddr:#x} is not a page of ELRANGE "
                              f"[{lo:#x}-{hi - 1:#x}]")
        if linaddr in enclave.pages:
            raise SgxFault.gp(f"linear address {linaddr:#x} already has EPC page "
                              f"{enclave.pages[linaddr]:#x}")
        secinfo = self._secinfo(secinfo_gva)
        page_type = secinfo.page_type
        if page_type not in (PageType.PT_REG, PageType.PT_TCS):
            raise SgxFault.gp(f"EADD of a {page_type.name} page")
        if page_type == PageType.PT_TCS and secinfo.page_flags & (PageFlags.R | PageFlags.W | PageFlags.X):
            raise SgxFault.gp("a TCS page must be added with R/W/X clear")
        if page_type == PageType.PT_REG and secinfo.page_flags & PageFlags.W \
                and not secinfo.page_flags & PageFlags.R:
            raise SgxFault.gp("write permission without read")
        data = self._read(srcpge, PAGE_SIZE, "EADD source page")
        if page_type == PageType.PT_TCS:
            Tcs.unpack(data).check_at_creation()
        self._free_epc_page(epc_pa)
        self.epcm.add(epc_pa, page_type, PageFlags(secinfo.page_flags), linaddr, secs_pa)
        self.memory.write(epc_pa, data)
        offset = linaddr - lo
        enclave.measurement.eadd(offset, secinfo)
        if extend:
            enclave.measurement.eextend(offset, data)
        enclave.pages[linaddr] = epc_pa
        if page_type == PageType.PT_TCS:
            enclave.tcs.append(linaddr)

    def _einit(self, secs_pa: int, sigstruct_gva: int) -> None:
        enclave = self._enclave(secs_pa)
        if enclave.initialized:
            raise SgxFault.gp(f"enclave {secs_pa:#x} is already initialized")
        if sigstruct_gva % PAGE_SIZE:
            raise SgxFault.gp(f"SIGSTRUCT at {sigstruct_gva:#x} is not page-aligned")
        raw = self._read(sigstruct_gva, SigStruct.SIZE, "SIGSTRUCT")
        verify_sigstruct(raw)                      # SGX_INVALID_SIG_STRUCT / _SIGNATURE
        sig = SigStruct.unpack(raw)
        secs = enclave.secs
        mask = sig.attribute_mask
        if (secs.attributes.flags & mask.flags) != (sig.attributes.flags & mask.flags) or \
                (secs.attributes.xfrm & mask.xfrm) != (sig.attributes.xfrm & mask.xfrm):
            raise SgxError(SgxErrorCode.SGX_INVALID_ATTRIBUTE,
                           "SECS attributes do not match SIGSTRUCT under its mask")
        if (secs.misc_select & sig.misc_mask) != (sig.misc_select & sig.misc_mask):
            raise SgxError(SgxErrorCode.SGX_INVALID_ATTRIBUTE,
                           "SECS MISCSELECT does not match SIGSTRUCT under its mask")
        mr_enclave = enclave.measurement.finalize()
        if mr_enclave != sig.enclave_hash:
            raise SgxError(SgxErrorCode.SGX_INVALID_MEASUREMENT,
                           f"MRENCLAVE {mr_enclave.hex()} is not SIGSTRUCT's ENCLAVEHASH "
                           f"{sig.enclave_hash.hex()}")
        secs.mr_enclave = mr_enclave
        secs.mr_signer = mrsigner(sig)
        secs.isv_prod_id, secs.isv_svn = sig.isv_prod_id, sig.isv_svn
        secs.attributes.flags |= AttributeFlags.INIT
        self.memory.write(secs_pa, secs.pack())
        enclave.initialized = True
        for hook in self.initialized_hooks:
            hook(enclave)
        self._log(f"EINIT: enclave {secs_pa:#x} MRENCLAVE {mr_enclave.hex()} MRSIGNER "
                  f"{secs.mr_signer.hex()} ISVPRODID {secs.isv_prod_id} ISVSVN {secs.isv_svn}")

    def _prepare_destroy(self, secs_pa: int) -> None:
        enclave = self._enclave(secs_pa)
        if enclave.threads_inside:
            raise SgxError(SgxErrorCode.SGX_ENCLAVE_ACT,
                           f"{enclave.threads_inside} thread(s) inside enclave {secs_pa:#x}")
        enclave.destroying = True

    def _finish_destroy(self, secs_pa: int) -> None:
        enclave = self._enclave(secs_pa)
        if not enclave.destroying:
            raise SgxError(SgxErrorCode.SGX_ENCLAVE_ACT,
                           f"FINISH_DESTROY of enclave {secs_pa:#x} without PREPARE_DESTROY")
        for hook in self.destroyed_hooks:
            hook(enclave)
        for page in self.epcm.children(secs_pa):
            self.epcm.remove(page)
            self.memory.zero(page, PAGE_SIZE)
        self.epcm.remove(secs_pa)
        self.memory.zero(secs_pa, PAGE_SIZE)
        del self.enclaves[secs_pa]
        self._log(f"enclave {secs_pa:#x} destroyed, its EPC pages scrubbed")

    def destroy_all(self) -> None:
        """Monitor teardown: every enclave goes, whatever its state."""
        for secs_pa, enclave in list(self.enclaves.items()):
            enclave.destroying = True
            enclave.threads_inside = 0
            self._finish_destroy(secs_pa)

