"""The virtual-machine control structure (Intel SDM Vol. 3C ch. 25, Appendix B and C).

The field encodings, control bits, exit reasons and the encoders/decoders of the exit
qualifications and event-information fields are the SDM's, named as Linux's `asm/vmx.h` names
them, so the monitor reads like a real VMX hypervisor and `info vmcs` prints what a hardware
VMCS would hold.

A field encoding (SDM 25.11.2) is a 32-bit value:

    bit  0       access type: 0 full, 1 high (upper 32 bits of a 64-bit field)
    bits 9:1     index
    bits 11:10   type: 0 control, 1 VM-exit information (read-only data), 2 guest state, 3 host state
    bit  12      reserved (0)
    bits 14:13   width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width (64 bits on this CPU)

`Vmcs` is the current VMCS of one vCPU: VMREAD/VMWRITE semantics on a dict of values, the
launch state machine of VMCLEAR/VMLAUNCH/VMRESUME, and the capture and reload of the guest-state
area from a live `VCpu` (the processor's job on VM exit and VM entry).
"""

from __future__ import annotations

import struct
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from unicorn import x86_const as x86

from hyperenclave.platform.cpu import VMCS_REVISION_ID, SecondStageFault
from hyperenclave.platform.memory import MemoryError_
from hyperenclave.platform.paging import PageFault
from hyperenclave.vmm.ept import Access, EptPerm

if TYPE_CHECKING:
    from hyperenclave.platform.cpu import VCpu

# --------------------------------------------------------------------------------------------
# Field encodings (SDM 25.11.2, Appendix B)
# --------------------------------------------------------------------------------------------


class FieldWidth(IntEnum):
    """Encoding bits 14:13."""

    BITS16 = 0
    BITS64 = 1
    BITS32 = 2
    NATURAL = 3

    @property
    def bits(self) -> int:
        """Value width in bits; natural width is 64 bits on a processor with Intel 64."""
        return {0: 16, 1: 64, 2: 32, 3: 64}[self.value]


class FieldType(IntEnum):
    """Encoding bits 11:10."""

    CONTROL = 0
    EXIT_INFO = 1      # the SDM's "VM-exit information" (read-only data) fields
    GUEST_STATE = 2
    HOST_STATE = 3

    @property
    def title(self) -> str:
        return _AREA_TITLES[self]


_AREA_TITLES = {
    FieldType.CONTROL: "control fields",
    FieldType.GUEST_STATE: "guest-state area",
    FieldType.HOST_STATE: "host-state area",
    FieldType.EXIT_INFO: "VM-exit information fields",
}


def field_width(encoding: int) -> FieldWidth:
    return FieldWidth((encoding >> 13) & 3)


def field_type(encoding: int) -> FieldType:
    return FieldType((encoding >> 10) & 3)


def field_index(encoding: int) -> int:
    return (encoding >> 1) & 0x1FF


class VmcsField(IntEnum):
    """Every VMCS component this model supports (encodings from SDM Appendix B)."""

    # 16-bit control fields (B.1.1)
    VIRTUAL_PROCESSOR_ID = 0x0000
    POSTED_INTR_NV = 0x0002
    EPTP_INDEX = 0x0004
    # 16-bit guest-state fields (B.1.2)
    GUEST_ES_SELECTOR = 0x0800
    GUEST_CS_SELECTOR = 0x0802
    GUEST_SS_SELECTOR = 0x0804
    GUEST_DS_SELECTOR = 0x0806
    GUEST_FS_SELECTOR = 0x0808
    GUEST_GS_SELECTOR = 0x080A
    GUEST_LDTR_SELECTOR = 0x080C
    GUEST_TR_SELECTOR = 0x080E
    GUEST_INTR_STATUS = 0x0810
    GUEST_PML_INDEX = 0x0812
    # 16-bit host-state fields (B.1.3)
    HOST_ES_SELECTOR = 0x0C00
    HOST_CS_SELECTOR = 0x0C02
    HOST_SS_SELECTOR = 0x0C04
    HOST_DS_SELECTOR = 0x0C06
    HOST_FS_SELECTOR = 0x0C08
    HOST_GS_SELECTOR = 0x0C0A
    HOST_TR_SELECTOR = 0x0C0C
    # 64-bit control fields (B.2.1)
    IO_BITMAP_A = 0x2000
    IO_BITMAP_B = 0x2002
    MSR_BITMAP = 0x2004
    VM_EXIT_MSR_STORE_ADDR = 0x2006
    VM_EXIT_MSR_LOAD_ADDR = 0x2008
    VM_ENTRY_MSR_LOAD_ADDR = 0x200A
    PML_ADDRESS = 0x200E
    TSC_OFFSET = 0x2010
    VIRTUAL_APIC_PAGE_ADDR = 0x2012
    APIC_ACCESS_ADDR = 0x2014
    POSTED_INTR_DESC_ADDR = 0x2016
    VM_FUNCTION_CONTROL = 0x2018
    EPT_POINTER = 0x201A
    EOI_EXIT_BITMAP0 = 0x201C
    EOI_EXIT_BITMAP1 = 0x201E
    EOI_EXIT_BITMAP2 = 0x2020
    EOI_EXIT_BITMAP3 = 0x2022
    EPTP_LIST_ADDRESS = 0x2024
    VMREAD_BITMAP = 0x2026
    VMWRITE_BITMAP = 0x2028
    XSS_EXIT_BITMAP = 0x202C
    ENCLS_EXITING_BITMAP = 0x202E
    TSC_MULTIPLIER = 0x2032
    # 64-bit read-only data field (B.2.2)
    GUEST_PHYSICAL_ADDRESS = 0x2400
    # 64-bit guest-state fields (B.2.3)
    VMCS_LINK_POINTER = 0x2800
    GUEST_IA32_DEBUGCTL = 0x2802
    GUEST_IA32_PAT = 0x2804
    GUEST_IA32_EFER = 0x2806
    GUEST_IA32_PERF_GLOBAL_CTRL = 0x2808
    GUEST_PDPTR0 = 0x280A
    GUEST_PDPTR1 = 0x280C
    GUEST_PDPTR2 = 0x280E
    GUEST_PDPTR3 = 0x2810
    GUEST_BNDCFGS = 0x2812
    # 64-bit host-state fields (B.2.4)
    HOST_IA32_PAT = 0x2C00
    HOST_IA32_EFER = 0x2C02
    HOST_IA32_PERF_GLOBAL_CTRL = 0x2C04
    # 32-bit control fields (B.3.1)
    PIN_BASED_VM_EXEC_CONTROL = 0x4000
    CPU_BASED_VM_EXEC_CONTROL = 0x4002
    EXCEPTION_BITMAP = 0x4004
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008
    CR3_TARGET_COUNT = 0x400A
    VM_EXIT_CONTROLS = 0x400C
    VM_EXIT_MSR_STORE_COUNT = 0x400E
    VM_EXIT_MSR_LOAD_COUNT = 0x4010
    VM_ENTRY_CONTROLS = 0x4012
    VM_ENTRY_MSR_LOAD_COUNT = 0x4014
    VM_ENTRY_INTR_INFO_FIELD = 0x4016
    VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018
    VM_ENTRY_INSTRUCTION_LEN = 0x401A
    TPR_THRESHOLD = 0x401C
    SECONDARY_VM_EXEC_CONTROL = 0x401E
    PLE_GAP = 0x4020
    PLE_WINDOW = 0x4022
    # 32-bit read-only data fields (B.3.2)
    VM_INSTRUCTION_ERROR = 0x4400
    VM_EXIT_REASON = 0x4402
    VM_EXIT_INTR_INFO = 0x4404
    VM_EXIT_INTR_ERROR_CODE = 0x4406
    IDT_VECTORING_INFO_FIELD = 0x4408
    IDT_VECTORING_ERROR_CODE = 0x440A
    VM_EXIT_INSTRUCTION_LEN = 0x440C
    VMX_INSTRUCTION_INFO = 0x440E
    # 32-bit guest-state fields (B.3.3)
    GUEST_ES_LIMIT = 0x4800
    GUEST_CS_LIMIT = 0x4802
    GUEST_SS_LIMIT = 0x4804
    GUEST_DS_LIMIT = 0x4806
    GUEST_FS_LIMIT = 0x4808
    GUEST_GS_LIMIT = 0x480A
    GUEST_LDTR_LIMIT = 0x480C
    GUEST_TR_LIMIT = 0x480E
    GUEST_GDTR_LIMIT = 0x4810
    GUEST_IDTR_LIMIT = 0x4812
    GUEST_ES_AR_BYTES = 0x4814
    GUEST_CS_AR_BYTES = 0x4816
    GUEST_SS_AR_BYTES = 0x4818
    GUEST_DS_AR_BYTES = 0x481A
    GUEST_FS_AR_BYTES = 0x481C
    GUEST_GS_AR_BYTES = 0x481E
    GUEST_LDTR_AR_BYTES = 0x4820
    GUEST_TR_AR_BYTES = 0x4822
    GUEST_INTERRUPTIBILITY_INFO = 0x4824
    GUEST_ACTIVITY_STATE = 0x4826
    GUEST_SMBASE = 0x4828
    GUEST_SYSENTER_CS = 0x482A
    VMX_PREEMPTION_TIMER_VALUE = 0x482E
    # 32-bit host-state field (B.3.4)
    HOST_IA32_SYSENTER_CS = 0x4C00
    # natural-width control fields (B.4.1)
    CR0_GUEST_HOST_MASK = 0x6000
    CR4_GUEST_HOST_MASK = 0x6002
    CR0_READ_SHADOW = 0x6004
    CR4_READ_SHADOW = 0x6006
    CR3_TARGET_VALUE0 = 0x6008
    CR3_TARGET_VALUE1 = 0x600A
    CR3_TARGET_VALUE2 = 0x600C
    CR3_TARGET_VALUE3 = 0x600E
    # natural-width read-only data fields (B.4.2)
    EXIT_QUALIFICATION = 0x6400
    IO_RCX = 0x6402
    IO_RSI = 0x6404
    IO_RDI = 0x6406
    IO_RIP = 0x6408
    GUEST_LINEAR_ADDRESS = 0x640A
    # natural-width guest-state fields (B.4.3)
    GUEST_CR0 = 0x6800
    GUEST_CR3 = 0x6802
    GUEST_CR4 = 0x6804
    GUEST_ES_BASE = 0x6806
    GUEST_CS_BASE = 0x6808
    GUEST_SS_BASE = 0x680A
    GUEST_DS_BASE = 0x680C
    GUEST_FS_BASE = 0x680E
    GUEST_GS_BASE = 0x6810
    GUEST_LDTR_BASE = 0x6812
    GUEST_TR_BASE = 0x6814
    GUEST_GDTR_BASE = 0x6816
    GUEST_IDTR_BASE = 0x6818
    GUEST_DR7 = 0x681A
    GUEST_RSP = 0x681C
    GUEST_RIP = 0x681E
    GUEST_RFLAGS = 0x6820
    GUEST_PENDING_DBG_EXCEPTIONS = 0x6822
    GUEST_SYSENTER_ESP = 0x6824
    GUEST_SYSENTER_EIP = 0x6826
    # natural-width host-state fields (B.4.4)
    HOST_CR0 = 0x6C00
    HOST_CR3 = 0x6C02
    HOST_CR4 = 0x6C04
    HOST_FS_BASE = 0x6C06
    HOST_GS_BASE = 0x6C08
    HOST_TR_BASE = 0x6C0A
    HOST_GDTR_BASE = 0x6C0C
    HOST_IDTR_BASE = 0x6C0E
    HOST_IA32_SYSENTER_ESP = 0x6C10
    HOST_IA32_SYSENTER_EIP = 0x6C12
    HOST_RSP = 0x6C14
    HOST_RIP = 0x6C16

    @property
    def width(self) -> FieldWidth:
        return field_width(self.value)

    @property
    def type(self) -> FieldType:
        return field_type(self.value)

    @property
    def mask(self) -> int:
        return (1 << self.width.bits) - 1


# encoding -> (field, value mask): VMREAD/VMWRITE sit on the VM-exit path, so no enum lookups.
_COMPONENTS: dict[int, tuple[VmcsField, int]] = {int(f): (f, f.mask) for f in VmcsField}


# --------------------------------------------------------------------------------------------
# Control bits (SDM 25.6, 25.7, 25.8; Linux names)
# --------------------------------------------------------------------------------------------

# Pin-based VM-execution controls (Table 25-5)
PIN_BASED_EXT_INTR_MASK = 1 << 0
PIN_BASED_NMI_EXITING = 1 << 3
PIN_BASED_VIRTUAL_NMIS = 1 << 5
PIN_BASED_VMX_PREEMPTION_TIMER = 1 << 6
PIN_BASED_POSTED_INTR = 1 << 7

# Primary processor-based VM-execution controls (Table 25-6)
CPU_BASED_INTR_WINDOW_EXITING = 1 << 2
CPU_BASED_USE_TSC_OFFSETTING = 1 << 3
CPU_BASED_HLT_EXITING = 1 << 7
CPU_BASED_INVLPG_EXITING = 1 << 9
CPU_BASED_MWAIT_EXITING = 1 << 10
CPU_BASED_RDPMC_EXITING = 1 << 11
CPU_BASED_RDTSC_EXITING = 1 << 12
CPU_BASED_CR3_LOAD_EXITING = 1 << 15
CPU_BASED_CR3_STORE_EXITING = 1 << 16
CPU_BASED_CR8_LOAD_EXITING = 1 << 19
CPU_BASED_CR8_STORE_EXITING = 1 << 20
CPU_BASED_TPR_SHADOW = 1 << 21
CPU_BASED_NMI_WINDOW_EXITING = 1 << 22
CPU_BASED_MOV_DR_EXITING = 1 << 23
CPU_BASED_UNCOND_IO_EXITING = 1 << 24
CPU_BASED_USE_IO_BITMAPS = 1 << 25
CPU_BASED_MONITOR_TRAP_FLAG = 1 << 27
CPU_BASED_USE_MSR_BITMAPS = 1 << 28
CPU_BASED_MONITOR_EXITING = 1 << 29
CPU_BASED_PAUSE_EXITING = 1 << 30
CPU_BASED_ACTIVATE_SECONDARY_CONTROLS = 1 << 31

# Secondary processor-based VM-execution controls (Table 25-7)
SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES = 1 << 0
SECONDARY_EXEC_ENABLE_EPT = 1 << 1
SECONDARY_EXEC_DESC = 1 << 2
SECONDARY_EXEC_ENABLE_RDTSCP = 1 << 3
SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE = 1 << 4
SECONDARY_EXEC_ENABLE_VPID = 1 << 5
SECONDARY_EXEC_WBINVD_EXITING = 1 << 6
SECONDARY_EXEC_UNRESTRICTED_GUEST = 1 << 7
SECONDARY_EXEC_APIC_REGISTER_VIRT = 1 << 8
SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY = 1 << 9
SECONDARY_EXEC_PAUSE_LOOP_EXITING = 1 << 10
SECONDARY_EXEC_RDRAND_EXITING = 1 << 11
SECONDARY_EXEC_ENABLE_INVPCID = 1 << 12
SECONDARY_EXEC_ENABLE_VMFUNC = 1 << 13
SECONDARY_EXEC_SHADOW_VMCS = 1 << 14
SECONDARY_EXEC_ENCLS_EXITING = 1 << 15
SECONDARY_EXEC_RDSEED_EXITING = 1 << 16
SECONDARY_EXEC_ENABLE_PML = 1 << 17
SECONDARY_EXEC_EPT_VIOLATION_VE = 1 << 18
SECONDARY_EXEC_ENABLE_XSAVES = 1 << 20

# Primary VM-exit controls (Table 25-13)
VM_EXIT_SAVE_DEBUG_CONTROLS = 1 << 2
VM_EXIT_HOST_ADDR_SPACE_SIZE = 1 << 9
VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12
VM_EXIT_ACK_INTR_ON_EXIT = 1 << 15
VM_EXIT_SAVE_IA32_PAT = 1 << 18
VM_EXIT_LOAD_IA32_PAT = 1 << 19
VM_EXIT_SAVE_IA32_EFER = 1 << 20
VM_EXIT_LOAD_IA32_EFER = 1 << 21
VM_EXIT_SAVE_VMX_PREEMPTION_TIMER = 1 << 22

# VM-entry controls (Table 25-15)
VM_ENTRY_LOAD_DEBUG_CONTROLS = 1 << 2
VM_ENTRY_IA32E_MODE = 1 << 9
VM_ENTRY_SMM = 1 << 10
VM_ENTRY_DEACT_DUAL_MONITOR = 1 << 11
VM_ENTRY_LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13
VM_ENTRY_LOAD_IA32_PAT = 1 << 14
VM_ENTRY_LOAD_IA32_EFER = 1 << 15


def _bit_names(prefix: str) -> dict[int, str]:
    """Bit -> name for the constants above that start with `prefix` (for `info vmcs`)."""
    return {v: k.removeprefix(prefix) for k, v in globals().items()
            if k.startswith(prefix) and isinstance(v, int)}


_CONTROL_BIT_NAMES = {
    VmcsField.PIN_BASED_VM_EXEC_CONTROL: _bit_names("PIN_BASED_"),
    VmcsField.CPU_BASED_VM_EXEC_CONTROL: _bit_names("CPU_BASED_"),
    VmcsField.SECONDARY_VM_EXEC_CONTROL: _bit_names("SECONDARY_EXEC_"),
    VmcsField.VM_EXIT_CONTROLS: _bit_names("VM_EXIT_"),
    VmcsField.VM_ENTRY_CONTROLS: _bit_names("VM_ENTRY_"),
}


def describe_controls(field: VmcsField, value: int) -> str:
    """The set bits of a VM-execution/exit/entry control field by name ("bit N" if unnamed)."""
    names = _CONTROL_BIT_NAMES[field]
    return "|".join(names.get(1 << b, f"bit{b}") for b in range(32) if value >> b & 1)


# --------------------------------------------------------------------------------------------
# Exit reasons (SDM Appendix C)
# --------------------------------------------------------------------------------------------

class ExitReason(IntEnum):
    """Basic exit reasons (bits 15:0 of the exit-reason field)."""

    EXCEPTION_NMI = 0
    EXTERNAL_INTERRUPT = 1
    TRIPLE_FAULT = 2
    INIT_SIGNAL = 3
    SIPI_SIGNAL = 4
    IO_SMI = 5
    OTHER_SMI = 6
    INTERRUPT_WINDOW = 7
    NMI_WINDOW = 8
    TASK_SWITCH = 9
    CPUID = 10
    GETSEC = 11
    HLT = 12
    INVD = 13
    INVLPG = 14
    RDPMC = 15
    RDTSC = 16
    RSM = 17
    VMCALL = 18
    VMCLEAR = 19
    VMLAUNCH = 20
    VMPTRLD = 21
    VMPTRST = 22
    VMREAD = 23
    VMRESUME = 24
    VMWRITE = 25
    VMXOFF = 26
    VMXON = 27
    CR_ACCESS = 28
    DR_ACCESS = 29
    IO_INSTRUCTION = 30
    MSR_READ = 31
    MSR_WRITE = 32
    INVALID_STATE = 33
    MSR_LOAD_FAIL = 34
    MWAIT_INSTRUCTION = 36
    MONITOR_TRAP_FLAG = 37
    MONITOR_INSTRUCTION = 39
    PAUSE_INSTRUCTION = 40
    MCE_DURING_VMENTRY = 41
    TPR_BELOW_THRESHOLD = 43
    APIC_ACCESS = 44
    EOI_INDUCED = 45
    GDTR_IDTR = 46
    LDTR_TR = 47
    EPT_VIOLATION = 48
    EPT_MISCONFIG = 49
    INVEPT = 50
    RDTSCP = 51
    PREEMPTION_TIMER = 52
    INVVPID = 53
    WBINVD = 54
    XSETBV = 55
    APIC_WRITE = 56
    RDRAND = 57
    INVPCID = 58
    VMFUNC = 59
    ENCLS = 60
    RDSEED = 61
    PML_FULL = 62
    XSAVES = 63
    XRSTORS = 64
    SPP = 66
    UMWAIT = 67
    TPAUSE = 68
    LOADIWKEY = 69

    @property
    def sdm_name(self) -> str:
        """The name Table C-1 gives this reason."""
        return _EXIT_NAMES.get(self, self.name)


_EXIT_NAMES = {
    ExitReason.EXCEPTION_NMI: "Exception or non-maskable interrupt (NMI)",
    ExitReason.EXTERNAL_INTERRUPT: "External interrupt",
    ExitReason.TRIPLE_FAULT: "Triple fault",
    ExitReason.INIT_SIGNAL: "INIT signal",
    ExitReason.SIPI_SIGNAL: "Start-up IPI (SIPI)",
    ExitReason.IO_SMI: "I/O system-management interrupt (SMI)",
    ExitReason.OTHER_SMI: "Other SMI",
    ExitReason.INTERRUPT_WINDOW: "Interrupt window",
    ExitReason.NMI_WINDOW: "NMI window",
    ExitReason.TASK_SWITCH: "Task switch",
    ExitReason.CR_ACCESS: "Control-register accesses",
    ExitReason.DR_ACCESS: "MOV DR",
    ExitReason.IO_INSTRUCTION: "I/O instruction",
    ExitReason.MSR_READ: "RDMSR",
    ExitReason.MSR_WRITE: "WRMSR",
    ExitReason.INVALID_STATE: "VM-entry failure due to invalid guest state",
    ExitReason.MSR_LOAD_FAIL: "VM-entry failure due to MSR loading",
    ExitReason.MWAIT_INSTRUCTION: "MWAIT",
    ExitReason.MONITOR_TRAP_FLAG: "Monitor trap flag",
    ExitReason.MONITOR_INSTRUCTION: "MONITOR",
    ExitReason.PAUSE_INSTRUCTION: "PAUSE",
    ExitReason.MCE_DURING_VMENTRY: "VM-entry failure due to machine-check event",
    ExitReason.TPR_BELOW_THRESHOLD: "TPR below threshold",
    ExitReason.APIC_ACCESS: "APIC access",
    ExitReason.EOI_INDUCED: "Virtualized EOI",
    ExitReason.GDTR_IDTR: "Access to GDTR or IDTR",
    ExitReason.LDTR_TR: "Access to LDTR or TR",
    ExitReason.EPT_VIOLATION: "EPT violation",
    ExitReason.EPT_MISCONFIG: "EPT misconfiguration",
    ExitReason.PREEMPTION_TIMER: "VMX-preemption timer expired",
    ExitReason.WBINVD: "WBINVD or WBNOINVD",
    ExitReason.APIC_WRITE: "APIC write",
    ExitReason.PML_FULL: "Page-modification log full",
    ExitReason.SPP: "SPP-related event",
}

EXIT_REASON_ENCLAVE_MODE = 1 << 27    # the exit came from an SGX enclave
EXIT_REASON_ENTRY_FAILURE = 1 << 31   # VM-entry failure (reasons 33, 34, 41)


def exit_reason_field(reason: ExitReason, *, enclave_mode: bool = False) -> int:
    """The 32-bit exit-reason field (SDM 25.9.1); VM-entry failures set bit 31."""
    value = int(reason)
    if enclave_mode:
        value |= EXIT_REASON_ENCLAVE_MODE
    if reason in (ExitReason.INVALID_STATE, ExitReason.MSR_LOAD_FAIL, ExitReason.MCE_DURING_VMENTRY):
        value |= EXIT_REASON_ENTRY_FAILURE
    return value


def describe_exit_reason(value: int) -> str:
    basic = value & 0xFFFF
    try:
        text = f"{ExitReason(basic).sdm_name} ({basic})"
    except ValueError:
        text = f"reserved exit reason {basic}"
    if value & EXIT_REASON_ENCLAVE_MODE:
        text += ", from enclave mode"
    if value & EXIT_REASON_ENTRY_FAILURE:
        text += ", VM-entry failure"
    return text


# --------------------------------------------------------------------------------------------
# Exit qualifications (SDM 28.2.1)
# --------------------------------------------------------------------------------------------

_ACCESS_WORDS = {Access.READ: "read", Access.WRITE: "write", Access.FETCH: "instruction fetch"}


class EptViolationQualification(NamedTuple):
    """Exit qualification of an EPT violation (Table 28-7), bits 0-8."""

    accesses: frozenset[Access]        # bits 2:0: several for an instruction that reads and writes
    perms_found: EptPerm               # bits 5:3: AND of the R/W/X bits of the entries walked
    linear_valid: bool                 # bit 7: GUEST_LINEAR_ADDRESS holds the linear address
    translated_access: bool            # bit 8: the access was to the translated linear address
                                       #        (False: to a guest paging-structure entry)

    def encode(self) -> int:
        q = sum(1 << a for a in self.accesses) | int(self.perms_found) << 3
        if self.linear_valid:
            q |= 1 << 7 | (1 << 8 if self.translated_access else 0)
        return q

    @classmethod
    def decode(cls, q: int) -> "EptViolationQualification":
        linear_valid = bool(q >> 7 & 1)
        return cls(frozenset(a for a in Access if q >> a & 1), EptPerm((q >> 3) & 7),
                   linear_valid, linear_valid and bool(q >> 8 & 1))

    def __str__(self) -> str:
        what = "+".join(_ACCESS_WORDS[a] for a in sorted(self.accesses)) or "no access"
        found = f"entries allow {self.perms_found}" if self.perms_found else "not present"
        if not self.linear_valid:
            where = "no linear address"
        elif self.translated_access:
            where = "at the translated linear address"
        else:
            where = "in a guest paging-structure walk"
        return f"{what} {where}; {found}"


def ept_violation_qualification(access: Access, perms_found: int, linear_valid: bool = True,
                                translated_access: bool = True) -> int:
    """The exit qualification for one access; `translated_access` is ignored (bit 8 reserved,
    0) without a valid guest-linear address."""
    if perms_found & ~7:
        raise ValueError(f"EPT permissions {perms_found:#x} do not fit bits 2:0")
    return EptViolationQualification(frozenset({Access(access)}), EptPerm(perms_found),
                                     linear_valid, translated_access).encode()


def describe_ept_violation_qualification(q: int) -> str:
    return str(EptViolationQualification.decode(q))


class IoQualification(NamedTuple):
    """Exit qualification of an I/O instruction (Table 28-5)."""

    port: int
    size: int          # 1, 2 or 4 bytes
    is_in: bool
    string: bool = False
    rep: bool = False
    immediate: bool = False   # port given as an immediate operand (else in DX)

    def encode(self) -> int:
        if self.size not in (1, 2, 4):
            raise ValueError(f"I/O size must be 1, 2 or 4 bytes, not {self.size}")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port:#x} does not fit 16 bits")
        return (self.size - 1) | self.is_in << 3 | self.string << 4 | self.rep << 5 \
            | self.immediate << 6 | self.port << 16

    @classmethod
    def decode(cls, q: int) -> "IoQualification":
        return cls((q >> 16) & 0xFFFF, (q & 7) + 1, bool(q >> 3 & 1), bool(q >> 4 & 1),
                   bool(q >> 5 & 1), bool(q >> 6 & 1))

    def __str__(self) -> str:
        insn = "in" if self.is_in else "out"
        if self.string:
            insn = ("rep " if self.rep else "") + insn + "s"
        operand = f"${self.port:#x}" if self.immediate else "%dx"
        direction = "from" if self.is_in else "to"
        return f"{insn} {self.size} byte(s) {direction} port {self.port:#x} ({operand})"


def io_qualification(port: int, size: int, is_in: bool, string: bool = False, rep: bool = False,
                     immediate: bool = False) -> int:
    return IoQualification(port, size, is_in, string, rep, immediate).encode()


def describe_io_qualification(q: int) -> str:
    return str(IoQualification.decode(q))


CR_GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
           "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
"""General-purpose registers in the order of their 4-bit number in exit qualifications."""


class CrAccessType(IntEnum):
    MOV_TO_CR = 0
    MOV_FROM_CR = 1
    CLTS = 2
    LMSW = 3


class CrAccessQualification(NamedTuple):
    """Exit qualification of a control-register access (Table 28-3)."""

    cr: int
    access_type: CrAccessType
    gpr: int = 0                 # MOV CR: register number (CR_GPRS)
    lmsw_memory: bool = False    # LMSW: operand in memory
    lmsw_source: int = 0         # LMSW: the 16-bit source data

    def encode(self) -> int:
        return (self.cr & 0xF) | int(self.access_type) << 4 | self.lmsw_memory << 6 \
            | (self.gpr & 0xF) << 8 | (self.lmsw_source & 0xFFFF) << 16

    @classmethod
    def decode(cls, q: int) -> "CrAccessQualification":
        return cls(q & 0xF, CrAccessType((q >> 4) & 3), (q >> 8) & 0xF, bool(q >> 6 & 1),
                   (q >> 16) & 0xFFFF)

    def __str__(self) -> str:
        reg = CR_GPRS[self.gpr]
        if self.access_type is CrAccessType.MOV_TO_CR:
            return f"mov %{reg}, %cr{self.cr}"
        if self.access_type is CrAccessType.MOV_FROM_CR:
            return f"mov %cr{self.cr}, %{reg}"
        if self.access_type is CrAccessType.CLTS:
            return "clts"
        return f"lmsw {self.lmsw_source:#x} ({'memory' if self.lmsw_memory else 'register'} operand)"


def cr_access_qualification(cr: int, access_type: CrAccessType, gpr: int = 0) -> int:
    """MOV to/from CRn with a general-purpose register (CLTS/LMSW via CrAccessQualification)."""
    return CrAccessQualification(cr, CrAccessType(access_type), gpr).encode()


def describe_cr_access_qualification(q: int) -> str:
    return str(CrAccessQualification.decode(q))


# --------------------------------------------------------------------------------------------
# Event information (VM-entry interruption information 25.8.3, VM-exit interruption and
# IDT-vectoring information 25.9.2/25.9.3: the same layout)
# --------------------------------------------------------------------------------------------

class InterruptionType(IntEnum):
    EXTERNAL_INTERRUPT = 0
    NMI = 2
    HARDWARE_EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4
    PRIVILEGED_SOFTWARE_EXCEPTION = 5
    SOFTWARE_EXCEPTION = 6
    OTHER_EVENT = 7


INTR_INFO_VECTOR_MASK = 0xFF
INTR_INFO_TYPE_SHIFT = 8
INTR_INFO_DELIVER_CODE = 1 << 11
INTR_INFO_VALID = 1 << 31

_EXCEPTION_MNEMONICS = ("#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "", "#TS",
                        "#NP", "#SS", "#GP", "#PF", "", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP")


class IntrInfo(NamedTuple):
    vector: int
    type: InterruptionType
    error_code_valid: bool = False
    valid: bool = True

    def encode(self) -> int:
        if not 0 <= self.vector <= 0xFF:
            raise ValueError(f"vector {self.vector} does not fit 8 bits")
        return self.vector | int(self.type) << INTR_INFO_TYPE_SHIFT \
            | (INTR_INFO_DELIVER_CODE if self.error_code_valid else 0) \
            | (INTR_INFO_VALID if self.valid else 0)

    @classmethod
    def decode(cls, value: int) -> "IntrInfo":
        return cls(value & INTR_INFO_VECTOR_MASK, InterruptionType((value >> INTR_INFO_TYPE_SHIFT) & 7),
                   bool(value & INTR_INFO_DELIVER_CODE), bool(value & INTR_INFO_VALID))

    def __str__(self) -> str:
        if not self.valid:
            return "invalid (no event)"
        kind = self.type.name.lower().replace("_", " ")
        name = f"vector {self.vector:#x}"
        if self.type in (InterruptionType.HARDWARE_EXCEPTION, InterruptionType.SOFTWARE_EXCEPTION,
                         InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION) \
                and self.vector < len(_EXCEPTION_MNEMONICS) and _EXCEPTION_MNEMONICS[self.vector]:
            name = f"{_EXCEPTION_MNEMONICS[self.vector]} ({self.vector})"
        return f"{kind} {name}" + (" with error code" if self.error_code_valid else "")


def intr_info(vector: int, type: InterruptionType, error_code_valid: bool = False) -> int:
    """A valid interruption-information field for event injection on VM entry."""
    return IntrInfo(vector, InterruptionType(type), error_code_valid).encode()


def describe_intr_info(value: int) -> str:
    return str(IntrInfo.decode(value))


# --------------------------------------------------------------------------------------------
# Segment access rights (SDM 25.4.1, Table 25-2)
# --------------------------------------------------------------------------------------------

AR_TYPE_MASK = 0xF
AR_S = 1 << 4
AR_DPL_SHIFT = 5
AR_P = 1 << 7
AR_L = 1 << 13
AR_DB = 1 << 14
AR_G = 1 << 15
AR_UNUSABLE = 1 << 16


def describe_access_rights(ar: int) -> str:
    if ar & AR_UNUSABLE:
        return "unusable"
    flags = " ".join(n for n, b in (("P", AR_P), ("S", AR_S), ("L", AR_L), ("D", AR_DB), ("G", AR_G))
                    if ar & b)
    return f"type {ar & AR_TYPE_MASK:#x} DPL {(ar >> AR_DPL_SHIFT) & 3} {flags}"


def _descriptor_fields(lo: int, hi: int) -> tuple[int, int, int]:
    """(base, limit, access rights) of a GDT/LDT descriptor; `hi` is the upper half of a
    16-byte system descriptor (ignored for code/data segments)."""
    limit = (lo & 0xFFFF) | (lo >> 32) & 0xF0000
    base = (lo >> 16) & 0xFF_FFFF | ((lo >> 56) & 0xFF) << 24
    ar = (lo >> 40) & 0xF0FF
    if ar & AR_G:
        limit = limit << 12 | 0xFFF
    if not ar & AR_S:
        base |= (hi & 0xFFFF_FFFF) << 32
    return base, limit, ar


# --------------------------------------------------------------------------------------------
# VM-instruction errors (SDM 31.4)
# --------------------------------------------------------------------------------------------

class VmInstructionError(IntEnum):
    VMCALL_IN_ROOT = 1
    VMCLEAR_INVALID_ADDRESS = 2
    VMCLEAR_VMXON_POINTER = 3
    VMLAUNCH_NONCLEAR_VMCS = 4
    VMRESUME_NONLAUNCHED_VMCS = 5
    VMRESUME_AFTER_VMXOFF = 6
    ENTRY_INVALID_CONTROL_FIELD = 7
    ENTRY_INVALID_HOST_STATE_FIELD = 8
    VMPTRLD_INVALID_ADDRESS = 9
    VMPTRLD_VMXON_POINTER = 10
    VMPTRLD_INCORRECT_REVISION_ID = 11
    UNSUPPORTED_VMCS_COMPONENT = 12
    VMWRITE_READ_ONLY_COMPONENT = 13
    VMXON_IN_ROOT = 15
    ENTRY_EVENTS_BLOCKED_BY_MOV_SS = 26
    INVALID_INVEPT_INVVPID_OPERAND = 28

    @property
    def sdm_name(self) -> str:
        return _VM_INSTRUCTION_ERRORS[self]


_VM_INSTRUCTION_ERRORS = {
    VmInstructionError.VMCALL_IN_ROOT: "VMCALL executed in VMX root operation",
    VmInstructionError.VMCLEAR_INVALID_ADDRESS: "VMCLEAR with invalid physical address",
    VmInstructionError.VMCLEAR_VMXON_POINTER: "VMCLEAR with VMXON pointer",
    VmInstructionError.VMLAUNCH_NONCLEAR_VMCS: "VMLAUNCH with non-clear VMCS",
    VmInstructionError.VMRESUME_NONLAUNCHED_VMCS: "VMRESUME with non-launched VMCS",
    VmInstructionError.VMRESUME_AFTER_VMXOFF: "VMRESUME after VMXOFF",
    VmInstructionError.ENTRY_INVALID_CONTROL_FIELD: "VM entry with invalid control field(s)",
    VmInstructionError.ENTRY_INVALID_HOST_STATE_FIELD: "VM entry with invalid host-state field(s)",
    VmInstructionError.VMPTRLD_INVALID_ADDRESS: "VMPTRLD with invalid physical address",
    VmInstructionError.VMPTRLD_VMXON_POINTER: "VMPTRLD with VMXON pointer",
    VmInstructionError.VMPTRLD_INCORRECT_REVISION_ID: "VMPTRLD with incorrect VMCS revision identifier",
    VmInstructionError.UNSUPPORTED_VMCS_COMPONENT: "VMREAD/VMWRITE from/to unsupported VMCS component",
    VmInstructionError.VMWRITE_READ_ONLY_COMPONENT: "VMWRITE to read-only VMCS component",
    VmInstructionError.VMXON_IN_ROOT: "VMXON executed in VMX root operation",
    VmInstructionError.ENTRY_EVENTS_BLOCKED_BY_MOV_SS: "VM entry with events blocked by MOV SS",
    VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND: "Invalid operand to INVEPT/INVVPID",
}


class VmcsError(Exception):
    """A VMX instruction failed on the current VMCS (VMfailValid, `error` is in
    VM_INSTRUCTION_ERROR), or the guest state cannot be captured (`error` is None)."""

    def __init__(self, message: str, error: VmInstructionError | None = None) -> None:
        super().__init__(f"{message} (VM-instruction error {int(error)}: {error.sdm_name})"
                         if error is not None else message)
        self.error = error


# --------------------------------------------------------------------------------------------
# The VMCS
# --------------------------------------------------------------------------------------------

# IA32_VMX_BASIC bits 30:0 of the emulated CPU: VMCS_REVISION_ID from hyperenclave.platform.cpu
# (bit 31 of a VMCS's first word marks a shadow VMCS).

MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_IA32_DEBUGCTL = 0x1D9
MSR_IA32_PAT = 0x277
MSR_IA32_EFER = 0xC0000080
MSR_STAR, MSR_LSTAR, MSR_FMASK, MSR_KERNEL_GS_BASE = 0xC0000081, 0xC0000082, 0xC0000084, 0xC0000102

MSR_NAMES = {MSR_STAR: "IA32_STAR", MSR_LSTAR: "IA32_LSTAR", MSR_FMASK: "IA32_FMASK",
             MSR_KERNEL_GS_BASE: "IA32_KERNEL_GS_BASE"}
"""MSRs the guest-state area has no field for: the monitor lists them in its VM-exit
MSR-store area (SDM 25.7.2) to keep the host kernel's syscall state."""


class LaunchState(str, Enum):
    """SDM 25.1: VMCLEAR makes a VMCS clear, VMLAUNCH launched."""

    CLEAR = "clear"
    LAUNCHED = "launched"


class ActivityState(IntEnum):
    """GUEST_ACTIVITY_STATE (SDM 25.4.2)."""

    ACTIVE = 0
    HLT = 1
    SHUTDOWN = 2
    WAIT_FOR_SIPI = 3


_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")
_REGISTER_FIELDS = (("cr0", VmcsField.GUEST_CR0), ("cr3", VmcsField.GUEST_CR3),
                    ("cr4", VmcsField.GUEST_CR4), ("rsp", VmcsField.GUEST_RSP),
                    ("rip", VmcsField.GUEST_RIP), ("rflags", VmcsField.GUEST_RFLAGS))
_MSR_FIELDS = ((MSR_IA32_DEBUGCTL, VmcsField.GUEST_IA32_DEBUGCTL), (MSR_IA32_PAT, VmcsField.GUEST_IA32_PAT),
               (MSR_IA32_SYSENTER_CS, VmcsField.GUEST_SYSENTER_CS),
               (MSR_IA32_SYSENTER_ESP, VmcsField.GUEST_SYSENTER_ESP),
               (MSR_IA32_SYSENTER_EIP, VmcsField.GUEST_SYSENTER_EIP))


def _segment_fields(seg: str) -> tuple[VmcsField, VmcsField, VmcsField, VmcsField]:
    """(selector, base, limit, access rights) fields of a guest segment register."""
    s = seg.upper()
    return (VmcsField[f"GUEST_{s}_SELECTOR"], VmcsField[f"GUEST_{s}_BASE"],
            VmcsField[f"GUEST_{s}_LIMIT"], VmcsField[f"GUEST_{s}_AR_BYTES"])


class Vmcs:
    """The current VMCS of one vCPU.

    Values live in `fields` (unwritten components read as 0). `read`/`write` are VMREAD and
    VMWRITE: the high-access encoding of a 64-bit field reaches its upper 32 bits, values are
    truncated to the field width, and an unknown encoding fails with VM-instruction error 12.
    The emulated CPU reports IA32_VMX_MISC bit 29, so VMWRITE may also fill the VM-exit
    information fields, which is how the emulated processor records an exit.
    """

    def __init__(self, revision_id: int = VMCS_REVISION_ID) -> None:
        if not 0 <= revision_id < 1 << 31:
            raise ValueError(f"VMCS revision identifier {revision_id:#x} does not fit 31 bits")
        self.revision_id = revision_id
        self._launch_state = LaunchState.CLEAR
        self.fields: dict[VmcsField, int] = {}
        self.msr_store: dict[int, int] = {}   # VM-exit MSR-store area (MSR -> value)

    # ------------------------------------------------------------- VMREAD / VMWRITE
    def _component(self, encoding: int) -> tuple[VmcsField, bool]:
        """(field, high access) for an encoding, or VMfailValid(12)."""
        high = bool(encoding & 1)
        component = _COMPONENTS.get(encoding & ~1)
        if component is None or (high and component[0].width is not FieldWidth.BITS64):
            self._fail(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT,
                       f"no VMCS component with encoding {encoding:#x}")
        return component[0], high

    def read(self, encoding: int) -> int:
        if encoding & 1:
            field, _ = self._component(encoding)
            return self.fields.get(field, 0) >> 32
        component = _COMPONENTS.get(encoding)
        if component is None:
            self._component(encoding)     # raises VmcsError
        return self.fields.get(component[0], 0)

    def write(self, encoding: int, value: int) -> None:
        component = _COMPONENTS.get(encoding)
        if component is None:
            field, _ = self._component(encoding)     # raises unless a high access
            value = (self.fields.get(field, 0) & 0xFFFF_FFFF) | (value & 0xFFFF_FFFF) << 32
            component = _COMPONENTS[int(field)]
        self.fields[component[0]] = value & component[1]

    def record_exit(self, reason: int, qualification: int, instruction_len: int, rip: int) -> None:
        """The exit-information fields (and GUEST_RIP) a VM exit writes, in one step."""
        f = self.fields
        f[VmcsField.VM_EXIT_REASON] = reason & 0xFFFF_FFFF
        f[VmcsField.EXIT_QUALIFICATION] = qualification
        f[VmcsField.VM_EXIT_INSTRUCTION_LEN] = instruction_len
        f[VmcsField.GUEST_RIP] = rip

    # ------------------------------------------------------------- launch state
    @property
    def launch_state(self) -> LaunchState:
        return self._launch_state

    @launch_state.setter
    def launch_state(self, state: LaunchState | str) -> None:
        self._launch_state = LaunchState(state)

    def clear(self) -> None:
        """VMCLEAR: the launch state becomes clear (field values stay, as the SDM allows)."""
        self.launch_state = LaunchState.CLEAR

    def launch(self) -> None:
        """The launch-state check and transition of VMLAUNCH (the entry itself is the monitor's)."""
        if self.launch_state is not LaunchState.CLEAR:
            self._fail(VmInstructionError.VMLAUNCH_NONCLEAR_VMCS)
        self.launch_state = LaunchState.LAUNCHED

    def resume(self) -> None:
        """The launch-state check of VMRESUME."""
        if self.launch_state is not LaunchState.LAUNCHED:
            self._fail(VmInstructionError.VMRESUME_NONLAUNCHED_VMCS)

    def _fail(self, error: VmInstructionError, message: str = "") -> NoReturn:
        """VMfailValid: the error number goes into the VMCS, the caller gets the exception."""
        self.fields[VmcsField.VM_INSTRUCTION_ERROR] = int(error)
        raise VmcsError(message or error.sdm_name, error)

    # ------------------------------------------------------------- guest state <-> vCPU
    def capture_guest_state(self, cpu: "VCpu") -> None:
        """Save the vCPU's state into the guest-state area, as a VM exit does (SDM 28.3).

        Unicorn reads only the selectors of ES..GS, so their hidden base/limit/access rights
        come from the descriptors in the guest's GDT (or LDT); FS/GS bases come from the base
        registers, TR's and LDTR's base and limit from the loaded registers. A null selector
        gives an unusable segment.
        """
        uc = cpu.uc
        w = self.write
        for name, field in _REGISTER_FIELDS:
            w(field, cpu.reg(name))
        w(VmcsField.GUEST_DR7, uc.reg_read(x86.UC_X86_REG_DR7))
        gdt = cpu.descriptor_table("gdtr")
        idt = cpu.descriptor_table("idtr")
        w(VmcsField.GUEST_GDTR_BASE, gdt[0])
        w(VmcsField.GUEST_GDTR_LIMIT, gdt[1])
        w(VmcsField.GUEST_IDTR_BASE, idt[0])
        w(VmcsField.GUEST_IDTR_LIMIT, idt[1])
        ldtr_sel, ldt_base, ldt_limit, _ = uc.reg_read(x86.UC_X86_REG_LDTR)
        ldt = (ldt_base, ldt_limit)
        for seg in _SEGMENTS:
            sel = cpu.reg(seg)
            base, limit, ar = self._hidden_part(cpu, seg, sel, gdt, ldt)
            if seg in ("fs", "gs"):
                base = cpu.reg(f"{seg}_base")
            for field, value in zip(_segment_fields(seg), (sel, base, limit, ar)):
                w(field, value)
        _, _, ldtr_ar = self._hidden_part(cpu, "ldtr", ldtr_sel, gdt, ldt, system=True)
        w(VmcsField.GUEST_LDTR_SELECTOR, ldtr_sel)
        w(VmcsField.GUEST_LDTR_BASE, ldt_base)
        w(VmcsField.GUEST_LDTR_LIMIT, ldt_limit)
        w(VmcsField.GUEST_LDTR_AR_BYTES, ldtr_ar)
        tr_sel, tr_base, tr_limit = cpu.task_register()
        _, _, tr_ar = self._hidden_part(cpu, "tr", tr_sel, gdt, ldt, system=True)
        w(VmcsField.GUEST_TR_SELECTOR, tr_sel)
        w(VmcsField.GUEST_TR_BASE, tr_base)
        w(VmcsField.GUEST_TR_LIMIT, tr_limit)
        w(VmcsField.GUEST_TR_AR_BYTES, tr_ar)
        w(VmcsField.GUEST_IA32_EFER, cpu.msr(MSR_IA32_EFER))
        for msr, field in _MSR_FIELDS:
            w(field, cpu.msr(msr))
        w(VmcsField.GUEST_ACTIVITY_STATE, ActivityState.HLT if cpu.halted else ActivityState.ACTIVE)
        self.msr_store = {msr: cpu.msr(msr) for msr in MSR_NAMES}

    @staticmethod
    def _hidden_part(cpu: "VCpu", seg: str, sel: int, gdt: tuple[int, int], ldt: tuple[int, int],
                     system: bool = False) -> tuple[int, int, int]:
        """(base, limit, access rights) of the descriptor `sel` selects."""
        if sel & ~3 == 0:
            return 0, 0, AR_UNUSABLE
        base, limit = ldt if sel & 4 and not system else gdt
        size = 16 if system else 8
        offset = sel & ~7
        if offset + size - 1 > limit:
            raise VmcsError(f"{seg} selector {sel:#x} is beyond the descriptor table limit {limit:#x}")
        try:
            raw = cpu.read_virtual(base + offset, size, user=False)
        except (PageFault, SecondStageFault, MemoryError_) as e:
            raise VmcsError(f"cannot read the {seg} descriptor at {base + offset:#x}: {e}") from e
        lo, hi = struct.unpack("<QQ", raw) if system else (struct.unpack("<Q", raw)[0], 0)
        return _descriptor_fields(lo, hi)

    def load_guest_state(self, cpu: "VCpu") -> None:
        """Load the guest-state area into the vCPU, as VM entry does (SDM 27.3.2).

        Control registers go in the order Unicorn needs to keep paging consistent (EFER, CR3,
        CR4, CR0); ES/DS/FS/GS are reloaded from their selectors (Unicorn reads the
        descriptor), CS/SS at the CPL that SS.DPL gives.
        """
        f = self.read
        uc = cpu.uc
        cpu.set_msr(MSR_IA32_EFER, f(VmcsField.GUEST_IA32_EFER))
        for name in ("cr3", "cr4", "cr0"):
            cpu.set_reg(name, f(VmcsField[f"GUEST_{name.upper()}"]))
        uc.reg_write(x86.UC_X86_REG_DR7, f(VmcsField.GUEST_DR7))
        for msr, field in _MSR_FIELDS:
            cpu.set_msr(msr, f(field))
        cpu.set_descriptor_table("gdtr", f(VmcsField.GUEST_GDTR_BASE), f(VmcsField.GUEST_GDTR_LIMIT))
        cpu.set_descriptor_table("idtr", f(VmcsField.GUEST_IDTR_BASE), f(VmcsField.GUEST_IDTR_LIMIT))
        for reg, seg in ((x86.UC_X86_REG_LDTR, "LDTR"), (x86.UC_X86_REG_TR, "TR")):
            ar = f(VmcsField[f"GUEST_{seg}_AR_BYTES"])
            uc.reg_write(reg, (f(VmcsField[f"GUEST_{seg}_SELECTOR"]), f(VmcsField[f"GUEST_{seg}_BASE"]),
                               f(VmcsField[f"GUEST_{seg}_LIMIT"]),
                               0 if ar & AR_UNUSABLE else (ar & 0xF0FF) << 8))  # QEMU's flags layout
        cpl = (f(VmcsField.GUEST_SS_AR_BYTES) >> AR_DPL_SHIFT) & 3
        cpu.load_segments(cpl, f(VmcsField.GUEST_CS_SELECTOR), f(VmcsField.GUEST_SS_SELECTOR))
        for seg in ("es", "ds", "fs", "gs"):
            cpu.set_reg(seg, f(_segment_fields(seg)[0]))
        cpu.set_reg("fs_base", f(VmcsField.GUEST_FS_BASE))
        cpu.set_reg("gs_base", f(VmcsField.GUEST_GS_BASE))
        for name in ("rsp", "rflags", "rip"):
            cpu.set_reg(name, f(VmcsField[f"GUEST_{name.upper()}"]))
        cpu.halted = f(VmcsField.GUEST_ACTIVITY_STATE) == ActivityState.HLT
        cpu.flush_tlb()

    # ------------------------------------------------------------- console
    def dump(self) -> list[str]:
        """`info vmcs`: every written field by area, with the SDM meaning of the coded ones."""
        lines = [f"VMCS revision {self.revision_id:#x}, launch state {self.launch_state.value}"]
        for area in (FieldType.CONTROL, FieldType.GUEST_STATE, FieldType.HOST_STATE, FieldType.EXIT_INFO):
            present = sorted(f for f in self.fields if f.type is area)
            if not present:
                continue
            lines.append(f"{area.title}:")
            for field in present:
                value = self.fields[field]
                digits = field.width.bits // 4
                note = self._describe(field, value)
                lines.append(f"  {field.name:<30} {value:#0{digits + 2}x}" + (f"  {note}" if note else ""))
        if self.msr_store:
            lines.append("VM-exit MSR-store area:")
            for msr, value in self.msr_store.items():
                lines.append(f"  {MSR_NAMES.get(msr, hex(msr)):<30} {value:#018x}")
        return lines

    def _describe(self, field: VmcsField, value: int) -> str:
        """The SDM meaning of a coded field's value; "" for plain values and reserved codes."""
        try:
            if field in _CONTROL_BIT_NAMES:
                return describe_controls(field, value)
            if field.name.endswith("_AR_BYTES"):
                return describe_access_rights(value)
            if field in (VmcsField.VM_ENTRY_INTR_INFO_FIELD, VmcsField.VM_EXIT_INTR_INFO,
                         VmcsField.IDT_VECTORING_INFO_FIELD):
                return describe_intr_info(value)
            if field is VmcsField.VM_EXIT_REASON:
                return describe_exit_reason(value)
            if field is VmcsField.VM_INSTRUCTION_ERROR and value:
                return VmInstructionError(value).sdm_name
            if field is VmcsField.GUEST_ACTIVITY_STATE:
                return ActivityState(value).name
            if field is VmcsField.EXIT_QUALIFICATION:
                reason = self.fields.get(VmcsField.VM_EXIT_REASON, -1) & 0xFFFF
                decoder = _QUALIFICATION_DECODERS.get(reason)
                return decoder(value) if decoder else ""
        except ValueError:
            pass
        return ""


_QUALIFICATION_DECODERS = {
    ExitReason.EPT_VIOLATION: describe_ept_violation_qualification,
    ExitReason.IO_INSTRUCTION: describe_io_qualification,
    ExitReason.CR_ACCESS: describe_cr_access_qualification,
}
