"""The monitor launched under bare-metal x86 code: the same steps the host driver takes.

A kernel-mode snippet calls the real image's entry stub, whose VMXON hands the CPU to the
monitor; the snippet then goes on as a guest under the EPT. No guest OS, so each rule is seen
on its own: resume at the return address with RAX=0, zero page reads, EPT violations become
#GP(0) through the guest's IDT, CPUID shows the monitor, hypercall privilege rules, teardown.
"""

from __future__ import annotations

import struct

import pytest

from hyperenclave.platform.cpu import GP, UD
from hyperenclave.platform.memory import MiB
from hyperenclave.vmm import image as img
from hyperenclave.vmm.monitor import Monitor
from hyperenclave.vmm.vmcs import ExitReason, VmcsField
from tests.support.baremetal import KERNEL, KSTACK, BareMetal

HV = 32 * MiB            # monitor memory [32, 48) MiB, EPC [48, 64) MiB
HV_SIZE = 16 * MiB
EPC, EPC_SIZE = HV + HV_SIZE, 16 * MiB
GP_HANDLER, UD_HANDLER = 0x110000, 0x111000   # report vector, error code / RIP, then stop

GP_REPORT = """
    mov $13, %eax ; out %eax, $0xe9
    mov (%rsp), %rax ; out %eax, $0xe9
    mov 8(%rsp), %rax ; out %eax, $0xe9
    mov $0x2000, %ax ; out %ax, $0xea
1:  jmp 1b
"""
UD_REPORT = """
    mov $6, %eax ; out %eax, $0xe9
    mov (%rsp), %rax ; out %eax, $0xe9
    mov $0x2000, %ax ; out %ax, $0xea
1:  jmp 1b
"""


@pytest.fixture(scope="module")
def monitor_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return img.build_monitor_image(cache_dir=tmp_path_factory.mktemp("monitor"))


def place(bm: BareMetal, image: bytes, **override: int) -> None:
    """What the driver does: copy the image to monitor memory and fill its fields."""
    h = img.MonitorImage.parse(image, len(image))
    data = bytearray(image)
    fields = dict(max_cpus=1, online_cpus=1, hv=HV, hv_size=HV_SIZE, epc=EPC, epc_size=EPC_SIZE,
                  percpu=HV + h.percpu_offset, tpm=0xFED40000)
    fields.update(override)
    struct.pack_into("<IIQQQQQQII", data, img.OFF_MAX_CPUS, fields["max_cpus"],
                     fields["online_cpus"], fields["hv"], fields["hv_size"], fields["epc"],
                     fields["epc_size"], fields["percpu"], fields["tpm"], 0, 0)
    bm.memory.write(HV, bytes(data))


def machine(image: bytes, after_entry: str, **override: int) -> tuple[BareMetal, Monitor]:
    bm = BareMetal()
    monitor = Monitor(bm.memory)
    bm.cpu.vmx_root = monitor
    place(bm, image, **override)
    bm.memory.write(EPC, b"EPC SECRET".ljust(64, b"!"))
    bm.memory.write(HV + 0x800000, b"MONITOR SECRET")
    bm.load(GP_HANDLER, GP_REPORT)
    bm.load(UD_HANDLER, UD_REPORT)
    bm.set_gate(GP, GP_HANDLER)
    bm.set_gate(UD, UD_HANDLER)
    bm.load(KERNEL, f"""
        xor %edi, %edi
        movabs ${HV + img.HE_HEADER_SIZE}, %rbx
        call *%rbx
        out %eax, $0xe9                  # entry's return value
        {after_entry}
        mov $0x2000, %ax ; out %ax, $0xea
    1:  jmp 1b
    """)
    return bm, monitor


def test_entry_returns_zero_and_the_caller_runs_on_as_a_guest(monitor_image: bytes) -> None:
    bm, mon = machine(monitor_image, "mov %rsp, %rax ; out %eax, $0xe9")
    bm.run(KERNEL)
    ret, rsp = bm.recorder.values[:2]
    assert ret == 0
    assert rsp == KSTACK - 0x100, "the stack is as it was before the call"
    assert mon.enabled and bm.cpu.intercept is mon
    vmcs = mon.vmcs[0]
    assert vmcs.read(VmcsField.GUEST_CR3) == bm.cpu.reg("cr3")
    assert vmcs.read(VmcsField.EPT_POINTER) == mon.ept.eptp
    assert vmcs.read(VmcsField.EPT_POINTER) & 0x38 == 3 << 3, "4-level walk"


def test_monitor_memory_and_epc_read_as_the_zero_page(monitor_image: bytes) -> None:
    bm, mon = machine(monitor_image, f"""
        movabs ${EPC}, %rbx ; mov (%rbx), %rax ; out %eax, $0xe9
        movabs ${HV + 0x800000}, %rbx ; mov (%rbx), %rax ; out %eax, $0xe9
        movabs ${HV}, %rbx ; mov (%rbx), %rax ; out %eax, $0xe9
    """)
    bm.run(KERNEL)
    assert bm.recorder.values[:4] == [0, 0, 0, 0]
    hpa, perms = bm.cpu.translate(EPC)
    assert hpa == mon.layout.zero_page and perms == 1      # read-only
    assert bm.memory.read(EPC, 10) == b"EPC SECRET", "the EPC itself is untouched"


@pytest.mark.parametrize("access, code, qual_bits", [
    ("write", "movq $1, (%rbx)", 0b010),
    ("fetch", "call *%rbx", 0b100),
])
def test_forbidden_access_is_an_ept_violation_injected_as_gp(monitor_image: bytes, access: str,
                                                             code: str, qual_bits: int) -> None:
    bm, mon = machine(monitor_image, f"movabs ${EPC + 0x1238}, %rbx ; {code}")
    bm.run(KERNEL)
    ret, vector, error_code, rip = bm.recorder.values[:4]
    assert (ret, vector, error_code) == (0, GP, 0)
    expected_rip = EPC + 0x1238 if access == "fetch" else KERNEL + 0x1a
    assert rip == expected_rip, "the faulting instruction, or the fetch target"
    assert mon.exit_counts[ExitReason.EPT_VIOLATION] == 1
    v = mon.violations[0]
    assert v.gpa == EPC + 0x1238 and v.linear == EPC + 0x1238 and v.access == access
    assert v.qualification & 0b111 == qual_bits
    assert v.qualification >> 3 & 0b111 == 0b001, "the EPT entry found grants read only"
    assert v.qualification & (1 << 7) and v.qualification & (1 << 8), "linear address valid, translated"
    assert bm.memory.read(EPC, 10) == b"EPC SECRET"


def test_cpuid_shows_the_monitor_and_hides_vmx(monitor_image: bytes) -> None:
    bm, mon = machine(monitor_image, """
        mov $0x40000000, %eax ; cpuid ; mov %ebx, %eax ; out %eax, $0xe9
        mov %ecx, %eax ; out %eax, $0xe9 ; mov %edx, %eax ; out %eax, $0xe9
        mov $1, %eax ; cpuid ; mov %ecx, %eax ; out %eax, $0xe9
    """)
    bm.run(KERNEL)
    b, c, d, ecx1 = bm.recorder.values[1:5]
    assert struct.pack("<III", b, c, d) == b"HyperEnclave"
    assert not ecx1 & (1 << 5) and ecx1 & (1 << 31)
    assert mon.exit_counts[ExitReason.CPUID] == 2


def test_vmx_is_advertised_before_the_monitor_runs() -> None:
    bm = BareMetal()
    bm.load(KERNEL, "mov $1, %eax ; cpuid ; mov %ecx, %eax ; out %eax, $0xe9 ; 1: jmp 1b")
    bm.run(KERNEL, slices=1)
    assert bm.recorder.values[0] & (1 << 5)


def test_user_level_hypercall_from_kernel_mode_is_ud(monitor_image: bytes) -> None:
    bm, mon = machine(monitor_image, "mov $0x80000000, %eax ; vmcall")
    bm.run(KERNEL)
    assert bm.recorder.values[1] == UD
    assert mon.exit_counts[ExitReason.VMCALL] == 1
    assert mon.hypercalls.failures[0x8000_0000] == 1
    assert any("user-level hypercall ENCLAVE_ENTER from CPL 0: #UD" in line for line in mon.log_lines)
    assert mon.enabled


def test_unknown_supervisor_hypercall_returns_enosys(monitor_image: bytes) -> None:
    bm, _ = machine(monitor_image, "mov $0x999, %eax ; vmcall ; out %eax, $0xe9")
    bm.run(KERNEL)
    assert bm.recorder.values[1] == (-38) & 0xFFFF_FFFF


def test_disable_hypercall_returns_the_host_to_native_and_scrubs(monitor_image: bytes) -> None:
    bm, mon = machine(monitor_image, f"""
        xor %eax, %eax ; mov $1, %edi ; vmcall ; out %eax, $0xe9
        movabs ${EPC}, %rbx ; mov (%rbx), %rax ; out %eax, $0xe9
        movq $5, (%rbx) ; mov (%rbx), %rax ; out %eax, $0xe9
    """)
    bm.run(KERNEL)
    assert bm.recorder.values[1:4] == [0, 0, 5], "disabled, scrubbed, then plain RAM again"
    assert not mon.enabled and bm.cpu.intercept is None
    assert bm.memory.read(HV + 0x800000, 14) == bytes(14)


@pytest.mark.parametrize("override, reason", [
    (dict(hv_size=2 * MiB), "monitor memory size"),
    (dict(epc_size=0), "EPC"),
    (dict(percpu=HV + 0x20000), "per-CPU areas"),
    (dict(online_cpus=0), "online"),
])
def test_bad_layout_from_the_driver_is_refused(monitor_image: bytes, override: dict, reason: str) -> None:
    bm, mon = machine(monitor_image, "", **override)
    bm.run(KERNEL)
    assert bm.recorder.values[0] == (-22) & 0xFFFF_FFFF        # -EINVAL back to the driver
    assert not mon.enabled and bm.cpu.intercept is None
    assert any(reason in line and "refused" in line for line in mon.log_lines), mon.log_lines
    assert not bm.cpu.reg("cr4") & 0x2000, "the stub leaves VMX operation"


def test_image_for_other_monitor_code_is_refused(monitor_image: bytes) -> None:
    other = bytearray(monitor_image)
    other[img.OFF_CODE_DIGEST] ^= 0xFF
    bm, mon = machine(bytes(other), "")
    bm.run(KERNEL)
    assert bm.recorder.values[0] == (-8) & 0xFFFF_FFFF         # -ENOEXEC
    assert any("rebuild the image" in line for line in mon.log_lines)


def test_vmxon_from_the_guest_is_ud(monitor_image: bytes) -> None:
    bm, mon = machine(monitor_image, f"""
        push ${HV + 0x10000} ; vmxon (%rsp)
    """)
    bm.run(KERNEL)
    assert mon.exit_counts[ExitReason.VMXON] == 1
    assert bm.recorder.values[1] == UD
    assert mon.enabled
