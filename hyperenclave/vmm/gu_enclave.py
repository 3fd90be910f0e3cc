"""Running enclaves the GU-Enclave way: guest ring 3 with the monitor's page table and EPT.

EENTER/ERESUME/EEXIT are not VM switches: on the same vCPU the monitor swaps CR3 (the
enclave's GPT), the second stage (the enclave's EPT: its EPC pages and GPT frames only), IDTR
(limit 0), EFER (SCE clear: no SYSCALL), FS/GS base, and while inside every exception, SYSCALL
and interrupt comes to the monitor (HyperEnclave sets the exception bitmap to all ones). Those
end in an AEX: the enclave's registers go to SSA[CSSA] in EPC, CSSA+1, the app gets a
synthetic state at its AEP with RAX = ERESUME, and the event is delivered to the host at the
AEP (a #PF with a page-aligned CR2), so the host kernel handles it as if the app faulted there.
Register conventions are SGX's: EENTER RBX=TCS, RCX=AEP -> RAX=CSSA, RCX=return address;
EEXIT RBX=target -> RCX=AEP.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from hyperenclave.platform.cpu import PF, SecondStage
from hyperenclave.platform.interrupts import deliver
from hyperenclave.platform.memory import FrameAllocator, PhysicalMemory
from hyperenclave.platform.paging import (ACCESS_READ, ACCESS_WRITE, CR0_WP, EFER_NXE, EFER_SCE,
                                          PageFault)
from hyperenclave.platform.translation_cache import TranslationCache

from .ept import Ept, EptPerm, MemType
from .ept_tlb import EptTlb
from .hypercall import HypercallArgs, HypercallError
from .guest_pt import GuestPageTable
from .sgx import (EXIT_TYPE_HARDWARE, PAGE_SIZE, FPU_STATE_SIZE, ExInfo, FpuState, GprSgx, PageFlags,
                  PageType, SgxFault, Tcs, exit_info, gprsgx_offset)

SHARED_RANGE = struct.Struct("<QQQ")   # HC_SHARED_MEMORY_ADD: {secs, start, end}

if TYPE_CHECKING:
    from hyperenclave.platform.cpu import VCpu

    from .enclave import Enclave, EnclaveManager

ENCLU_EREPORT, ENCLU_EGETKEY, ENCLU_EENTER, ENCLU_ERESUME, ENCLU_EEXIT = 0, 1, 2, 3, 4
HC_ERESUME = 0x8000_0005
TCS_CSSA_OFFSET = 24
PF_P_U = 0b101                # the error code the host sees for an enclave #PF (HyperEnclave)
PF_W, PF_U = 0b10, 0b100
SHARED_MEM_FETCH = 1 << 31    # EXINFO.ERRCD: the #PF was a miss in a shared range (HyperEnclave)
GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15")
#: What EENTER/ERESUME read besides RBX (TCS) and RCX (AEP), in one batch: the app's state
#: they replace (CR0 for the walks' WP input).
OUTSIDE_REGS = ("cr0", "cr3", "fs_base", "gs_base", "rsp", "rbp", "rflags", "idtr", "efer")


@dataclass
class Outside:
    """The app's state EENTER/ERESUME replaced, restored by EEXIT and AEX."""

    cr3: int
    idtr: tuple[int, int]
    efer: int
    fs_base: int
    gs_base: int
    rsp: int
    rbp: int
    rflags: int
    stage: SecondStage
    aep: int
    by_hypercall: bool          # entered with VMCALL (AEX gives RAX = 0x80000005) or ENCLU


@dataclass
class Thread:
    """One logical processor inside an enclave, on one TCS."""

    enclave: "Enclave"
    tcs_la: int
    tcs_pa: int
    outside: Outside
    shared_fetch: bool = False  # its AEX was a miss in a shared range (SHARED_MEM_FETCH)


@dataclass
class EnclaveAddressSpace:
    """The enclave's GPT and EPT, built at EINIT (HyperEnclave maps the GPT frames into the NPT)."""

    gpt: GuestPageTable
    ept: Ept
    shared: list[tuple[int, int]] = field(default_factory=list)   # marshalling buffers
    invalidating: int = 0          # HC 0x103s not yet ended by a 0x104 (HyperEnclave's counter)
    #: what the vCPU's fills found in this address space, valid until the monitor's next INVEPT
    translations: TranslationCache = field(default_factory=TranslationCache)

    def is_shared(self, va: int) -> bool:
        return any(start <= va < end for start, end in self.shared)

    def map_shared_page(self, va: int, gpa: int) -> None:
        """The app's page at `va` (host RAM `gpa`) for the enclave: read/write, never executable."""
        self.gpt.map(va, gpa, writable=True, executable=False)
        self.ept.map(gpa, gpa, PAGE_SIZE, EptPerm.RW, MemType.WB)
        for frame in self.gpt.tables:        # tables the new mapping may have added
            self.ept.map(frame, frame, PAGE_SIZE, EptPerm.R, MemType.WB)

    def unmap_shared_page(self, va: int) -> None:
        """Take the page at `va` out of the enclave's GPT and EPT (the caller does INVEPT)."""
        gpa = self.gpt.unmap(va)
        if gpa is not None:
            self.ept.unmap(gpa, PAGE_SIZE)

    def destroy(self) -> None:
        self.translations.clear()
        self.ept.destroy()
        self.gpt.destroy()


class EnclaveRunner:
    """EENTER, ERESUME, EEXIT and AEX for the enclaves of one monitor."""

    def __init__(self, memory: PhysicalMemory, frames: FrameAllocator, manager: "EnclaveManager",
                 log: Callable[[str], None]) -> None:
        self.memory = memory
        self.frames = frames
        self.manager = manager
        self.log = log
        self.inside: dict[int, Thread] = {}          # vCPU index -> thread
        self.busy_tcs: set[int] = set()
        self.spaces: dict[int, EnclaveAddressSpace] = {}
        self.stages: dict[int, EptTlb] = {}
        #: TCS page -> (its enclave, the TCS as EADD left it): only CSSA changes afterwards
        #: (the enclave cannot map its TCS, the host cannot reach EPC), so entries re-read that
        #: word alone instead of parsing the whole page.
        self._tcs_parsed: dict[int, tuple["Enclave", Tcs]] = {}
        self.aex_count = 0

    # ------------------------------------------------------------------ address spaces
    def build(self, enclave: "Enclave") -> None:
        """EINIT: the enclave's own translation: ELRANGE -> its EPC pages, nothing else."""
        gpt = GuestPageTable(self.memory, self.frames)
        ept = Ept(self.memory, self.frames)
        for la, pa in sorted(enclave.pages.items()):
            entry = self.manager.epcm.get(pa)
            assert entry is not None
            ept.map(pa, pa, PAGE_SIZE, EptPerm.RWX, MemType.WB)
            if entry.page_type == PageType.PT_TCS:
                continue                              # TCS pages are not mapped (SGX)
            gpt.map(la, pa, writable=bool(entry.flags & PageFlags.W),
                    executable=bool(entry.flags & PageFlags.X))
        for frame in gpt.tables:
            ept.map(frame, frame, PAGE_SIZE, EptPerm.R, MemType.WB)
        self.spaces[enclave.secs_pa] = EnclaveAddressSpace(gpt, ept)

    def forget(self, enclave: "Enclave") -> None:
        space = self.spaces.pop(enclave.secs_pa, None)
        self.stages.pop(enclave.secs_pa, None)
        for tcs_la in enclave.tcs:
            self._tcs_parsed.pop(enclave.pages.get(tcs_la, -1), None)
        if space is not None:
            space.destroy()

    # ------------------------------------------------------------------ marshalling buffer
    def hc_shared_memory_add(self, args: HypercallArgs, cpu: "VCpu") -> int:
        """HC 0x101 (HyperEnclave's SharedMemoryAdd): map the app's pages [start, end) into the
        initialized enclave at the same addresses, read/write, never executable, as the app's
        page tables map them now. They must be ordinary host RAM (no EPC, no monitor memory)."""
        gmem = self.manager.guest_memory
        secs_pa, start, end = SHARED_RANGE.unpack(gmem.read(cpu, args.arg0, SHARED_RANGE.size,
                                                            "shared memory range"))
        enclave = self.manager.enclaves.get(secs_pa)
        if enclave is None or not enclave.initialized:
            raise HypercallError(errno.EINVAL, f"{secs_pa:#x} is not an initialized enclave")
        lo, hi = enclave.elrange
        if start % PAGE_SIZE or end % PAGE_SIZE or not start < end or end >> 47:
            raise HypercallError(errno.EINVAL, f"shared range [{start:#x}-{end:#x}) is not "
                                 "page-aligned user memory")
        limit = enclave.secs.ms_buf_size * max(1, len(enclave.tcs))
        if end - start > limit:
            raise HypercallError(errno.EINVAL, f"shared range of {end - start:#x} bytes is more "
                                 f"than ms_buf_size x TCSs ({limit:#x})")
        if start < hi and lo < end:
            raise HypercallError(errno.EINVAL, f"shared range [{start:#x}-{end:#x}) overlaps "
                                 f"ELRANGE [{lo:#x}-{hi:#x})")
        space = self.spaces[secs_pa]
        if any(start < e and s < end for s, e in space.shared):
            raise HypercallError(errno.EBUSY, f"[{start:#x}-{end:#x}) is already shared")
        if space.invalidating:
            raise HypercallError(errno.EBUSY, f"enclave {secs_pa:#x}: the app's memory is being "
                                 "invalidated (HC 0x103 without 0x104)")
        frames = []
        for va in range(start, end, PAGE_SIZE):
            try:
                gpa = cpu.guest_physical(va, ACCESS_WRITE, user=True) & ~0xFFF
            except PageFault:
                raise HypercallError(errno.EFAULT, f"shared page {va:#x} is not a writable "
                                     "user page of the app") from None
            gmem.check_gpa(gpa, PAGE_SIZE, f"shared page {va:#x}")
            frames.append((va, gpa))
        for va, gpa in frames:
            space.map_shared_page(va, gpa)
        space.shared.append((start, end))
        self.invept(secs_pa)
        self.log(f"enclave {secs_pa:#x}: shared [{start:#x}-{end:#x}) with the app")
        return 0

    def invept(self, secs_pa: int) -> None:
        """INVEPT for one enclave's EPT (and its page table) after its mappings changed: the
        cached guest-physical and combined translations go. (No vCPU runs in the enclave:
        its translations left the CPU's TLB when it exited.)"""
        stage = self.stages.get(secs_pa)
        if stage is not None:
            stage.forget()
        space = self.spaces.get(secs_pa)
        if space is not None:
            space.translations.clear()

    # ------------------------------------------------------------------ entry
    def _tcs(self, cpu: "VCpu", tcs_la: int) -> tuple["Enclave", int, Tcs]:
        """The TCS named by the app's RBX, found through the app's own page tables."""
        if tcs_la % PAGE_SIZE:
            raise SgxFault.gp(f"TCS {tcs_la:#x} is not page-aligned")
        try:
            tcs_pa = cpu.guest_physical(tcs_la, ACCESS_READ) & ~0xFFF
        except PageFault as fault:
            raise SgxFault.pf(tcs_la, f"TCS {tcs_la:#x} is not mapped in the app",
                              error_code=fault.error_code) from None
        entry = self.manager.epcm.get(tcs_pa) if tcs_pa in self.manager.epcm else None
        if entry is None or entry.page_type != PageType.PT_TCS or entry.linear_address != tcs_la:
            # SDM EENTER/ERESUME: outside the EPC, EPCM not VALID, PT not PT_TCS or another
            # ENCLAVEADDRESS: #PF(DS:RBX), EPCM-induced
            raise SgxFault.pf(tcs_la, f"{tcs_la:#x} (-> {tcs_pa:#x}) is not a TCS of an enclave")
        enclave = self.manager.enclaves.get(entry.owner)
        if enclave is None or not enclave.initialized or enclave.destroying:
            raise SgxFault.gp(f"the enclave of TCS {tcs_la:#x} is not initialized")
        return enclave, tcs_pa, self._read_tcs(enclave, tcs_pa)

    def _read_tcs(self, enclave: "Enclave", tcs_pa: int) -> Tcs:
        """The TCS at `tcs_pa` (a TCS page of `enclave`) with its current CSSA."""
        cached = self._tcs_parsed.get(tcs_pa)
        if cached is None or cached[0] is not enclave:
            cached = self._tcs_parsed[tcs_pa] = (enclave, Tcs.unpack(self.memory.read(tcs_pa,
                                                                                      PAGE_SIZE)))
        tcs = cached[1]
        tcs.cssa = self.memory.read_u32(tcs_pa + TCS_CSSA_OFFSET)
        return tcs

    def eenter(self, cpu: "VCpu", rip: int, length: int, by_hypercall: bool) -> None:
        """EENTER from the app at `rip` (instruction of `length` bytes)."""
        tcs_la, aep, *app = cpu.read_registers("rbx", "rcx", *OUTSIDE_REGS)
        enclave, tcs_pa, tcs = self._check_entry(cpu, tcs_la)
        if tcs.cssa >= tcs.nssa:
            raise SgxFault.gp(f"TCS {tcs_la:#x}: CSSA {tcs.cssa} >= NSSA {tcs.nssa}")
        self._switch_in(cpu, enclave, tcs_la, tcs_pa, tcs, aep, by_hypercall, app,
                        rax=tcs.cssa, rcx=rip + length, rip=enclave.secs.base + tcs.oentry)

    def eresume(self, cpu: "VCpu", rip: int, length: int, by_hypercall: bool,
                map_shared: bool = True) -> bool:
        """ERESUME; without `map_shared`, a resume that must first map a shared page again
        (SHARED_MEM_FETCH) is not done: False, nothing changed."""
        tcs_la, aep, *app = cpu.read_registers("rbx", "rcx", *OUTSIDE_REGS)
        enclave, tcs_pa, tcs = self._check_entry(cpu, tcs_la)
        if tcs.cssa == 0:
            raise SgxFault.gp(f"ERESUME on TCS {tcs_la:#x} with CSSA 0")
        frame = self._ssa_frame_pa(enclave, tcs, tcs.cssa - 1)
        gpr = GprSgx.unpack(self.memory.read(frame, GprSgx.SIZE))
        if not map_shared and ExInfo.unpack(self.memory.read(frame - ExInfo.SIZE, ExInfo.SIZE)
                                            ).errcd & SHARED_MEM_FETCH:
            return False
        self._sync_shared_fetch(cpu, enclave, frame - ExInfo.SIZE)
        fpu = FpuState.unpack(self.memory.read(self._xsave_pa(enclave, tcs, tcs.cssa - 1),
                                               FPU_STATE_SIZE))
        self._set_cssa(tcs_pa, tcs.cssa - 1)
        self._switch_in(cpu, enclave, tcs_la, tcs_pa, tcs, aep, by_hypercall, app,
                        **{name: getattr(gpr, name) for name in GPRS}, rflags=gpr.rflags,
                        fs_base=gpr.fsbase, gs_base=gpr.gsbase, rip=gpr.rip)
        self._load_fpu(cpu, fpu)
        return True

    def _check_entry(self, cpu: "VCpu", tcs_la: int) -> tuple["Enclave", int, Tcs]:
        if cpu.index in self.inside:
            raise SgxFault.gp("EENTER/ERESUME from inside an enclave")
        enclave, tcs_pa, tcs = self._tcs(cpu, tcs_la)
        if tcs_pa in self.busy_tcs:
            raise SgxFault.gp(f"TCS {tcs_la:#x} is busy (another thread is inside on it)")
        return enclave, tcs_pa, tcs

    def _switch_in(self, cpu: "VCpu", enclave: "Enclave", tcs_la: int, tcs_pa: int, tcs: Tcs,
                   aep: int, by_hypercall: bool, app: list, **enclave_regs: int) -> None:
        """Into the enclave's address space; `app` holds OUTSIDE_REGS as the entry read them,
        `enclave_regs` what the leaf loads (written with the switch in one batch)."""
        cr0, cr3, fs_base, gs_base, rsp, rbp, rflags, idtr, efer = app
        outside = Outside(cr3, idtr, efer, fs_base, gs_base, rsp, rbp, rflags, cpu.second_stage,
                          aep, by_hypercall)
        self.inside[cpu.index] = Thread(enclave, tcs_la, tcs_pa, outside)
        self.busy_tcs.add(tcs_pa)
        enclave.threads_inside += 1
        space = self.spaces[enclave.secs_pa]
        stage = self.stages.get(enclave.secs_pa)
        if stage is None:
            stage = self.stages[enclave.secs_pa] = EptTlb(space.ept.walker, space.ept.eptp,
                                                          cpu.flush_tlb)
        cpu.second_stage = stage
        base = enclave.secs.base
        cpu.write_registers(**{"cr3": space.gpt.root, "fs_base": base + tcs.ofsbase,
                               "gs_base": base + tcs.ogsbase, "idtr": (0, 0),
                               "efer": efer & ~EFER_SCE, **enclave_regs})
        # The enclave's earlier translations are still good unless the monitor changed its
        # tables since (INVEPT clears them) or the walks' other inputs differ now.
        cpu.switch_address_space(space.translations.attach_under(cr0 & CR0_WP, efer & EFER_NXE))

    # ------------------------------------------------------------------ exit
    def eexit(self, cpu: "VCpu") -> None:
        """EEXIT: back to the app at RBX, RCX = AEP; the enclave scrubs its own registers."""
        (target,) = cpu.read_registers("rbx")
        self._switch_out(cpu, rcx=self.inside[cpu.index].outside.aep, rip=target)

    def aex(self, cpu: "VCpu", vector: int, rip: int, address: int | None = None,
            error_code: int | None = None) -> Thread:
        """Asynchronous exit: save the enclave's state in SSA[CSSA], leave with a synthetic
        state at the AEP. The caller then delivers the event to the host. A #PF in a shared
        range is recorded in MISC.EXINFO with SHARED_MEM_FETCH (HyperEnclave), so that
        ERESUME maps the app's page again once the host has faulted it in."""
        thread = self.inside[cpu.index]
        enclave = thread.enclave
        tcs = self._read_tcs(enclave, thread.tcs_pa)
        frame = self._ssa_frame_pa(enclave, tcs, tcs.cssa)
        thread.shared_fetch = vector == PF and address is not None and \
            self.spaces[enclave.secs_pa].is_shared(address)
        exinfo = ExInfo(address, (error_code or 0) | SHARED_MEM_FETCH) if thread.shared_fetch \
            else ExInfo()
        self.memory.write(frame - ExInfo.SIZE, exinfo.pack())
        *gprs, rflags, fs_base, gs_base = cpu.read_registers(*GPRS, "rflags", "fs_base", "gs_base")
        gpr = GprSgx(**dict(zip(GPRS, gprs)), rflags=rflags, rip=rip,
                     ursp=thread.outside.rsp, urbp=thread.outside.rbp,
                     exitinfo=exit_info(vector, EXIT_TYPE_HARDWARE) if vector < 32 else 0,
                     fsbase=fs_base, gsbase=gs_base)
        self.memory.write(frame, gpr.pack())
        # XFRM x87|SSE: the x87 and SSE state go into the frame's XSAVE area, then to their
        # initial values (XRSTOR of the init state, as an AEX does)
        self.memory.write(self._xsave_pa(enclave, tcs, tcs.cssa),
                          FpuState(*cpu.x87_registers(), *cpu.sse_registers()).pack())
        self._load_fpu(cpu, FpuState())
        self._set_cssa(thread.tcs_pa, tcs.cssa + 1)
        outside = thread.outside
        synthetic = dict.fromkeys(GPRS, 0)     # nothing of the enclave's state leaks
        synthetic.update(rax=HC_ERESUME if outside.by_hypercall else ENCLU_ERESUME,
                         rbx=thread.tcs_la, rcx=outside.aep, rsp=outside.rsp, rbp=outside.rbp)
        self._switch_out(cpu, **synthetic, rflags=outside.rflags, rip=outside.aep)
        self.aex_count += 1
        return thread

    def _switch_out(self, cpu: "VCpu", **app_regs: int) -> Thread:
        """Back to the app's address space, loading `app_regs` with it in one batch."""
        thread = self.inside.pop(cpu.index)
        self.busy_tcs.discard(thread.tcs_pa)
        thread.enclave.threads_inside -= 1
        o = thread.outside
        cpu.second_stage = o.stage
        cpu.write_registers(**{"cr3": o.cr3, "fs_base": o.fs_base, "gs_base": o.gs_base,
                               "idtr": o.idtr, "efer": o.efer, **app_regs})
        # Back in the app, which has not run the kernel since it entered: what it translated
        # before is still good (an AEX's delivery to the host kernel drops it).
        cpu.switch_address_space(cpu.user_translations)
        return thread

    def deliver_to_host(self, cpu: "VCpu", vector: int, error_code: int | None,
                        address: int | None, external: bool, shared_fetch: bool = False) -> None:
        """The event that caused an AEX, as the host sees it: at the AEP, CR2 page-aligned; a
        #PF is P|U (a protection fault the host cannot fix), except a miss in a shared range,
        which the host sees as the not-present fault it is, so that it can fault its page in."""
        rip = cpu.rip
        if vector == PF:
            cpu.set_reg("cr2", (address or 0) & ~0xFFF)
            error_code = (error_code or 0) & (PF_W | PF_U) if shared_fetch else PF_P_U
        deliver(cpu, vector, rip=rip, error_code=error_code, external=external)

    def _sync_shared_fetch(self, cpu: "VCpu", enclave: "Enclave", exinfo_pa: int) -> None:
        """ERESUME after a SHARED_MEM_FETCH AEX: map the app's page at MADDR again, as the app's
        page table maps it now, unless an invalidation is in progress (then the enclave just
        faults again). EXINFO is cleared either way (HyperEnclave's `EnclaveThread::resume`)."""
        exinfo = ExInfo.unpack(self.memory.read(exinfo_pa, ExInfo.SIZE))
        if not exinfo.errcd & SHARED_MEM_FETCH:
            return
        self.memory.write(exinfo_pa, ExInfo().pack())
        space = self.spaces[enclave.secs_pa]
        va = exinfo.maddr & ~0xFFF
        if space.invalidating or not space.is_shared(va):
            return
        try:
            gpa = cpu.guest_physical(va, ACCESS_WRITE, user=True) & ~0xFFF
        except PageFault:
            return                            # the app has no page there: the enclave faults again
        try:
            self.manager.guest_memory.check_gpa(gpa, PAGE_SIZE, f"shared page {va:#x}")
        except HypercallError as err:
            raise SgxFault.gp(f"ERESUME: {err}") from None
        space.map_shared_page(va, gpa)
        self.invept(enclave.secs_pa)
        self.log(f"enclave {enclave.secs_pa:#x}: shared page {va:#x} -> {gpa:#x} mapped again "
                 "(SHARED_MEM_FETCH)")

    # ------------------------------------------------------------------ SSA / TCS
    def _ssa_frame_pa(self, enclave: "Enclave", tcs: Tcs, index: int) -> int:
        frame_pages = enclave.secs.ssa_frame_size
        la = enclave.secs.base + tcs.ossa + index * frame_pages * PAGE_SIZE
        gpr_la = la + gprsgx_offset(frame_pages)
        pa = enclave.pages.get(gpr_la & ~0xFFF)
        if pa is None:
            raise SgxFault.gp(f"SSA frame {index} at {la:#x} is not an enclave page")
        return pa | (gpr_la & 0xFFF)

    def _xsave_pa(self, enclave: "Enclave", tcs: Tcs, index: int) -> int:
        """The XSAVE area that begins SSA frame `index` (SDM 37.9.1)."""
        la = enclave.secs.base + tcs.ossa + index * enclave.secs.ssa_frame_size * PAGE_SIZE
        pa = enclave.pages.get(la)
        if pa is None:
            raise SgxFault.gp(f"SSA frame {index} at {la:#x} is not an enclave page")
        return pa

    @staticmethod
    def _load_fpu(cpu: "VCpu", fpu: FpuState) -> None:
        cpu.set_x87_registers(fpu.fcw, fpu.fsw, fpu.ftw, fpu.fop, fpu.fip, fpu.fdp, fpu.st)
        cpu.set_sse_registers(fpu.mxcsr, fpu.xmm)

    def _set_cssa(self, tcs_pa: int, cssa: int) -> None:
        self.memory.write_u32(tcs_pa + TCS_CSSA_OFFSET, cssa)
