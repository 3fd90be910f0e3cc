"""The VMCS model: SDM Appendix B encodings, Appendix C exit reasons, exit qualifications,
event-information fields, VMREAD/VMWRITE semantics and guest-state capture from a live vCPU."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperenclave.vmm import vmcs as V
from hyperenclave.vmm.ept import Access, EptPerm, EptViolation
from hyperenclave.vmm.vmcs import (
    CrAccessQualification,
    CrAccessType,
    EptViolationQualification,
    ExitReason,
    FieldType,
    FieldWidth,
    InterruptionType,
    IntrInfo,
    IoQualification,
    LaunchState,
    Vmcs,
    VmcsError,
    VmcsField,
    VmInstructionError,
)
from tests.support.baremetal import GDT, KCS, KDS, KERNEL, KSTACK, PML4, TSS, TSS_SEL, BareMetal

# ------------------------------------------------------------------------------ encodings

SDM_ENCODINGS = {
    "VIRTUAL_PROCESSOR_ID": 0x0000, "GUEST_ES_SELECTOR": 0x0800, "GUEST_TR_SELECTOR": 0x080E,
    "HOST_CS_SELECTOR": 0x0C02, "HOST_TR_SELECTOR": 0x0C0C, "IO_BITMAP_A": 0x2000,
    "IO_BITMAP_B": 0x2002, "MSR_BITMAP": 0x2004, "EPT_POINTER": 0x201A,
    "GUEST_PHYSICAL_ADDRESS": 0x2400, "VMCS_LINK_POINTER": 0x2800, "GUEST_IA32_DEBUGCTL": 0x2802,
    "GUEST_IA32_PAT": 0x2804, "GUEST_IA32_EFER": 0x2806, "HOST_IA32_PAT": 0x2C00,
    "HOST_IA32_EFER": 0x2C02, "PIN_BASED_VM_EXEC_CONTROL": 0x4000,
    "CPU_BASED_VM_EXEC_CONTROL": 0x4002, "EXCEPTION_BITMAP": 0x4004, "VM_EXIT_CONTROLS": 0x400C,
    "VM_ENTRY_CONTROLS": 0x4012, "VM_ENTRY_INTR_INFO_FIELD": 0x4016,
    "VM_ENTRY_EXCEPTION_ERROR_CODE": 0x4018, "SECONDARY_VM_EXEC_CONTROL": 0x401E,
    "VM_INSTRUCTION_ERROR": 0x4400, "VM_EXIT_REASON": 0x4402, "VM_EXIT_INTR_INFO": 0x4404,
    "IDT_VECTORING_INFO_FIELD": 0x4408, "VM_EXIT_INSTRUCTION_LEN": 0x440C,
    "GUEST_ES_LIMIT": 0x4800, "GUEST_GDTR_LIMIT": 0x4810, "GUEST_CS_AR_BYTES": 0x4816,
    "GUEST_TR_AR_BYTES": 0x4822, "GUEST_INTERRUPTIBILITY_INFO": 0x4824,
    "GUEST_ACTIVITY_STATE": 0x4826, "GUEST_SYSENTER_CS": 0x482A, "HOST_IA32_SYSENTER_CS": 0x4C00,
    "CR0_GUEST_HOST_MASK": 0x6000, "CR4_GUEST_HOST_MASK": 0x6002, "CR0_READ_SHADOW": 0x6004,
    "CR4_READ_SHADOW": 0x6006, "EXIT_QUALIFICATION": 0x6400, "GUEST_LINEAR_ADDRESS": 0x640A,
    "GUEST_CR0": 0x6800, "GUEST_CR3": 0x6802, "GUEST_CR4": 0x6804, "GUEST_ES_BASE": 0x6806,
    "GUEST_GDTR_BASE": 0x6816, "GUEST_IDTR_BASE": 0x6818, "GUEST_DR7": 0x681A,
    "GUEST_RSP": 0x681C, "GUEST_RIP": 0x681E, "GUEST_RFLAGS": 0x6820,
    "GUEST_SYSENTER_ESP": 0x6824, "GUEST_SYSENTER_EIP": 0x6826, "HOST_CR0": 0x6C00,
    "HOST_CR3": 0x6C02, "HOST_CR4": 0x6C04, "HOST_FS_BASE": 0x6C06, "HOST_TR_BASE": 0x6C0A,
    "HOST_GDTR_BASE": 0x6C0C, "HOST_IDTR_BASE": 0x6C0E, "HOST_IA32_SYSENTER_ESP": 0x6C10,
    "HOST_IA32_SYSENTER_EIP": 0x6C12, "HOST_RSP": 0x6C14, "HOST_RIP": 0x6C16,
}


@pytest.mark.parametrize("name, encoding", SDM_ENCODINGS.items())
def test_encoding_is_the_sdm_value(name, encoding):
    assert VmcsField[name] == encoding


# What each name says about its field in the SDM's own grouping (Appendix B): a typo in an
# encoding puts a field in the wrong table.
EXIT_INFO_NAMES = {
    "GUEST_PHYSICAL_ADDRESS", "GUEST_LINEAR_ADDRESS", "EXIT_QUALIFICATION", "IO_RCX", "IO_RSI",
    "IO_RDI", "IO_RIP", "VM_INSTRUCTION_ERROR", "VM_EXIT_REASON", "VM_EXIT_INTR_INFO",
    "VM_EXIT_INTR_ERROR_CODE", "IDT_VECTORING_INFO_FIELD", "IDT_VECTORING_ERROR_CODE",
    "VM_EXIT_INSTRUCTION_LEN", "VMX_INSTRUCTION_INFO",
}
WIDTH_RULES = (  # first match wins; everything else is 32 bits
    (FieldWidth.BITS16, r"_SELECTOR$|^(VIRTUAL_PROCESSOR_ID|POSTED_INTR_NV|EPTP_INDEX|GUEST_INTR_STATUS"
                        r"|GUEST_PML_INDEX)$"),
    (FieldWidth.NATURAL, r"^(GUEST|HOST)_CR[034]$|_BASE$|^(GUEST|HOST)_R(SP|IP|FLAGS)$|^GUEST_DR7$"
                         r"|SYSENTER_E[SI]P$|^CR[04]_(GUEST_HOST_MASK|READ_SHADOW)$|^CR3_TARGET_VALUE\d$"
                         r"|^EXIT_QUALIFICATION$|^IO_R(CX|SI|DI|IP)$|^GUEST_LINEAR_ADDRESS$"
                         r"|^GUEST_PENDING_DBG_EXCEPTIONS$"),
    (FieldWidth.BITS64, r"IA32_(PAT|EFER|DEBUGCTL|PERF_GLOBAL_CTRL)$|_PDPTR\d$|^GUEST_BNDCFGS$"
                        r"|(_ADDR|_ADDRESS|_POINTER)$|(?<!EXCEPTION)_BITMAP(_[AB]|\d)?$"
                        r"|^(TSC_OFFSET|TSC_MULTIPLIER|VM_FUNCTION_CONTROL)$"),
)


def expected_class(name: str) -> tuple[FieldWidth, FieldType]:
    width = next((w for w, rule in WIDTH_RULES if re.search(rule, name)), FieldWidth.BITS32)
    if name in EXIT_INFO_NAMES:
        typ = FieldType.EXIT_INFO
    elif name.startswith("GUEST_") or name in ("VMCS_LINK_POINTER", "VMX_PREEMPTION_TIMER_VALUE"):
        typ = FieldType.GUEST_STATE
    elif name.startswith("HOST_"):
        typ = FieldType.HOST_STATE
    else:
        typ = FieldType.CONTROL
    return width, typ


@pytest.mark.parametrize("field", list(VmcsField), ids=lambda f: f.name)
def test_every_field_name_matches_its_width_and_type(field):
    assert (field.width, field.type) == expected_class(field.name)
    assert field & 1 == 0 and field & 1 << 12 == 0     # full access type; bit 12 reserved
    assert field.mask == (1 << field.width.bits) - 1


def test_encodings_are_unique():
    assert len(VmcsField.__members__) == len(VmcsField)    # an IntEnum would alias a duplicate


def test_encoding_bit_helpers():
    assert V.field_width(0x681E) is FieldWidth.NATURAL and V.field_type(0x681E) is FieldType.GUEST_STATE
    assert V.field_width(0x2001) is FieldWidth.BITS64 and V.field_type(0x4402) is FieldType.EXIT_INFO
    assert V.field_index(0x681E) == 0xF and V.field_index(0x0C0C) == 6


@pytest.mark.parametrize("name, bit", [
    ("PIN_BASED_EXT_INTR_MASK", 0), ("PIN_BASED_NMI_EXITING", 3), ("CPU_BASED_HLT_EXITING", 7),
    ("CPU_BASED_UNCOND_IO_EXITING", 24), ("CPU_BASED_USE_IO_BITMAPS", 25),
    ("CPU_BASED_USE_MSR_BITMAPS", 28), ("CPU_BASED_ACTIVATE_SECONDARY_CONTROLS", 31),
    ("SECONDARY_EXEC_ENABLE_EPT", 1), ("SECONDARY_EXEC_ENABLE_RDTSCP", 3),
    ("SECONDARY_EXEC_ENABLE_VPID", 5), ("SECONDARY_EXEC_UNRESTRICTED_GUEST", 7),
    ("SECONDARY_EXEC_ENABLE_INVPCID", 12), ("VM_EXIT_HOST_ADDR_SPACE_SIZE", 9),
    ("VM_EXIT_ACK_INTR_ON_EXIT", 15), ("VM_EXIT_SAVE_IA32_PAT", 18), ("VM_EXIT_LOAD_IA32_PAT", 19),
    ("VM_EXIT_SAVE_IA32_EFER", 20), ("VM_EXIT_LOAD_IA32_EFER", 21), ("VM_ENTRY_IA32E_MODE", 9),
    ("VM_ENTRY_LOAD_IA32_PAT", 14), ("VM_ENTRY_LOAD_IA32_EFER", 15),
])
def test_control_bits(name, bit):
    assert getattr(V, name) == 1 << bit


def test_describe_controls_names_the_set_bits():
    value = V.CPU_BASED_HLT_EXITING | V.CPU_BASED_USE_MSR_BITMAPS | 1 << 1
    assert V.describe_controls(VmcsField.CPU_BASED_VM_EXEC_CONTROL, value) == \
        "bit1|HLT_EXITING|USE_MSR_BITMAPS"


# ------------------------------------------------------------------------------ exit reasons

@pytest.mark.parametrize("reason, value, sdm_name", [
    (ExitReason.EXCEPTION_NMI, 0, "Exception or non-maskable interrupt (NMI)"),
    (ExitReason.EXTERNAL_INTERRUPT, 1, "External interrupt"), (ExitReason.TRIPLE_FAULT, 2, "Triple fault"),
    (ExitReason.CPUID, 10, "CPUID"), (ExitReason.HLT, 12, "HLT"), (ExitReason.VMCALL, 18, "VMCALL"),
    (ExitReason.VMXON, 27, "VMXON"), (ExitReason.CR_ACCESS, 28, "Control-register accesses"),
    (ExitReason.IO_INSTRUCTION, 30, "I/O instruction"), (ExitReason.MSR_READ, 31, "RDMSR"),
    (ExitReason.MSR_WRITE, 32, "WRMSR"), (ExitReason.EPT_VIOLATION, 48, "EPT violation"),
    (ExitReason.EPT_MISCONFIG, 49, "EPT misconfiguration"), (ExitReason.INVEPT, 50, "INVEPT"),
    (ExitReason.RDTSCP, 51, "RDTSCP"), (ExitReason.XSETBV, 55, "XSETBV"),
])
def test_exit_reasons(reason, value, sdm_name):
    assert reason == value and reason.sdm_name == sdm_name


def test_exit_reason_field_flags():
    assert V.exit_reason_field(ExitReason.EPT_VIOLATION, enclave_mode=True) == 48 | 1 << 27
    assert V.exit_reason_field(ExitReason.INVALID_STATE) == 33 | 1 << 31
    assert V.describe_exit_reason(48 | 1 << 27) == "EPT violation (48), from enclave mode"
    assert V.describe_exit_reason(35) == "reserved exit reason 35"


# ------------------------------------------------------------------------------ qualifications

def test_ept_violation_qualification_bits():
    q = V.ept_violation_qualification(Access.WRITE, EptPerm.RX, linear_valid=True, translated_access=True)
    assert q == 0b1_1010_1010
    assert q & 0x3F == EptViolation(0, Access.WRITE, EptPerm.RX).exit_qualification
    walk = V.ept_violation_qualification(Access.READ, EptPerm.NONE, linear_valid=True, translated_access=False)
    assert walk == 0x81
    assert V.ept_violation_qualification(Access.FETCH, 0, linear_valid=False, translated_access=True) == 0x4
    with pytest.raises(ValueError):
        V.ept_violation_qualification(Access.READ, 8)


@pytest.mark.parametrize("access", list(Access))
@pytest.mark.parametrize("perms", range(8))
@pytest.mark.parametrize("linear_valid, translated", [(True, True), (True, False), (False, False)])
def test_ept_violation_qualification_round_trip(access, perms, linear_valid, translated):
    q = V.ept_violation_qualification(access, perms, linear_valid, translated)
    assert EptViolationQualification.decode(q) == (frozenset({access}), EptPerm(perms), linear_valid, translated)


def test_ept_violation_qualification_description():
    assert V.describe_ept_violation_qualification(0x1AA) == \
        "write at the translated linear address; entries allow r-x"
    assert V.describe_ept_violation_qualification(0x81) == "read in a guest paging-structure walk; not present"
    assert V.describe_ept_violation_qualification(0x3) == "read+write no linear address; not present"


def test_io_qualification_bits_and_round_trip():
    assert V.io_qualification(0x60, 1, is_in=True) == 0x0060_0008
    assert V.io_qualification(0x3F8, 2, is_in=False, string=True, rep=True) == 0x03F8_0031
    assert V.io_qualification(0x80, 4, is_in=False, immediate=True) == 0x0080_0043
    for q in (0x0060_0008, 0x03F8_0031, 0x0080_0043):
        assert IoQualification.decode(q).encode() == q
    assert V.describe_io_qualification(0x03F8_0031) == "rep outs 2 byte(s) to port 0x3f8 (%dx)"
    assert V.describe_io_qualification(0x0060_0008) == "in 1 byte(s) from port 0x60 (%dx)"
    with pytest.raises(ValueError):
        V.io_qualification(0x60, 3, True)
    with pytest.raises(ValueError):
        V.io_qualification(0x10000, 1, True)


def test_cr_access_qualification():
    assert V.cr_access_qualification(3, CrAccessType.MOV_TO_CR, 0) == 0x3
    assert V.cr_access_qualification(3, CrAccessType.MOV_FROM_CR, 3) == 0x313
    assert V.describe_cr_access_qualification(0x904) == "mov %r9, %cr4"
    assert V.describe_cr_access_qualification(0x313) == "mov %cr3, %rbx"
    lmsw = CrAccessQualification(0, CrAccessType.LMSW, lmsw_memory=True, lmsw_source=0x1)
    assert CrAccessQualification.decode(lmsw.encode()) == lmsw
    assert str(lmsw) == "lmsw 0x1 (memory operand)"


@pytest.mark.parametrize("vector, typ, code, value", [
    (14, InterruptionType.HARDWARE_EXCEPTION, True, 0x8000_0B0E),
    (2, InterruptionType.NMI, False, 0x8000_0202),
    (0x20, InterruptionType.EXTERNAL_INTERRUPT, False, 0x8000_0020),
    (0x80, InterruptionType.SOFTWARE_INTERRUPT, False, 0x8000_0480),
    (3, InterruptionType.SOFTWARE_EXCEPTION, False, 0x8000_0603),
])
def test_intr_info(vector, typ, code, value):
    assert V.intr_info(vector, typ, code) == value
    assert IntrInfo.decode(value) == (vector, typ, code, True)


def test_intr_info_description_and_limits():
    assert V.describe_intr_info(0x8000_0B0E) == "hardware exception #PF (14) with error code"
    assert V.describe_intr_info(0x8000_0020) == "external interrupt vector 0x20"
    assert V.describe_intr_info(0x0000_0B0E) == "invalid (no event)"
    with pytest.raises(ValueError):
        V.intr_info(256, InterruptionType.EXTERNAL_INTERRUPT)


# ------------------------------------------------------------------------------ VMREAD/VMWRITE

@given(st.sampled_from(list(VmcsField)), st.integers(0, (1 << 64) - 1))
def test_write_truncates_to_the_field_width(field, value):
    vmcs = Vmcs()
    vmcs.write(field, value)
    assert vmcs.read(field) == value & field.mask


def test_widths_by_example():
    vmcs = Vmcs()
    vmcs.write(VmcsField.GUEST_CS_SELECTOR, 0x1_0010)
    vmcs.write(VmcsField.GUEST_CS_LIMIT, 0x1_FFFF_FFFF)
    vmcs.write(VmcsField.GUEST_RIP, -1)
    assert vmcs.read(VmcsField.GUEST_CS_SELECTOR) == 0x10
    assert vmcs.read(VmcsField.GUEST_CS_LIMIT) == 0xFFFF_FFFF
    assert vmcs.read(VmcsField.GUEST_RIP) == 0xFFFF_FFFF_FFFF_FFFF
    assert vmcs.read(VmcsField.HOST_RIP) == 0        # never written


def test_high_access_reaches_the_upper_half_of_a_64_bit_field():
    vmcs = Vmcs()
    vmcs.write(VmcsField.EPT_POINTER, 0x1111_2222_3333_4444)
    assert vmcs.read(VmcsField.EPT_POINTER + 1) == 0x1111_2222
    vmcs.write(VmcsField.EPT_POINTER + 1, 0xAAAA_BBBB_CCCC)
    assert vmcs.read(VmcsField.EPT_POINTER) == 0xBBBB_CCCC_3333_4444


@pytest.mark.parametrize("encoding", [0x6C18, 0x0001, 0x6801, 0x1_681E, 0x401C + 0x40])
def test_unsupported_component_is_vm_instruction_error_12(encoding):
    vmcs = Vmcs()
    with pytest.raises(VmcsError) as exc:
        vmcs.read(encoding)
    assert exc.value.error is VmInstructionError.UNSUPPORTED_VMCS_COMPONENT
    assert f"{encoding:#x}" in str(exc.value)
    assert vmcs.read(VmcsField.VM_INSTRUCTION_ERROR) == 12
    with pytest.raises(VmcsError):
        vmcs.write(encoding, 0)


def test_launch_state():
    vmcs = Vmcs()
    assert vmcs.launch_state is LaunchState.CLEAR
    with pytest.raises(VmcsError) as exc:
        vmcs.resume()
    assert exc.value.error == 5
    vmcs.launch()
    assert vmcs.launch_state is LaunchState.LAUNCHED
    vmcs.resume()
    with pytest.raises(VmcsError) as exc:
        vmcs.launch()
    assert exc.value.error == 4 and vmcs.read(VmcsField.VM_INSTRUCTION_ERROR) == 4
    vmcs.clear()
    vmcs.launch()


def test_launch_state_accepts_its_names():
    vmcs = Vmcs()
    vmcs.launch_state = "launched"
    assert vmcs.launch_state is LaunchState.LAUNCHED
    assert vmcs.dump()[0].endswith("launch state launched")
    with pytest.raises(ValueError):
        vmcs.launch_state = "running"


def test_revision_id_is_31_bits():
    assert Vmcs(0x12).revision_id == 0x12
    with pytest.raises(ValueError):
        Vmcs(1 << 31)


# ------------------------------------------------------------------------------ guest state

@pytest.fixture
def bm():
    return BareMetal()


def test_capture_guest_state_from_a_live_vcpu(bm):
    cpu = bm.cpu
    cpu.rip = KERNEL + 0x10
    cpu.set_reg("fs_base", 0x7F00_0000_1000)
    cpu.set_msr(V.MSR_LSTAR, 0xFFFF_FFFF_8100_0000)
    cpu.set_msr(V.MSR_IA32_SYSENTER_ESP, 0x1234)
    vmcs = Vmcs()
    vmcs.capture_guest_state(cpu)
    r = vmcs.read
    assert r(VmcsField.GUEST_CR3) == PML4
    assert r(VmcsField.GUEST_RIP) == KERNEL + 0x10
    assert r(VmcsField.GUEST_RSP) == KSTACK - 0x100
    assert r(VmcsField.GUEST_CR0) & 0x8000_0001 == 0x8000_0001
    assert r(VmcsField.GUEST_IA32_EFER) == 0xD01
    assert r(VmcsField.GUEST_SYSENTER_ESP) == 0x1234
    assert (r(VmcsField.GUEST_GDTR_BASE), r(VmcsField.GUEST_GDTR_LIMIT)) == (GDT, 10 * 8 - 1)
    # CS/SS from the GDT descriptors 0x00AF9A000000FFFF and 0x00CF92000000FFFF
    assert (r(VmcsField.GUEST_CS_SELECTOR), r(VmcsField.GUEST_CS_BASE), r(VmcsField.GUEST_CS_LIMIT),
            r(VmcsField.GUEST_CS_AR_BYTES)) == (KCS, 0, 0xFFFF_FFFF, 0xA09A)
    assert (r(VmcsField.GUEST_SS_SELECTOR), r(VmcsField.GUEST_SS_AR_BYTES)) == (KDS, 0xC092)
    assert r(VmcsField.GUEST_DS_AR_BYTES) == V.AR_UNUSABLE              # null selector
    assert r(VmcsField.GUEST_FS_BASE) == 0x7F00_0000_1000
    assert (r(VmcsField.GUEST_TR_SELECTOR), r(VmcsField.GUEST_TR_BASE), r(VmcsField.GUEST_TR_LIMIT),
            r(VmcsField.GUEST_TR_AR_BYTES)) == (TSS_SEL, TSS, 0x67, 0x89)
    assert r(VmcsField.GUEST_LDTR_AR_BYTES) == V.AR_UNUSABLE
    assert r(VmcsField.GUEST_ACTIVITY_STATE) == V.ActivityState.ACTIVE
    assert vmcs.msr_store[V.MSR_LSTAR] == 0xFFFF_FFFF_8100_0000


def test_capture_reads_base_and_limit_from_the_descriptor(bm):
    # a byte-granular data segment at base 0x12345678, limit 0xABCDE, DPL 0, in GDT slot 7
    desc = 0xABCDE & 0xFFFF | (0x345678 << 16) | 0x93 << 40 | 0xA << 48 | 0x12 << 56
    bm.memory.write(GDT + 7 * 8, struct.pack("<Q", desc))
    bm.cpu.set_reg("es", 0x38)
    vmcs = Vmcs()
    vmcs.capture_guest_state(bm.cpu)
    assert vmcs.read(VmcsField.GUEST_ES_BASE) == 0x12345678
    assert vmcs.read(VmcsField.GUEST_ES_LIMIT) == 0xABCDE
    assert vmcs.read(VmcsField.GUEST_ES_AR_BYTES) == 0x93


def test_capture_refuses_a_selector_beyond_the_gdt(bm):
    bm.cpu.set_descriptor_table("gdtr", GDT, 0x17)        # SS (0x18) is now beyond the limit
    with pytest.raises(VmcsError, match="ss selector 0x18"):
        Vmcs().capture_guest_state(bm.cpu)


def test_load_guest_state_restores_the_vcpu(bm):
    cpu = bm.cpu
    bm.load(KERNEL, "mov $0x77, %eax ; out %eax, $0xe9 ; mov %ds, %eax ; out %eax, $0xe9\n"
                    "rdfsbase %rax ; out %eax, $0xe9 ; 1: jmp 1b")
    cpu.rip = KERNEL
    cpu.set_reg("ds", KDS)
    cpu.set_reg("fs_base", 0x1234000)
    saved = Vmcs()
    saved.capture_guest_state(cpu)
    cpu.rip = 0xDEAD
    cpu.set_reg("rsp", 0)
    cpu.set_reg("ds", 0)
    cpu.set_reg("fs_base", 0)
    cpu.set_descriptor_table("gdtr", 0, 0)
    saved.load_guest_state(cpu)
    again = Vmcs()
    again.capture_guest_state(cpu)
    assert again.fields == saved.fields
    for _ in range(3):
        cpu.run_slice(20_000)
    assert bm.recorder.values[:3] == [0x77, KDS, 0x1234000]


def test_dump_groups_fields_by_area_and_decodes_them(bm):
    vmcs = Vmcs()
    vmcs.capture_guest_state(bm.cpu)
    vmcs.write(VmcsField.PIN_BASED_VM_EXEC_CONTROL, V.PIN_BASED_NMI_EXITING)
    vmcs.write(VmcsField.HOST_RIP, 0xFFFF_8000_0000_1000)
    vmcs.write(VmcsField.VM_EXIT_REASON, V.exit_reason_field(ExitReason.EPT_VIOLATION))
    vmcs.write(VmcsField.EXIT_QUALIFICATION, 0x1AA)
    vmcs.write(VmcsField.VM_ENTRY_INTR_INFO_FIELD, V.intr_info(13, InterruptionType.HARDWARE_EXCEPTION, True))
    lines = vmcs.dump()
    text = "\n".join(lines)
    assert lines[0] == "VMCS revision 0x1, launch state clear"
    heads = [line for line in lines if not line.startswith(" ")][1:]
    assert heads == ["control fields:", "guest-state area:", "host-state area:",
                     "VM-exit information fields:", "VM-exit MSR-store area:"]
    assert "PIN_BASED_VM_EXEC_CONTROL      0x00000008  NMI_EXITING" in text
    assert "hardware exception #GP (13) with error code" in text
    assert "GUEST_CR3                      0x0000000000010000" in text
    assert "GUEST_CS_AR_BYTES              0x0000a09a  type 0xa DPL 0 P S L G" in text
    assert "EPT violation (48)" in text
    assert "write at the translated linear address; entries allow r-x" in text
    assert "IA32_LSTAR" in text


@given(st.dictionaries(st.sampled_from(list(VmcsField)), st.integers(0, (1 << 64) - 1)))
def test_dump_copes_with_any_values(values):
    vmcs = Vmcs()
    for field, value in values.items():
        vmcs.write(field, value)
    assert len(vmcs.dump()) == 1 + len(values) + len({f.type for f in values})
