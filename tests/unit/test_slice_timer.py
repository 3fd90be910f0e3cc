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
