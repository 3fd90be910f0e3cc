"""Exceptions, interrupts and SYSCALL are delivered through the guest's own IDT/TSS/MSRs."""

import struct

import pytest

from hyperenclave.platform.cpu import MachineCheck
from tests.support.baremetal import (IDT, ISTSTACK, KCS, KERNEL, KSTACK, UCS, UDS, USER, USTACK,
                                     BareMetal)

REPORT_FRAME = """
    mov %cr2, %rax ; out %eax, $0xe9
    mov %rsp, %rax ; out %eax, $0xe9
    xor %ecx, %ecx
1:  mov (%rsp,%rcx,8), %rax ; out %eax, $0xe9
    inc %ecx ; cmp $6, %ecx ; jne 1b
    mov $0x2000, %ax ; out %ax, $0xea
2:  jmp 2b
"""


def enter_user(bm: BareMetal, user_source: str) -> None:
    """Kernel code that drops to ring 3 with iretq at USER."""
    bm.load(USER, user_source)
    bm.load(KERNEL, f"""
        pushq ${UDS} ; pushq ${USTACK - 0x80} ; pushq $0x202 ; pushq ${UCS} ; pushq ${USER}
        iretq
    """)


def test_user_page_fault_switches_to_rsp0_and_pushes_error_code() -> None:
    bm = BareMetal()
    bm.load(0x110000, REPORT_FRAME)
    bm.set_gate(14, 0x110000)
    enter_user(bm, "movabs $0x7000008, %rbx ; movq $1, (%rbx)")
    bm.run(KERNEL)
    cr2, rsp, err, rip, cs, rflags, old_rsp, ss = bm.recorder.values[:8]
    assert cr2 == 0x7000008
    assert rsp == KSTACK - 6 * 8                 # frame of 6 words on TSS.RSP0
    assert err == 0b110                          # not present | write | user
    assert rip == USER + 10                      # the faulting store
    assert cs == UCS and ss == UDS and old_rsp == USTACK - 0x80
    assert rflags & 0x200                        # IF was set in user mode
    assert bm.cpu.cpl == 0 and bm.cpu.reg("cs") == KCS


def test_interrupt_gate_clears_if_and_ist_selects_stack() -> None:
    bm = BareMetal()
    bm.load(0x110000, REPORT_FRAME.replace("mov %cr2, %rax ; out %eax, $0xe9", "pushfq ; popq %rax ; out %eax, $0xe9"))
    bm.set_gate(3, 0x110000, ist=1, dpl=3)
    enter_user(bm, "int3")
    bm.run(KERNEL)
    flags_in_handler, rsp, rip = bm.recorder.values[:3]
    assert not flags_in_handler & 0x200
    assert rsp == ISTSTACK - 5 * 8               # no error code for #BP
    assert rip == USER + 1                       # a trap: after the int3


def test_software_int_to_kernel_only_gate_is_gp_with_idt_error_code() -> None:
    bm = BareMetal()
    bm.load(0x110000, REPORT_FRAME)
    bm.set_gate(13, 0x110000)
    bm.set_gate(0x80, 0x120000, dpl=0)
    enter_user(bm, "int $0x80")
    bm.run(KERNEL)
    err = bm.recorder.values[2]
    assert err == 0x80 * 8 + 2                   # IDT bit set, index 0x80


def test_general_protection_fault_from_privileged_instruction() -> None:
    bm = BareMetal()
    bm.load(0x110000, REPORT_FRAME)
    bm.set_gate(13, 0x110000)
    enter_user(bm, "mov %rax, %cr3")
    bm.run(KERNEL)
    err, rip, cs = bm.recorder.values[2:5]
    assert (err, rip, cs) == (0, USER, UCS)


def test_invalid_opcode_is_delivered_as_ud() -> None:
    bm = BareMetal()
    bm.load(0x110000, REPORT_FRAME)
    bm.set_gate(6, 0x110000)
    enter_user(bm, "ud2")
    bm.run(KERNEL)
    rip = bm.recorder.values[2]  # no error code: frame starts with RIP
    assert rip == USER


def test_vmcall_without_a_hypervisor_is_ud() -> None:
    bm = BareMetal()
    bm.load(0x110000, REPORT_FRAME)
    bm.set_gate(6, 0x110000)
    enter_user(bm, "nop ; vmcall")
    bm.run(KERNEL)
    assert bm.recorder.values[2] == USER + 1


def test_syscall_follows_star_lstar_fmask() -> None:
    bm = BareMetal()
    bm.cpu.set_msr(0xC0000081, (0x23 << 48) | (KCS << 32))
    bm.cpu.set_msr(0xC0000082, 0x130000)
    bm.cpu.set_msr(0xC0000084, 0x200)  # clear IF on entry
    bm.load(0x130000, """
        mov %rcx, %rax ; out %eax, $0xe9
        mov %r11, %rax ; out %eax, $0xe9
        pushfq ; popq %rax ; out %eax, $0xe9
        mov %cs, %ax ; out %eax, $0xe9
        mov %ss, %ax ; out %eax, $0xe9
        sysretq
    """)
    enter_user(bm, "mov $60, %eax ; syscall ; mov $0x2000, %ax ; out %ax, $0xea")
    bm.run(KERNEL)
    rcx, r11, rflags, cs, ss = bm.recorder.values[:5]
    assert rcx == USER + 7 and r11 & 0x200 and not rflags & 0x200
    assert (cs, ss) == (KCS, KCS + 8)
    assert bm.bus.stop_requested == "poweroff"   # sysretq returned to user mode natively
    assert bm.cpu.cpl == 3


def test_syscall_with_efer_sce_clear_is_ud() -> None:
    bm = BareMetal()
    bm.cpu.set_msr(0xC0000080, 0xD00)
    bm.load(0x110000, REPORT_FRAME)
    bm.set_gate(6, 0x110000)
    enter_user(bm, "syscall")
    bm.run(KERNEL)
    assert bm.recorder.values[2] == USER


def test_fault_while_pushing_the_frame_is_double_fault() -> None:
    bm = BareMetal()
    bm.load(0x110000, REPORT_FRAME)
    bm.set_gate(8, 0x110000, ist=1)
    bm.set_gate(14, 0x120000)
    bm.memory.write_u64(0x3000 + 4, 0x7000000)   # RSP0 points at unmapped memory
    enter_user(bm, "movq $1, 0x7000000")
    bm.run(KERNEL)
    err, rip = bm.recorder.values[2:4]
    assert err == 0 and rip == USER


def test_triple_fault_is_a_machine_reset_with_reason() -> None:
    bm = BareMetal()
    bm.cpu.set_descriptor_table("idtr", IDT, 0)  # empty IDT: every delivery fails
    bm.load(KERNEL, "ud2")
    with pytest.raises(MachineCheck) as info:
        bm.run(KERNEL)
    assert info.value.reset
    assert "triple fault" in info.value.reason and "#UD" in info.value.reason
