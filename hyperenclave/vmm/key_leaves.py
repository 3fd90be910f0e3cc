"""EREPORT, EGETKEY and VerifyReport for the enclave running on a vCPU (ENCLU leaves 0 and 1,
HyperEnclave's user hypercalls 0x8000_000c, 0x8000_000b and 0x8000_000a).

Operands are effective addresses of the enclave, as SGX requires: aligned (#GP(0) if not), inside
ELRANGE (#GP(0) if not), and translated through the enclave's own page table and EPT, the
translation the enclave itself runs on; the page found must be a VALID REG page of this enclave
at that linear address with the access allowed by the EPCM (else #PF with the SGX bit). So no
operand can name the app's memory, another enclave's pages or a TCS. Registers are SGX's:
EREPORT RBX=TARGETINFO, RCX=REPORTDATA, RDX=REPORT; EGETKEY RBX=KEYREQUEST, RCX=key (RAX = 0 or
an SGX error code, ZF set on error); VerifyReport RBX=REPORT (RAX = 0 or SGX_MAC_COMPARE_FAIL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperenclave.platform.cpu import SecondStageFault
from hyperenclave.platform.paging import ACCESS_READ, ACCESS_WRITE, PageFault

from .gu_enclave import ENCLU_EGETKEY, ENCLU_EREPORT
from .hypercall import HypercallCode
from .keys import KEY_SIZE, PlatformKeys
from .quote import REPORT_DATA_SIZE
from .sgx import (PAGE_SIZE, Attributes, KeyRequest, PageFlags, PageType, Report, SgxError,
                  SgxErrorCode, SgxFault, SgxStructureError, TargetInfo)

if TYPE_CHECKING:
    from hyperenclave.platform.cpu import VCpu

    from .epcm import Epcm
    from .gu_enclave import EnclaveRunner, Thread

HC_VERIFY_REPORT = HypercallCode.ENCLAVE_VERIFY_REPORT
HC_GET_KEY = HypercallCode.ENCLAVE_GET_KEY
HC_REPORT = HypercallCode.ENCLAVE_REPORT
RFLAGS_ZF = 1 << 6
RFLAGS_STATUS = 0x8D5                    # CF, PF, AF, ZF, SF, OF: cleared by EGETKEY


class KeyLeaves:
    """The key and report leaves of one monitor, over its enclaves and platform keys."""

    def __init__(self, runner: "EnclaveRunner", epcm: "Epcm", keys: PlatformKeys) -> None:
        self.runner = runner
        self.epcm = epcm
        self.keys = keys

    def handles(self, enclu: bool, rax: int) -> bool:
        """Whether this is one of ours: an ENCLU leaf or the HyperEnclave hypercall for it."""
        if enclu:
            return rax in (ENCLU_EREPORT, ENCLU_EGETKEY)
        return rax in (HC_VERIFY_REPORT, HC_GET_KEY, HC_REPORT)

    def run(self, cpu: "VCpu", rax: int) -> None:
        """Execute the leaf for the thread inside on `cpu`; RIP is the caller's business.
        Raises SgxFault for the #GP/#PF the leaf takes (an AEX)."""
        thread = self.runner.inside[cpu.index]
        if rax in (ENCLU_EREPORT, HC_REPORT):
            self._ereport(cpu, thread)
            if rax == HC_REPORT:
                cpu.set_reg("rax", 0)
        elif rax in (ENCLU_EGETKEY, HC_GET_KEY):
            self._status(cpu, self._egetkey(cpu, thread))
        else:
            self._status(cpu, self._verify_report(cpu, thread))

    # ------------------------------------------------------------------ the leaves
    def _ereport(self, cpu: "VCpu", thread: "Thread") -> None:
        ti_pa = self._operand(cpu, thread, cpu.reg("rbx"), TargetInfo.SIZE, 512, "TARGETINFO")
        data_pa = self._operand(cpu, thread, cpu.reg("rcx"), REPORT_DATA_SIZE, 128, "REPORTDATA")
        out_pa = self._operand(cpu, thread, cpu.reg("rdx"), Report.SIZE, 512, "REPORT",
                               write=True)
        memory = self.runner.memory
        raw = memory.read(ti_pa, TargetInfo.SIZE)
        # EREPORT reads only MEASUREMENT and ATTRIBUTES of TARGETINFO; the rest is not checked
        at = TargetInfo.offset_of("attributes")
        target = TargetInfo(mr_enclave=raw[:32],
                            attributes=Attributes.unpack(raw[at:at + Attributes.SIZE]))
        report = self.keys.ereport(thread.enclave.secs, target,
                                   memory.read(data_pa, REPORT_DATA_SIZE))
        memory.write(out_pa, report.pack())

    def _egetkey(self, cpu: "VCpu", thread: "Thread") -> int:
        req_pa = self._operand(cpu, thread, cpu.reg("rbx"), KeyRequest.SIZE, 512, "KEYREQUEST")
        out_pa = self._operand(cpu, thread, cpu.reg("rcx"), KEY_SIZE, 16, "key output",
                               write=True)
        try:
            request = KeyRequest.unpack(self.runner.memory.read(req_pa, KeyRequest.SIZE))
        except SgxStructureError as err:
            raise SgxFault.gp(f"EGETKEY: {err}") from None
        try:
            key = self.keys.egetkey(thread.enclave.secs, request)
        except SgxFault:
            raise
        except SgxError as err:
            self.runner.log(f"EGETKEY in enclave {thread.enclave.secs_pa:#x}: {err}")
            return int(err.code)
        self.runner.memory.write(out_pa, key)
        return 0

    def _verify_report(self, cpu: "VCpu", thread: "Thread") -> int:
        pa = self._operand(cpu, thread, cpu.reg("rbx"), Report.SIZE, 512, "REPORT")
        try:
            report = Report.unpack(self.runner.memory.read(pa, Report.SIZE))
        except SgxStructureError as err:
            raise SgxFault.gp(f"VerifyReport: {err}") from None
        if self.keys.verify_report(thread.enclave.secs, report):
            return 0
        return int(SgxErrorCode.SGX_MAC_COMPARE_FAIL)

    @staticmethod
    def _status(cpu: "VCpu", code: int) -> None:
        """SGX's status convention: RAX = code, ZF = (code != 0), the other status flags 0."""
        cpu.set_reg("rax", code)
        cpu.set_reg("rflags", cpu.reg("rflags") & ~RFLAGS_STATUS | (RFLAGS_ZF if code else 0))

    # ------------------------------------------------------------------ operands
    def _operand(self, cpu: "VCpu", thread: "Thread", la: int, size: int, align: int, what: str,
                 write: bool = False) -> int:
        """The EPC address of an operand of `size` bytes at enclave linear address `la`."""
        enclave = thread.enclave
        lo, hi = enclave.elrange
        if la % align:
            raise SgxFault.gp(f"{what} at {la:#x} is not {align}-byte aligned")
        if not lo <= la < la + size <= hi:
            raise SgxFault.gp(f"{what} at {la:#x} is outside ELRANGE [{lo:#x}-{hi - 1:#x}]")
        assert la // PAGE_SIZE == (la + size - 1) // PAGE_SIZE   # alignment >= size up to 512
        try:
            pa, _ = cpu.translate(la, ACCESS_WRITE if write else ACCESS_READ, user=True)
        except PageFault as fault:
            raise SgxFault.pf(la, f"{what} at {la:#x} is not mapped in the enclave",
                              error_code=fault.error_code) from None
        except SecondStageFault:
            raise SgxFault.pf(la, f"{what} at {la:#x} is outside the enclave's EPT") from None
        page = pa & ~(PAGE_SIZE - 1)
        entry = self.epcm.get(page) if page in self.epcm else None
        needed = PageFlags.W if write else PageFlags.R
        if entry is None or entry.owner != enclave.secs_pa or \
                entry.page_type != PageType.PT_REG or entry.linear_address != la & ~0xFFF or \
                not entry.flags & needed or entry.blocked or \
                entry.flags & (PageFlags.PENDING | PageFlags.MODIFIED):
            raise SgxFault.pf(la, f"{what} at {la:#x} is not a {'writable' if write else 'readable'}"
                              " REG page of this enclave (EPCM)")
        return pa
