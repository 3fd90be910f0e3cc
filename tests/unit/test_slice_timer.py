"""Ending time slices from the timer thread never loses a hooked instruction.

Unicorn skips all INSN hooks but the first while a stop is pending until the translation block
ends; these guard the hook order and the timer against that (see VCpu.__init__)."""

from __future__ import annotations

from tests.support.baremetal import KERNEL, BareMetal


class CountingIntercept:
    io_exit_ports = frozenset()

    def __init__(self) -> None:
        self.cpuids = 0

    def on_cpuid(self, cpu, leaf, subleaf):
        self.cpuids += 1
        return None

    def on_event(self, cpu, event) -> bool:
        return False


def test_no_cpuid_or_out_is_lost_when_slices_end_every_50_us() -> None:
    bm = BareMetal()
    spy = CountingIntercept()
    bm.cpu.intercept = spy
    bm.load(KERNEL, """
        mov $20000, %esi
    1:  xor %eax, %eax ; xor %ecx, %ecx ; cpuid ; cpuid ; cpuid
        mov %esi, %eax ; out %eax, $0xe9
        dec %esi ; jnz 1b
    2:  jmp 2b
    """)
    bm.cpu.rip = KERNEL
    slices = 0
    while len(bm.recorder.values) < 20000 and slices < 200_000:
        bm.cpu.run_slice(50)
        slices += 1
    assert bm.recorder.values == list(range(20000, 0, -1)), "every OUT reached the device, once"
    assert spy.cpuids == 3 * 20000
    assert bm.cpu.timer.stops > 10, "slices really were cut by the timer"


def _stopped_after_syscall(rcx_is_rip: bool, flags_as_r11: bool):
    """A vCPU at CPL 3 right after a SYSCALL at USER + 5, as a slice left it with no event."""
    from tests.support.baremetal import USER
    from tests.unit.test_idt_delivery import enter_user
    bm = BareMetal()
    enter_user(bm, "mov $39, %eax ; syscall ; nop ; nop")
    bm.cpu.rip = KERNEL
    while bm.cpu.cpl != 3:                         # five pushes and the iretq to USER
        bm.cpu.run_slice(10_000, step=True)
    rflags = bm.cpu.reg("rflags")
    bm.cpu.write_registers(rip=USER + 7, rcx=USER + 7 if rcx_is_rip else 0x1234,
                           r11=rflags if flags_as_r11 else rflags ^ 0x40)
    return bm, USER


def test_a_skipped_syscall_is_recognised_and_run_again() -> None:
    bm, user = _stopped_after_syscall(rcx_is_rip=False, flags_as_r11=True)
    assert bm.cpu.replay_skipped_syscall()
    assert bm.cpu.rip == user + 5 and bm.cpu.stats.replayed_syscalls == 1
    bm, user = _stopped_after_syscall(rcx_is_rip=True, flags_as_r11=False)
    assert bm.cpu.replay_skipped_syscall(), "flags that SYSRET would have restored differ"


def test_the_state_a_syscall_returns_to_is_left_alone() -> None:
    bm, user = _stopped_after_syscall(rcx_is_rip=True, flags_as_r11=True)
    assert not bm.cpu.replay_skipped_syscall()
    assert bm.cpu.rip == user + 7


def count_syscalls(kernel: str, before: str, calls: int) -> BareMetal:
    """Ring 3 makes `calls` SYSCALLs (each after `before`) under slices of 20 us; the kernel's
    handler (`kernel`, then SYSRET) counts them in R13, which the user reports at the end."""
    from tests.unit.test_idt_delivery import KCS, enter_user
    bm = BareMetal()
    bm.cpu.set_msr(0xC0000081, (0x23 << 48) | (KCS << 32))      # STAR
    bm.cpu.set_msr(0xC0000082, 0x130000)                        # LSTAR
    bm.load(0x130000, f"inc %r13 ; {kernel} ; sysretq")
    enter_user(bm, f"""
        mov ${calls}, %r12 ; xor %r13, %r13 ; mov $0x3ff000, %rbx
    1:  {before} ; mov $39, %eax ; syscall
        dec %r12 ; jnz 1b
        mov %r13, %rax ; out %eax, $0xe9
        mov $0x2000, %ax ; out %ax, $0xea
    """)
    bm.cpu.rip = KERNEL
    slices = 0
    while not bm.bus.stop_requested and slices < 200_000:
        bm.cpu.run_slice(20)
        slices += 1
    return bm


def test_a_returned_syscall_is_never_run_twice() -> None:
    """Under a stop every 20 us, whatever the slices do, a kernel that counts SYSCALLs sees
    none of them twice."""
    bm = count_syscalls(kernel="nop", before="nop", calls=3000)
    (counted,) = bm.recorder.values
    assert counted <= 3000, "no SYSCALL ran twice"


def test_no_syscall_is_lost_when_a_fill_precedes_it_in_its_block() -> None:
    """The case that used to lose SYSCALLs: the kernel flushes the TLB (a CR3 write) on every
    call, so the user's load before each SYSCALL is a TLB fill, a Python hook in the middle of
    the SYSCALL's block. A stop issued when that hook returned made Unicorn skip the SYSCALL's
    hook, and in this loop the state left behind looks like a returned SYSCALL, so nothing
    could replay it (1 run in 4 lost thousands). Slices end every 20 us: every SYSCALL must
    still reach the kernel."""
    bm = count_syscalls(kernel="mov %cr3, %rax ; mov %rax, %cr3", before="mov (%rbx), %rdx",
                        calls=10_000)
    (counted,) = bm.recorder.values
    assert bm.cpu.timer.deadlines > 10, "slices really ran into their deadlines"
    assert counted == 10_000, f"{10_000 - counted} SYSCALLs lost"
