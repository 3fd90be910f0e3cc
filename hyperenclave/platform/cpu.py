"""The vCPU: Unicorn executes guest code; this class does what Unicorn leaves undone.

Unicorn runs in `UC_TLB_VIRTUAL` mode, so every TLB miss comes to `_tlb_fill`, which walks the
guest's page tables and then the second translation stage (identity before the monitor
launches, the EPT after). Events Unicorn reports but does not carry out (exceptions, SYSCALL,
HLT, VMCALL/ENCLU) stop the current slice and are finished here, outside `emu_start`, where the
privilege level and the stack can be changed safely.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from unicorn import (UC_ARCH_X86, UC_ERR_EXCEPTION, UC_ERR_FETCH_UNMAPPED, UC_ERR_INSN_INVALID,
                     UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_HOOK_INSN,
                     UC_HOOK_INSN_INVALID, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_64,
                     UC_PROT_ALL, UC_TLB_VIRTUAL, Uc, UcError)
from unicorn import x86_const as x86
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_ERR_OK
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC, UcRegMMR, UcRegMSR
from unicorn.unicorn_py3.unicorn import uccallback, uclib

from . import paging
from .faultaddr import faulting_address
from .memory import MemoryError_, PhysicalMemory
from .paging import ACCESS_FETCH, ACCESS_READ, ACCESS_WRITE, PageFault
from .translation_cache import TranslationCache
from .uc_state import CpuStatePatcher

if TYPE_CHECKING:
    from .devices.bus import IoBus

MSR_EFER, MSR_STAR, MSR_LSTAR, MSR_FMASK = 0xC0000080, 0xC0000081, 0xC0000082, 0xC0000084
RFLAGS_CF, RFLAGS_PF, RFLAGS_AF, RFLAGS_ZF, RFLAGS_SF = 1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7
RFLAGS_OF = 1 << 11
RFLAGS_IF = 1 << 9
CR4_VMXE = 1 << 13
SYSCALL_INSN = b"\x0f\x05"
RFLAGS_STATUS = 0x8D5                    # CF PF AF ZF SF OF
CPUID1_ECX_VMX = 1 << 5
RFLAGS_RF = 1 << 16

VMCALL = b"\x0f\x01\xc1"
VMXON = b"\xf3\x0f\xc7"      # F3 0F C7 /6 (ModRM.reg = 6, memory operand)
VMMCALL = b"\x0f\x01\xd9"
ENCLU = b"\x0f\x01\xd7"

# Exception vectors (SDM Vol. 3A 6.3.1).
DE, DB, NMI, BP, OF, BR, UD, NM, DF = 0, 1, 2, 3, 4, 5, 6, 7, 8
TS, NP, SS, GP, PF, MF, AC, MC, XM = 10, 11, 12, 13, 14, 16, 17, 18, 19
EXCEPTIONS_WITH_ERROR_CODE = frozenset({DF, TS, NP, SS, GP, PF, AC})
EXCEPTION_NAMES = {DE: "#DE", DB: "#DB", NMI: "NMI", BP: "#BP", OF: "#OF", BR: "#BR", UD: "#UD",
                   NM: "#NM", DF: "#DF", TS: "#TS", NP: "#NP", SS: "#SS", GP: "#GP", PF: "#PF",
                   MF: "#MF", AC: "#AC", MC: "#MC", XM: "#XM"}

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
REG_IDS: dict[str, int] = {name: getattr(x86, f"UC_X86_REG_{name.upper()}") for name in
                           GPRS + ("rip", "rflags", "cr0", "cr2", "cr3", "cr4", "cs", "ss",
                                   "ds", "es", "fs", "gs", "fs_base", "gs_base")}


class SecondStageFault(Exception):
    """Raised by a second translation stage (the EPT) when it forbids an access.

    The vCPU adds what the exit qualification needs: `linear` (the guest-linear address being
    translated) and `translated` (True for the access itself, False for a guest paging-structure
    access during the walk).
    """

    linear: int | None = None
    translated: bool = True


class SecondStage(Protocol):
    """Guest-physical -> host-physical translation applied after the guest page walk; also the
    page walker's window on guest-physical memory (every table read goes through it, as in
    nested paging), so a stage that caches its translations serves a walk without calls."""

    def translate(self, gpa: int, access: int) -> tuple[int, int]:
        """Return (host-physical page address, PROT_* bits) or raise SecondStageFault."""
        ...

    def read_u64(self, gpa: int) -> int:
        """A guest paging-structure entry; raises SecondStageFault or MemoryError_."""
        ...

    def write_u64(self, gpa: int, value: int) -> None:
        """A guest paging-structure update (A/D bits)."""
        ...


class IdentityStage:
    """Before the monitor launches, guest-physical is host-physical."""

    def __init__(self, memory: PhysicalMemory) -> None:
        self.read_u64 = memory.read_u64
        self.write_u64 = memory.write_u64

    def translate(self, gpa: int, access: int) -> tuple[int, int]:
        return gpa & ~0xFFF, UC_PROT_ALL


class EventKind(enum.Enum):
    """What stopped a slice: the things a hypervisor could intercept."""

    EXCEPTION = "exception"
    SYSCALL = "syscall"
    HLT = "hlt"
    VMCALL = "vmcall"
    ENCLU = "enclu"
    VMXON = "vmxon"
    INTERRUPT = "interrupt"          # an external interrupt about to be delivered
    SECOND_STAGE_FAULT = "second_stage_fault"


@dataclass(slots=True)
class GuestEvent:
    """One event at an instruction boundary, handed to the intercept (monitor) if present."""

    kind: EventKind
    rip: int
    vector: int | None = None
    error_code: int | None = None
    address: int | None = None        # CR2 / linear address of a faulting access; VMXON operand
    access: int | None = None         # paging.ACCESS_*
    fault: Exception | None = None    # second-stage fault details
    instruction: bytes = b""


class Intercept(Protocol):
    """What a monitor plugs into the vCPU when it takes over (VMX non-root operation)."""

    def on_cpuid(self, cpu: "VCpu", leaf: int, subleaf: int) -> tuple[int, int, int, int] | None:
        """Return the four CPUID registers to report, or None to run CPUID natively."""
        ...

    def on_event(self, cpu: "VCpu", event: GuestEvent) -> bool:
        """Handle a guest event as a VM exit. Return False to let the platform handle it natively."""
        ...

    #: Ports whose IN/OUT exit to `on_io` (the VMCS I/O bitmaps); the rest reach devices.
    io_exit_ports: frozenset[int]

    def on_io(self, cpu: "VCpu", port: int, size: int, is_in: bool, value: int) -> int:
        """An I/O-instruction exit (inside emu_start): return the value an IN reads."""
        ...

    def on_triple_fault(self, cpu: "VCpu", check: "MachineCheck") -> None:
        """The guest triple-faulted: a VM exit, not a machine reset. Raise to stop the machine."""
        ...

    def on_vmcall_fast(self, cpu: "VCpu", rip: int, regs: tuple[int, int, int, int]) -> bool:
        """Handle a VMCALL at `rip` inside the CPU loop (RIP advanced, True), or return False
        to have it end the slice and come to `on_event`. `regs`: (RAX, RDI, RSI, CPL)."""
        ...

    def on_enclu_fast(self, cpu: "VCpu", rip: int, regs: tuple[int, int, int, int]) -> bool:
        """The same for ENCLU (an enclave entry or exit that does not fault)."""
        ...


class VmxRoot(Protocol):
    """The software VMXON starts running in VMX root operation (the monitor's code)."""

    def vmxon(self, cpu: "VCpu", region: int) -> None:
        """VMXON succeeded with VMXON region `region`; the CPU is the monitor's from here."""
        ...


class MachineCheck(Exception):
    """The vCPU cannot go on (triple fault, halt with interrupts off, access to no memory)."""

    def __init__(self, reason: str, reset: bool = False, triple_fault: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reset = reset
        self.triple_fault = triple_fault


@dataclass
class CpuStats:
    tlb_fills: int = 0
    slices: int = 0
    exceptions: int = 0
    interrupts: int = 0
    syscalls: int = 0
    replayed_syscalls: int = 0              # SYSCALLs whose hook Unicorn skipped, run again
    exits: dict[str, int] = field(default_factory=dict)


class _FastRegs:
    """One ctypes batch read (or write) of a fixed register list: the binding's reg_read
    costs microseconds per register, too much for the TLB-fill and hypercall paths."""

    def __init__(self, uc: Uc, ids: tuple[int, ...]) -> None:
        n = len(ids)
        self._values = (ctypes.c_uint64 * n)()
        self._ids = (ctypes.c_int * n)(*ids)
        self._ptrs = (ctypes.c_void_p * n)(*(ctypes.addressof(self._values) + 8 * i for i in range(n)))
        self._handle = uc._uch
        self._n = n
        self._read = uclib.uc_reg_read_batch
        self._write = uclib.uc_reg_write_batch

    def read(self) -> tuple[int, ...]:
        self._read(self._handle, self._ids, self._ptrs, self._n)
        return tuple(self._values)

    def write(self, *values: int) -> None:
        v = self._values
        for i, value in enumerate(values):
            v[i] = value & 0xFFFF_FFFF_FFFF_FFFF
        self._write(self._handle, self._ids, self._ptrs, self._n)


def _checked(status: int) -> None:
    """Raise what libunicorn returned unless it is UC_ERR_OK (direct calls bypass the binding)."""
    if status != UC_ERR_OK:
        raise UcError(status)


class _MixedRegs(_FastRegs):
    """A batch that also holds a descriptor-table register ("idtr", "gdtr": (base, limit)) or
    EFER ("efer"): an enclave switch saves and loads them with its GPRs in one call. Those
    few get their own structures; the rest stay one u64 array, as in _FastRegs."""

    def __init__(self, uc: Uc, names: tuple[str, ...]) -> None:
        super().__init__(uc, tuple(x86.UC_X86_REG_MSR if n == "efer" else
                                   _TABLE_REGS.get(n) or REG_IDS[n] for n in names))
        self._tables: list[tuple[int, UcRegMMR]] = []
        self._msrs: list[tuple[int, UcRegMSR]] = []
        for i, name in enumerate(names):
            if name in _TABLE_REGS:
                self._tables.append((i, UcRegMMR()))
                self._ptrs[i] = ctypes.addressof(self._tables[-1][1])
            elif name == "efer":
                msr = UcRegMSR()
                msr.rid = MSR_EFER
                self._msrs.append((i, msr))
                self._ptrs[i] = ctypes.addressof(msr)

    def read(self) -> tuple:
        _checked(self._read(self._handle, self._ids, self._ptrs, self._n))
        values: list = list(self._values)
        for i, mmr in self._tables:
            values[i] = (mmr.base, mmr.limit)
        for i, msr in self._msrs:
            values[i] = msr.val
        return tuple(values)

    def write(self, *values) -> None:
        v = self._values
        for i, value in enumerate(values):
            if type(value) is int:
                v[i] = value & 0xFFFF_FFFF_FFFF_FFFF
        for i, mmr in self._tables:
            mmr.selector, mmr.flags = 0, 0
            mmr.base, mmr.limit = values[i]
        for i, msr in self._msrs:
            msr.val = values[i]
        _checked(self._write(self._handle, self._ids, self._ptrs, self._n))


_TABLE_REGS = {"idtr": x86.UC_X86_REG_IDTR, "gdtr": x86.UC_X86_REG_GDTR}
_X87_CONTROL = (x86.UC_X86_REG_FPCW, x86.UC_X86_REG_FPSW, x86.UC_X86_REG_FPTAG,
                x86.UC_X86_REG_FOP, x86.UC_X86_REG_FIP, x86.UC_X86_REG_FDP)


class _DirectState:
    """IDTR/GDTR, MSRs and the TLB-flush control straight through libunicorn: the binding's
    type dispatch costs microseconds a call, and an ECALL makes a dozen such calls."""

    _FLUSH = UC_CTL_IO_WRITE << 30 | UC_CTL_TLB_FLUSH     # uc_ctl code: write, no arguments

    def __init__(self, uc: Uc) -> None:
        self._handle = uc._uch
        self._mmr = UcRegMMR()
        self._msr = UcRegMSR()
        self._mmr_ref = ctypes.byref(self._mmr)
        self._msr_ref = ctypes.byref(self._msr)

    def table(self, reg: int) -> tuple[int, int]:
        _checked(uclib.uc_reg_read(self._handle, reg, self._mmr_ref))
        return self._mmr.base, self._mmr.limit

    def set_table(self, reg: int, base: int, limit: int) -> None:
        mmr = self._mmr
        mmr.selector, mmr.base, mmr.limit, mmr.flags = 0, base, limit, 0
        _checked(uclib.uc_reg_write(self._handle, reg, self._mmr_ref))

    def msr(self, index: int) -> int:
        self._msr.rid = index
        _checked(uclib.uc_reg_read(self._handle, x86.UC_X86_REG_MSR, self._msr_ref))
        return self._msr.val

    def set_msr(self, index: int, value: int) -> None:
        self._msr.rid, self._msr.val = index, value
        _checked(uclib.uc_reg_write(self._handle, x86.UC_X86_REG_MSR, self._msr_ref))

    def flush_tlb(self) -> None:
        _checked(uclib.uc_ctl(self._handle, self._FLUSH))


class SliceTimer:
    """Ends each `emu_start` at its deadline, at an instruction that ends a translation block
    whenever it can.

    A stop that lands inside a block makes Unicorn skip every INSN hook left in that block, so a
    SYSCALL there becomes a no-op (the caller sees its own syscall number come back). A stop
    from this thread lands mid-block almost always: the thread needs the GIL, and gets it the
    moment a hook (a TLB fill, say) returns to the middle of its block. So at the deadline the
    thread only raises `expired`; the vCPU's hooks on block-ending instructions (IN, OUT, a
    VMCALL or ENCLU handled in the CPU loop; SYSCALL ends the slice anyway) then end the slice
    right there (`end_expired`). Only if none comes within GRACE_S, a stretch without
    SYSCALL, IN or OUT, does the thread stop it itself, and it keeps re-issuing that stop
    every few milliseconds until emu_start has returned: Unicorn's own `timeout=` (a thread
    per call) left about one boot in fifty stuck with hooks skipped, and a later stop unsticks
    it. `disarm()` takes the lock every stop is issued under, so a stop never lands in a later
    slice.
    """

    GRACE_S = 0.002
    RETRY_S = 0.005

    def __init__(self, uc: Uc) -> None:
        self._uc: Uc | None = uc
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._issued = False
        #: The running slice is past its deadline: a block-ending hook should end it.
        self.expired = False
        self.deadlines = 0      # slices still running at their deadline
        self.stops = 0          # slices ended for their deadline (at a hook or by the thread)
        self.forced = 0         # ... of them by the thread, after GRACE_S without such a hook
        self.retries = 0        # extra stops a stuck emu_start needed
        self._thread = threading.Thread(target=self._run, name="vcpu-slice-timer", daemon=True)
        self._thread.start()

    def arm(self, seconds: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._issued = self.expired = False
            self._cond.notify()

    def disarm(self) -> bool:
        """The slice is over; returns whether its deadline (or `cut`) ended it."""
        with self._cond:
            self._deadline = None
            self.expired = False
            return self._issued

    def end_expired(self) -> None:
        """From a hook on an instruction that ends its block: end the slice there if its
        deadline has passed (nothing is left in the block whose hooks a stop could skip)."""
        if not self.expired:                   # every IN and OUT asks: no lock unless due
            return
        with self._cond:
            if self._uc is None or self._deadline is None or not self.expired or self._issued:
                return
            self._issued = True
            self.stops += 1
            self._uc.emu_stop()
            self._deadline = time.monotonic() + self.RETRY_S
            self._cond.notify()

    def cut(self) -> None:
        """End the running slice now, from a hook or another thread (a debugger's stop). It
        counts as the deadline passing, so the vCPU does not mistake it for HLT; nothing
        happens between slices."""
        with self._cond:
            if self._deadline is None or self._uc is None:
                return
            self._issued = self.expired = True
            self._uc.emu_stop()
            self._deadline = time.monotonic() + self.RETRY_S
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._uc = None
            self._deadline = None
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while self._uc is not None:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                if not self.expired:           # the deadline: a block-ending hook ends it
                    self.expired = True
                    self.deadlines += 1
                    self._deadline = time.monotonic() + self.GRACE_S
                    continue
                if self._issued:
                    self.retries += 1
                else:
                    self.stops += 1
                    self.forced += 1
                    self._issued = True
                self._uc.emu_stop()
                self._deadline = time.monotonic() + self.RETRY_S


class VCpu:
    """One x86-64 logical processor of the machine."""

    def __init__(self, memory: PhysicalMemory, io: "IoBus", clock: Callable[[], int],
                 index: int = 0) -> None:
        self.index = index
        self.memory = memory
        self.io = io
        self.clock = clock  # virtual TSC
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_64)
        for region in memory.regions:
            uc.mem_map_ptr(region.base, region.size, UC_PROT_ALL,
                           memory.host_address + region.offset)
        for dev in io.mmio_devices:
            uc.mmio_map(dev.base, dev.size, dev.mmio_read, None, dev.mmio_write, None)
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        # With an (empty) exit list Unicorn ignores emu_start's `until`; otherwise it translates
        # the `until` page on every run, a fill no guest instruction asked for.
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        self.timer = SliceTimer(uc)
        self._regs = _FastRegs(uc, (x86.UC_X86_REG_CR0, x86.UC_X86_REG_CR3, x86.UC_X86_REG_CS))
        self._trap_in = _FastRegs(uc, (x86.UC_X86_REG_RIP, x86.UC_X86_REG_RAX,
                                       x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI, x86.UC_X86_REG_CS))
        self._batches: dict[tuple[str, ...], _FastRegs | _MixedRegs] = {}
        self._hypercall_out = _FastRegs(uc, (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RIP))
        self._patcher = CpuStatePatcher(uc)
        self._direct = _DirectState(uc)
        self.second_stage: SecondStage = IdentityStage(memory)
        self.intercept: Intercept | None = None
        self.vmx_root: VmxRoot | None = None     # what VMXON hands the CPU to (the monitor)
        self.vmx_operation = False               # between VMXON and VMXOFF
        self.stats = CpuStats()
        self.efer = 0
        self.pending_irqs: set[int] = set()
        self.halted = False
        self.in_hlt = False                     # since HLT, until an interrupt is delivered
        self._event: GuestEvent | None = None
        self._code_pages: dict[int, int] = {}     # code page -> host page, this slice only
        self._counted = False                     # translated blocks carry Unicorn's count hook
        self._fill_fault: Exception | None = None
        #: Complete translations of the address space the CPU runs in, when they can outlive
        #: Unicorn's untagged TLB (see translation_cache.py): its refills after a switch are
        #: lookups. An enclave's (only the monitor edits its tables) or `user_translations`.
        self.translation_cache: TranslationCache | None = None
        #: The host app's translations from the moment it left an enclave until the host kernel
        #: next runs: user mode cannot INVLPG or write CR3, so they hold as a VPID-tagged TLB's
        #: would, and an app that calls its enclave in a loop refills by lookup.
        self.user_translations = TranslationCache()
        uc.hook_add(UC_HOOK_TLB_FILL, self._tlb_fill)
        # Order matters. Unicorn walks every INSN hook for each hooked instruction and stops
        # walking once a stop is pending (our slice timer); the stop takes effect only at the
        # end of the translation block, so every hooked instruction left in that block loses
        # all hooks but the first. CPUID does not end a block (a loop of them lost 95% under a
        # stop storm), SYSCALL/IN/OUT do (a stop must land inside the helper itself: 165 in
        # 100,000 SYSCALLs under a stop every 20 us, 0 for IN/OUT), so CPUID goes first. The
        # slice timer now ends slices at IN/OUT/VMCALL/ENCLU hooks, where no block is left
        # (SliceTimer), and stops mid-block only after a stretch without them; a SYSCALL that
        # still loses its hook is mostly recognised after the slice and run again
        # (replay_skipped_syscall). RDTSC comes last: a skipped one reads Unicorn's TSC.
        uc.hook_add(UC_HOOK_INSN, self._cpuid, None, 1, 0, x86.UC_X86_INS_CPUID)
        uc.hook_add(UC_HOOK_INSN, self._syscall, None, 1, 0, x86.UC_X86_INS_SYSCALL)
        uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, x86.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._in, None, 1, 0, x86.UC_X86_INS_IN)
        # The binding has no RDTSC entry in its hook table; register it the way the binding does.
        self._rdtsc_cb = uccallback(uc, HOOK_INSN_CPUID_CFUNC)(lambda uc_, _key: self._rdtsc(uc_, None))
        uc._Uc__do_hook_add(UC_HOOK_INSN, self._rdtsc_cb, 1, 0, x86.UC_X86_INS_RDTSC)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._invalid)
        uc.hook_add(UC_HOOK_INTR, self._intr)

    # ----------------------------------------------------------------- registers
    def reg(self, name: str) -> int:
        return self.uc.reg_read(REG_IDS[name])

    def set_reg(self, name: str, value: int) -> None:
        self.uc.reg_write(REG_IDS[name], value & 0xFFFF_FFFF_FFFF_FFFF)

    def sse_registers(self) -> tuple[int, tuple[int, ...]]:
        """MXCSR and XMM0-15 (what an XSAVE of the SSE component holds)."""
        return (self.uc.reg_read(x86.UC_X86_REG_MXCSR),
                tuple(self.uc.reg_read(x86.UC_X86_REG_XMM0 + i) for i in range(16)))

    def set_sse_registers(self, mxcsr: int, xmm: tuple[int, ...]) -> None:
        self.uc.reg_write(x86.UC_X86_REG_MXCSR, mxcsr)
        for i, value in enumerate(xmm):
            self.uc.reg_write(x86.UC_X86_REG_XMM0 + i, value)

    def x87_registers(self) -> tuple:
        """FCW, FSW, abridged FTW (a bit per physical register: 1 = not empty), FOP, FIP, FDP
        and ST0-ST7 in stack order, as FXSAVE stores them (Unicorn reads the physical
        registers and a full tag word: two bits each, 3 = empty)."""
        uc = self.uc
        fcw, fsw, tags, fop, fip, fdp = (uc.reg_read(r) for r in _X87_CONTROL)
        physical = [uc.reg_read(x86.UC_X86_REG_FP0 + i) for i in range(8)]
        top = fsw >> 11 & 7
        ftw = sum(1 << i for i in range(8) if tags >> 2 * i & 3 != 3)
        return (fcw, fsw, ftw, fop, fip, fdp, tuple(physical[(top + i) & 7] for i in range(8)))

    def set_x87_registers(self, fcw: int, fsw: int, ftw: int, fop: int, fip: int, fdp: int,
                          st: tuple[tuple[int, int], ...]) -> None:
        """The inverse of `x87_registers` (FXRSTOR)."""
        uc = self.uc
        tags = sum((0 if ftw >> i & 1 else 3) << 2 * i for i in range(8))
        for reg, value in zip(_X87_CONTROL, (fcw, fsw, tags, fop, fip, fdp)):
            uc.reg_write(reg, value)
        top = fsw >> 11 & 7
        for i, value in enumerate(st):
            uc.reg_write(x86.UC_X86_REG_FP0 + ((top + i) & 7), value)

    def msr(self, index: int) -> int:
        return self._direct.msr(index)

    def set_msr(self, index: int, value: int) -> None:
        """WRMSR; a new EFER changes the walks, so the TLB goes."""
        self._direct.set_msr(index, value)
        if index == MSR_EFER:
            self.efer = value
            self.flush_tlb()

    @property
    def rip(self) -> int:
        return self.uc.reg_read(x86.UC_X86_REG_RIP)

    @rip.setter
    def rip(self, value: int) -> None:
        self.uc.reg_write(x86.UC_X86_REG_RIP, value)

    @property
    def cpl(self) -> int:
        return self.uc.reg_read(x86.UC_X86_REG_CS) & 3

    def registers(self) -> dict[str, int]:
        """A snapshot for logs, oopses and the console."""
        regs = {name: self.reg(name) for name in REG_IDS}
        regs["efer"] = self.msr(MSR_EFER)
        return regs

    def descriptor_table(self, which: str) -> tuple[int, int]:
        """(base, limit) of the GDTR or IDTR."""
        return self._direct.table(x86.UC_X86_REG_GDTR if which == "gdtr" else x86.UC_X86_REG_IDTR)

    def set_descriptor_table(self, which: str, base: int, limit: int) -> None:
        self._direct.set_table(x86.UC_X86_REG_GDTR if which == "gdtr" else x86.UC_X86_REG_IDTR,
                               base, limit)

    def task_register(self) -> tuple[int, int, int]:
        """(selector, base, limit) of TR."""
        sel, base, limit, _ = self.uc.reg_read(x86.UC_X86_REG_TR)
        return sel, base, limit

    def load_segments(self, cpl: int, cs: int, ss: int) -> None:
        """Switch privilege level and load CS/SS, as SYSCALL, IDT delivery or VM entry do.
        The kernel may run next (and INVLPG or write CR3): the app's kept translations go."""
        if self.translation_cache is self.user_translations:
            self.translation_cache = None
        self.user_translations.clear()
        self._patcher.set_cpl(cpl)
        self.uc.reg_write(x86.UC_X86_REG_CS, cs)
        self.uc.reg_write(x86.UC_X86_REG_SS, ss)

    def hypercall_registers(self) -> tuple[int, int, int, int]:
        """(RAX, RDI, RSI, CPL) in one batch read: the hypercall ABI's inputs."""
        _rip, rax, rdi, rsi, cs = self._trap_in.read()
        return rax, rdi, rsi, cs & 3

    def read_registers(self, *names: str) -> tuple:
        """Several registers in one call into Unicorn: names of REG_IDS, "idtr"/"gdtr" (read
        as (base, limit)) and "efer"."""
        return self._batch(names).read()

    def write_registers(self, **values) -> None:
        """Several registers in one call into Unicorn, in the order given (names as for
        `read_registers`). A new EFER leaves the TLB alone: the caller switches address spaces
        (`switch_address_space`) or flushes."""
        self._batch(tuple(values)).write(*values.values())
        if "efer" in values:
            self.efer = values["efer"]

    def _batch(self, names: tuple[str, ...]) -> _FastRegs | _MixedRegs:
        batch = self._batches.get(names)
        if batch is None:
            if any(n in _TABLE_REGS or n == "efer" for n in names):
                batch = _MixedRegs(self.uc, names)
            else:
                batch = _FastRegs(self.uc, tuple(REG_IDS[n] for n in names))
            self._batches[names] = batch
        return batch

    def complete_hypercall(self, rax: int, rip: int) -> None:
        """RAX = result and RIP past the VMCALL, in one batch write."""
        self._hypercall_out.write(rax, rip)

    def flush_tlb(self) -> None:
        """INVLPG/INVEPT for everything: translation inputs changed outside the guest's view."""
        if self.translation_cache is not None:
            self.translation_cache.clear()
        self.user_translations.clear()
        self._flush_uc_tlb()

    def switch_address_space(self, cache: TranslationCache | None) -> None:
        """CR3/EPTP changed to another address space, as EENTER/EEXIT do: Unicorn's TLB has no
        tags, so it is flushed, but the translations kept for the address space entered
        (`cache`, None if it keeps none) stay valid, like a VPID-tagged TLB's."""
        self.translation_cache = cache
        self._flush_uc_tlb()

    def _flush_uc_tlb(self) -> None:
        self._code_pages.clear()
        self._direct.flush_tlb()

    # ----------------------------------------------------------------- memory as the guest sees it
    def translate(self, vaddr: int, access: int = ACCESS_READ, user: bool | None = None
                  ) -> tuple[int, int]:
        """Guest-virtual -> host-physical through the guest walk and the second stage.

        Raises PageFault or SecondStageFault like the hardware would for that access.
        """
        cr0, cr3, cs = self._regs.read()
        if user is None:
            user = cs & 3 == 3
        stage = self.second_stage
        try:
            if cr0 & paging.CR0_PG:
                gpa, perms, _ = paging.fill(stage, cr3, vaddr, access, user,
                                            (cr0 & paging.CR0_WP) != 0,
                                            (self.efer & paging.EFER_NXE) != 0)
                gpa |= vaddr & 0xFFF
            else:
                gpa, perms = vaddr, UC_PROT_ALL
        except SecondStageFault as fault:       # a paging-structure access the EPT refused
            fault.linear, fault.translated = vaddr, False
            raise
        try:
            hpa, stage_perms = stage.translate(gpa, access)
        except SecondStageFault as fault:
            fault.linear, fault.translated = vaddr, True
            raise
        return hpa | (vaddr & 0xFFF), perms & stage_perms

    def guest_physical(self, vaddr: int, access: int = ACCESS_READ, user: bool | None = None) -> int:
        """Guest-virtual -> guest-physical through the guest's page tables only (what a
        monitor checks a hypercall pointer with). Raises PageFault."""
        cr0, cr3, cs = self._regs.read()
        if not cr0 & paging.CR0_PG:
            return vaddr
        if user is None:
            user = cs & 3 == 3
        gpa, _, _ = paging.fill(self.second_stage, cr3, vaddr, access, user,
                                (cr0 & paging.CR0_WP) != 0, (self.efer & paging.EFER_NXE) != 0)
        return gpa | (vaddr & 0xFFF)

    def read_virtual(self, vaddr: int, length: int, user: bool | None = None) -> bytes:
        out = bytearray()
        while length:
            chunk = min(length, 0x1000 - (vaddr & 0xFFF))
            hpa, _ = self.translate(vaddr, ACCESS_READ, user)
            out += self.memory.read(hpa, chunk)
            vaddr += chunk
            length -= chunk
        return bytes(out)

    def write_virtual(self, vaddr: int, data: bytes, user: bool | None = None) -> None:
        while data:
            chunk = min(len(data), 0x1000 - (vaddr & 0xFFF))
            hpa, _ = self.translate(vaddr, ACCESS_WRITE, user)
            self.memory.write(hpa, data[:chunk])
            vaddr += chunk
            data = data[chunk:]

    # ----------------------------------------------------------------- hooks (inside emu_start)
    def _tlb_fill(self, uc: Uc, vaddr: int, access: int, entry, _user) -> bool:
        self.stats.tlb_fills += 1
        cache = self.translation_cache
        if cache is not None:
            hit = cache.get((vaddr >> 12, access))
            if hit is not None:
                entry.paddr, entry.perms = hit
                return True
        try:
            hpa, perms = self.translate(vaddr, access)
        except MemoryError_:
            # A page table outside RAM: the walk reads all-ones, a reserved-bit fault.
            self._record_fill_fault(PageFault(vaddr, paging.PF_P | paging.PF_RSVD), vaddr, access)
            return False
        except (PageFault, SecondStageFault) as fault:
            self._record_fill_fault(fault, vaddr, access)
            return False
        entry.paddr = hpa & ~0xFFF
        entry.perms = perms
        if cache is not None:
            cache[vaddr >> 12, access] = (hpa & ~0xFFF, perms)
        return True

    def _record_fill_fault(self, fault: Exception, vaddr: int, access: int) -> None:
        if self._fill_fault is None:
            self._fill_fault, self._fill_vaddr, self._fill_access = fault, vaddr, access

    def _in(self, uc: Uc, port: int, size: int, _user) -> int:
        self.timer.end_expired()               # IN ends its block: a safe place to stop
        if self.intercept is not None and port in self.intercept.io_exit_ports:
            return self.intercept.on_io(self, port, size, True, 0)
        return self.io.port_read(port, size)

    def _out(self, uc: Uc, port: int, size: int, value: int, _user) -> None:
        if self.intercept is not None and port in self.intercept.io_exit_ports:
            self.intercept.on_io(self, port, size, False, value)
        else:
            self.io.port_write(port, size, value)
        if self.io.stop_requested:
            uc.emu_stop()
        else:
            self.timer.end_expired()           # OUT ends its block: a safe place to stop

    def _cpuid(self, uc: Uc, _user) -> int:
        leaf = uc.reg_read(x86.UC_X86_REG_RAX) & 0xFFFF_FFFF
        sub = uc.reg_read(x86.UC_X86_REG_RCX) & 0xFFFF_FFFF
        result = self.intercept.on_cpuid(self, leaf, sub) if self.intercept else None
        if result is None and leaf == 1:
            # Bare metal: Unicorn's model sets the hypervisor-present bit (ECX[31]); clear it.
            # This CPU has VMX (ECX[5]): VMXON is how the monitor takes over.
            eax, ebx, ecx, edx = _native_cpuid(1)
            result = (eax, ebx, (ecx & ~(1 << 31)) | CPUID1_ECX_VMX, edx)
        if result is None:
            return 0
        for reg, val in zip((x86.UC_X86_REG_RAX, x86.UC_X86_REG_RBX, x86.UC_X86_REG_RCX,
                             x86.UC_X86_REG_RDX), result):
            uc.reg_write(reg, val & 0xFFFF_FFFF)
        return 1

    def _rdtsc(self, uc: Uc, _user) -> int:
        tsc = self.clock()
        uc.reg_write(x86.UC_X86_REG_RAX, tsc & 0xFFFF_FFFF)
        uc.reg_write(x86.UC_X86_REG_RDX, tsc >> 32)
        return 1

    def _syscall(self, uc: Uc, _user) -> None:
        self._event = GuestEvent(EventKind.SYSCALL, uc.reg_read(x86.UC_X86_REG_RIP))
        uc.emu_stop()

    def _invalid(self, uc: Uc, _user) -> bool:
        rip, rax, rdi, rsi, cs = self._trap_in.read()
        insn = self._trap_insn(rip)
        if insn is not None:
            regs = (rax, rdi, rsi, cs & 3)
            fast = self.intercept.on_enclu_fast if insn == ENCLU else self.intercept.on_vmcall_fast
            if fast(self, rip, regs):
                self.timer.end_expired()       # between blocks (the #UD path): safe to stop
                return True   # handled; Unicorn goes on at the RIP the monitor set
        try:
            insn = self.read_virtual(rip, 3)
        except (PageFault, SecondStageFault):
            insn = b""
        kind = {VMCALL: EventKind.VMCALL, VMMCALL: EventKind.VMCALL,
                ENCLU: EventKind.ENCLU}.get(insn, EventKind.EXCEPTION)
        address = None
        if insn == VMXON:
            decoded = vmxon_operand(self, rip)
            if decoded is not None:
                kind, (insn, address) = EventKind.VMXON, decoded
        self._event = GuestEvent(kind, rip, vector=UD, instruction=insn, address=address)
        return False  # end the slice; the event is finished outside emu_start

    def _trap_insn(self, rip: int) -> bytes | None:
        """VMCALL/VMMCALL/ENCLU at `rip` under a monitor, found without a page walk when this
        slice already walked to that code page or the attached translation cache kept the fill
        of its fetch: a hypercall or ECALL loop pays for one walk, not one each. (The page was
        just fetched from, so its mapping is the one Unicorn's TLB holds.)"""
        if self.intercept is None:
            return None
        key = rip >> 12
        hpa = self._code_pages.get(key)
        if hpa is None and self.translation_cache is not None:
            hit = self.translation_cache.get((key, ACCESS_FETCH))   # the fill of this fetch
            hpa = None if hit is None else hit[0]
        if hpa is None:
            try:
                hpa = self.translate(rip & ~0xFFF, ACCESS_FETCH)[0]
            except (PageFault, SecondStageFault, MemoryError_):
                return None
            self._code_pages[key] = hpa
        if (rip & 0xFFF) > 0xFFD:
            return None                       # crosses into the next page: the slow path
        insn = self.memory.read(hpa | (rip & 0xFFF), 3)
        return insn if insn in (VMCALL, VMMCALL, ENCLU) else None

    def _intr(self, uc: Uc, intno: int, _user) -> None:
        self._event = GuestEvent(EventKind.EXCEPTION, uc.reg_read(x86.UC_X86_REG_RIP), vector=intno)
        uc.emu_stop()

    # ----------------------------------------------------------------- running
    def run_slice(self, timeout_us: int, step: bool = False) -> None:
        """Run guest code for up to `timeout_us` (one instruction with `step`, as with
        RFLAGS.TF), then finish whatever stopped it."""
        self.stats.slices += 1
        if not step or self.in_hlt:
            # A debugger's single step leaves interrupts pending (QEMU's SSTEP_NOIRQ), except
            # the one that ends a HLT: nothing else can.
            self._deliver_pending_irq()
        if self.halted:
            return
        self._event = None
        self._fill_fault = None
        self._code_pages.clear()
        # The fill path needs EFER.NXE on every miss; the guest may have changed EFER with
        # wrmsr since the last slice, so read it once here rather than once per fill.
        self.efer = self.msr(MSR_EFER)
        start_rip = self.rip
        if step != self._counted:
            # Unicorn counts instructions with a code hook compiled into each block: blocks
            # translated without it never stop a counted run, so switching drops them.
            self._counted = step
            self.uc.ctl_flush_tb()
        self.timer.arm(timeout_us / 1e6)
        try:
            self.uc.emu_start(start_rip, 0, count=1 if step else 0)
        except UcError as err:
            self.timer.disarm()
            self._on_uc_error(err)
        else:
            timed_out = self.timer.disarm()
            if self._event is None and not self.io.stop_requested and not timed_out:
                self._check_hlt(start_rip if step else None)
            if self._event is None:
                self.replay_skipped_syscall()
        event, self._event = self._event, None
        if event is not None:
            try:
                self.dispatch(event)
            except MachineCheck as check:
                if not (check.triple_fault and self.intercept is not None):
                    raise
                self.intercept.on_triple_fault(self, check)

    def replay_skipped_syscall(self) -> bool:
        """A stop that was pending while a SYSCALL's block ran (the slice timer fired during
        an earlier hook of that block, a TLB fill say) makes Unicorn skip the SYSCALL hook,
        which comes second (see __init__): the instruction then only advances RIP, and the block
        and the slice end right after it. Recognised after the slice and run again: no event,
        CPL 3, RIP just past `0F 05`, and not the state a return from that SYSCALL leaves
        (SYSRET sets RIP = RCX and RFLAGS from R11; the kernel's other return paths restore
        both). A skipped SYSCALL in a tight loop can still look returned-from (the previous
        round's RCX, the same status flags): that case stays unrecognised."""
        rip, rcx, r11, rflags, cs = self.read_registers("rip", "rcx", "r11", "rflags", "cs")
        if cs & 3 != 3 or (rcx == rip and not (rflags ^ r11) & RFLAGS_STATUS):
            return False
        try:
            if self.read_virtual(rip - 2, 2) != SYSCALL_INSN:
                return False
        except (PageFault, SecondStageFault, MemoryError_):
            return False
        self.stats.replayed_syscalls += 1
        self.write_registers(rip=rip - 2)
        return True

    def _on_uc_error(self, err: UcError) -> None:
        rip = self.rip
        if err.errno == UC_ERR_EXCEPTION and self._fill_fault is not None:
            fault, self._fill_fault = self._fill_fault, None
            address = self._exact_address(rip, self._fill_vaddr, self._fill_access)
            if isinstance(fault, PageFault):
                self._event = GuestEvent(EventKind.EXCEPTION, rip, vector=PF,
                                         error_code=fault.error_code, address=address)
            else:
                self._event = GuestEvent(EventKind.SECOND_STAGE_FAULT, rip, fault=fault,
                                         address=address, access=self._fill_access)
        elif err.errno == UC_ERR_INSN_INVALID:
            if self._event is None:
                self._event = GuestEvent(EventKind.EXCEPTION, rip, vector=UD)
        elif err.errno in (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_FETCH_UNMAPPED):
            raise MachineCheck(f"access to non-existent physical memory at rip {rip:#x} ({err})")
        elif self._event is None:
            raise MachineCheck(f"CPU stopped with {err} at rip {rip:#x}")

    def _exact_address(self, rip: int, page: int, access: int) -> int:
        """The fill only saw the page; the instruction at RIP tells the byte."""
        if access == ACCESS_FETCH:
            return rip if rip & ~0xFFF == page else page
        try:
            code = self.read_virtual(rip, 15)
        except (PageFault, SecondStageFault, MemoryError_):
            try:
                code = self.read_virtual(rip, 0x1000 - (rip & 0xFFF))
            except (PageFault, SecondStageFault, MemoryError_):
                return page
        return faulting_address(code, rip, page, self._reg_by_name)

    def _reg_by_name(self, name: str) -> int:
        return self.reg(name) if name in REG_IDS else 0

    def _check_hlt(self, stepped_from: int | None = None) -> None:
        """`hlt` ends emu_start quietly (no hook): was the last instruction one? A single step
        also ends quietly, so there only a one-byte step from `stepped_from` can be HLT."""
        rip = self.rip
        if stepped_from is not None and rip != stepped_from + 1:
            return
        try:
            if self.read_virtual(rip - 1, 1) != b"\xf4":
                return
        except (PageFault, SecondStageFault):
            return
        self._event = GuestEvent(EventKind.HLT, rip - 1)

    def dispatch(self, event: GuestEvent) -> None:
        """Give the event to the monitor if one is intercepting, else do what bare metal does."""
        if event.kind is EventKind.EXCEPTION and event.vector in EXCEPTIONS_WITH_ERROR_CODE \
                and event.error_code is None:
            event.error_code = self._patcher.take_exception()
        elif event.kind is EventKind.EXCEPTION:
            self._patcher.take_exception()
        if self.intercept is not None and self.intercept.on_event(self, event):
            return
        self.handle_natively(event)

    def handle_natively(self, event: GuestEvent) -> None:
        from .interrupts import deliver  # the IDT path is the platform's own
        if event.kind is EventKind.SYSCALL:
            self.stats.syscalls += 1
            self._do_syscall()
        elif event.kind is EventKind.HLT:
            if not self.reg("rflags") & RFLAGS_IF:
                raise MachineCheck(f"hlt with interrupts disabled at rip {event.rip:#x}")
            self.halted = self.in_hlt = True
        elif event.kind in (EventKind.VMCALL, EventKind.ENCLU):
            self.stats.exceptions += 1
            deliver(self, UD, rip=event.rip)
        elif event.kind is EventKind.VMXON:
            self._vmxon(event)
        elif event.kind is EventKind.EXCEPTION:
            self.stats.exceptions += 1
            software = event.vector not in range(32) or event.vector in (BP, OF)
            if event.vector == PF:
                self.set_reg("cr2", event.address or 0)
            deliver(self, event.vector, error_code=event.error_code, rip=event.rip,
                    software=software)
        elif event.kind is EventKind.SECOND_STAGE_FAULT:
            raise MachineCheck(f"second-stage fault with no monitor: {event.fault}")
        else:
            raise MachineCheck(f"unhandled event {event.kind}")

    def _vmxon(self, event: GuestEvent) -> None:
        """VMXON m64 (SDM Vol. 3C 31.3): the checks, then the CPU belongs to `vmx_root`."""
        from .interrupts import deliver
        if self.vmx_root is None or not self.reg("cr4") & CR4_VMXE:
            deliver(self, UD, rip=event.rip)
            return
        if self.cpl != 0:
            deliver(self, GP, rip=event.rip, error_code=0)
            return
        self.rip = event.rip + len(event.instruction)
        try:
            region = int.from_bytes(self.read_virtual(event.address or 0, 8), "little")
        except PageFault as fault:
            self.rip = event.rip
            self.set_reg("cr2", fault.address)
            deliver(self, PF, rip=event.rip, error_code=fault.error_code)
            return
        if region & 0xFFF or not self.memory.is_ram(region, 0x1000) \
                or self.memory.read(region, 4) != VMCS_REVISION_ID.to_bytes(4, "little"):
            self.vm_fail_invalid()
            return
        self.vmx_operation = True
        self.vmx_root.vmxon(self, region)

    def vm_fail_invalid(self) -> None:
        """VMfailInvalid: CF=1, PF/AF/ZF/SF/OF=0 (SDM Vol. 3C 31.2)."""
        flags = self.reg("rflags") & ~(RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF)
        self.set_reg("rflags", flags | RFLAGS_CF)

    def vm_succeed(self) -> None:
        flags = self.reg("rflags") & ~(RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF
                                       | RFLAGS_OF)
        self.set_reg("rflags", flags)

    def _do_syscall(self) -> None:
        """SYSCALL as the SDM defines it; Unicorn only calls the hook."""
        efer = self.msr(MSR_EFER)
        rip = self.rip  # Unicorn reports the instruction after SYSCALL
        if not efer & paging.EFER_SCE:
            from .interrupts import deliver
            deliver(self, UD, rip=rip - 2)
            return
        star = self.msr(MSR_STAR)
        rflags = self.reg("rflags")
        self.set_reg("rcx", rip)
        self.set_reg("r11", rflags & ~RFLAGS_RF)
        self.set_reg("rflags", rflags & ~self.msr(MSR_FMASK) & ~RFLAGS_RF)
        selector = (star >> 32) & 0xFFFC
        self.load_segments(0, selector, selector + 8)
        self.rip = self.msr(MSR_LSTAR)

    def raise_irq(self, vector: int) -> None:
        self.pending_irqs.add(vector)
        self.halted = False if self.reg("rflags") & RFLAGS_IF else self.halted

    def _deliver_pending_irq(self) -> None:
        if not self.pending_irqs:
            return
        if not self.reg("rflags") & RFLAGS_IF:
            return
        vector = min(self.pending_irqs)
        self.pending_irqs.discard(vector)
        self.halted = self.in_hlt = False
        self.stats.interrupts += 1
        from .interrupts import deliver
        event = GuestEvent(EventKind.INTERRUPT, self.rip, vector=vector)
        if self.intercept is not None and self.intercept.on_event(self, event):
            return
        deliver(self, vector, rip=self.rip, external=True)

    def close(self) -> None:
        self.timer.close()
        self.uc = None  # type: ignore[assignment]


#: IA32_VMX_BASIC[30:0]: the revision identifier VMXON and VMPTRLD regions must start with.
VMCS_REVISION_ID = 0x1


def vmxon_operand(cpu: VCpu, rip: int) -> tuple[bytes, int] | None:
    """Decode VMXON at `rip`: (instruction bytes, linear address of its m64 operand), or None
    if it is not VMXON with a memory operand (then it is just an invalid opcode)."""
    from .faultaddr import memory_operand
    try:
        code = cpu.read_virtual(rip, 15)
    except (PageFault, SecondStageFault, MemoryError_):
        return None
    return memory_operand(code, rip, "vmxon", cpu._reg_by_name)


@functools.cache
def _native_cpuid(leaf: int) -> tuple[int, int, int, int]:
    """What Unicorn's CPU model answers for `leaf`, asked once on a scratch CPU."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, b"\x0f\xa2")
    uc.reg_write(x86.UC_X86_REG_RAX, leaf)
    uc.reg_write(x86.UC_X86_REG_RCX, 0)
    uc.emu_start(0x1000, 0x1002)
    return tuple(uc.reg_read(r) & 0xFFFF_FFFF for r in (  # type: ignore[return-value]
        x86.UC_X86_REG_RAX, x86.UC_X86_REG_RBX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX))
