"""Run control for a debugger: the guest runs on its own thread, a console stops and steps it.

`RunControl(machine).start()` runs `machine.run()` on a background thread, held at the first
instruction (like `qemu -S`). The machine loop asks `wait_until_running()` before each time
slice, so a stop takes effect at the next slice boundary: `pause()` cuts the running slice
(`SliceTimer.cut`), and the thread parks there with the virtual clock frozen. Stop conditions
are checked where the event happens, on the vCPU thread: a breakpoint is a Unicorn code hook
bounded to its address (present only while breakpoints exist), "next VM exit" and "next
hypercall" listen to the monitor's exits, "serial line" to the UART, and an enclave entry is
a code hook over the enclave's ELRANGE while `until enclave` waits. Single steps are slices of
one instruction with interrupts left pending (QEMU's gdbstub steps the same way), so a step
inside an enclave runs the enclave's next instruction, not an AEX to a timer tick.

Nothing here writes guest state: a stop only ends a slice early, which the guest cannot tell
from the timer ending it.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from unicorn import UC_HOOK_CODE

from .vmm.hypercall import code_name
from .vmm.vmcs import ExitReason

if TYPE_CHECKING:
    from .machine import Machine
    from .platform.cpu import VCpu


#: Stops at an instruction boundary of a live vCPU (the others end the run).
RIP_STOPS = frozenset({"stop", "step", "breakpoint", "exit", "hypercall", "enclave", "serial"})


class RunState(enum.Enum):
    """QEMU's run states, reduced to what a console shows."""

    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"        # the run ended: power off, reset, crash or quit


class RunControlError(RuntimeError):
    """A run-control request that does not fit the machine's state (e.g. step while running)."""


@dataclass(frozen=True)
class StopInfo:
    """Why the machine last stopped, and where."""

    reason: str                  # "stop", "step", "breakpoint", "exit", "hypercall", "enclave", "serial", "poweroff", ...
    detail: str
    rip: int | None = None

    def __str__(self) -> str:
        where = f" at rip {self.rip:#x}" if self.rip is not None else ""
        return f"{self.reason}{where}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Until:
    """A stop condition for `RunControl.resume`: the first event of `kind` that matches.

    kind "exit": a VM exit (`value` an ExitReason or None for any); "hypercall": a VMCALL exit
    (`value` a code or None); "enclave": an enclave entry (`value` a SECS address or None);
    "serial": a guest console line matching the regular expression `value`.
    """

    kind: str
    value: object = None

    def describe(self) -> str:
        if self.kind == "exit":
            return "next VM exit" + (f" {self.value.name}" if self.value is not None else "")
        if self.kind == "hypercall":
            return "next hypercall" + (f" {code_name(self.value)}" if self.value is not None else "")
        if self.kind == "enclave":
            return "next enclave entry" + (f" of {self.value:#x}" if self.value is not None else "")
        return f"a serial line matching {self.value.pattern!r}"


class Breakpoints:
    """Guest-virtual instruction breakpoints: one Unicorn code hook bounded to each address, so
    only instructions at those addresses call back (a hook on every instruction costs ~0.7 us
    each). Blocks translated before a hook was added or removed are dropped."""

    def __init__(self, cpu: "VCpu", on_hit: Callable[[int, int], None]) -> None:
        self._cpu = cpu
        self._on_hit = on_hit
        self._hooks: dict[int, tuple[int, int]] = {}     # number -> (address, hook handle)
        self._next = 1
        self.skip: int | None = None     # the address the CPU resumes at: not a hit (GDB's step-over)

    def add(self, address: int) -> int:
        for number, (addr, _) in self._hooks.items():
            if addr == address:
                return number
        number, self._next = self._next, self._next + 1
        handle = self._cpu.uc.hook_add(UC_HOOK_CODE, self._hook, number, address, address)
        self._hooks[number] = (address, handle)
        self._cpu.uc.ctl_flush_tb()
        return number

    def delete(self, number: int) -> None:
        if number not in self._hooks:
            raise RunControlError(f"no breakpoint {number} (have: {self.describe() or 'none'})")
        _, handle = self._hooks.pop(number)
        self._cpu.uc.hook_del(handle)
        self._cpu.uc.ctl_flush_tb()

    def items(self) -> list[tuple[int, int]]:
        return [(number, addr) for number, (addr, _) in sorted(self._hooks.items())]

    def describe(self) -> str:
        return ", ".join(f"{n} at {a:#x}" for n, a in self.items())

    def _hook(self, _uc: object, address: int, _size: int, number: int) -> None:
        if address == self.skip:
            self.skip = None
            return
        self._on_hit(number, address)


class RunControl:
    """Stop, step, continue and stop conditions for one machine, from another thread."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self._cond = threading.Condition()
        self._state = RunState.PAUSED
        self._want_pause: StopInfo | None = None   # set by requests and stop conditions
        self._paused_for = ""                         # the reason of the pause in effect
        self._steps = 0
        self._quit = False
        self._until: Until | None = None
        self._manager: object | None = None              # the EnclaveManager we hook EINIT of
        self._enclave_hooks: dict[int, int] = {}          # SECS -> code hook over its ELRANGE
        self._thread: threading.Thread | None = None
        self.last_stop: StopInfo | None = StopInfo("reset", "held at the first instruction")
        self.stop_listeners: list[Callable[[StopInfo], None]] = []
        self.breakpoints: Breakpoints | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self, paused: bool = True) -> "RunControl":
        """Attach to the booted machine and run it on a background thread (held if `paused`)."""
        m = self.machine
        if m.cpu is None:
            raise RunControlError("boot() the machine first")
        self.breakpoints = Breakpoints(m.cpu, self._on_breakpoint)
        m.run_control = self
        m.monitor.exit_listeners.append(self._on_exit)
        m.line_listeners.append(self._on_line)
        self._state = RunState.PAUSED if paused else RunState.RUNNING
        self._quit = False
        self._thread = threading.Thread(target=self._run, name="machine", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        info = None
        try:
            result = self.machine.run(timeout=None)
            if result.state != "stopped":             # "stopped": the console ended the run
                info = StopInfo(result.state, result.reason)
        except Exception as err:     # a bug below the console: report it rather than hang
            info = StopInfo("crashed", f"{type(err).__name__}: {err}")
            raise
        finally:
            with self._cond:
                self._state = RunState.FINISHED
                if info is not None:
                    self._stopped(info)
                self._cond.notify_all()

    def close(self) -> None:
        """End the run (the machine thread returns) and detach; the machine stays booted."""
        with self._cond:
            self._quit = True
            self._cond.notify_all()
        if self.machine.cpu is not None:
            self.machine.cpu.timer.cut()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        m = self.machine
        m.run_control = None
        if self._on_exit in m.monitor.exit_listeners:
            m.monitor.exit_listeners.remove(self._on_exit)
        if self._on_line in m.line_listeners:
            m.line_listeners.remove(self._on_line)
        self._unwatch_enclaves()
        if self._manager is not None and self._on_einit in self._manager.initialized_hooks:
            self._manager.initialized_hooks.remove(self._on_einit)
        if self.breakpoints is not None and m.cpu is not None:
            for number, _ in self.breakpoints.items():
                self.breakpoints.delete(number)

    # ------------------------------------------------------------------ requests (console thread)
    @property
    def state(self) -> RunState:
        return self._state

    def resume(self, until: Until | None = None) -> None:
        """Continue the guest in the background, stopping at `until` if given."""
        with self._cond:
            self._check_not_finished()
            if self._state is RunState.RUNNING:
                raise RunControlError("the machine is already running")
            self._arm(until)
            self._state = RunState.RUNNING
            self._cond.notify_all()

    def pause(self, timeout: float = 10.0) -> StopInfo | None:
        """Stop at the next slice boundary and wait until the machine thread is parked."""
        with self._cond:
            if self._state is not RunState.RUNNING:
                return self.last_stop
            if self._want_pause is None:
                self._want_pause = StopInfo("stop", "stopped by the console")
        self.machine.cpu.timer.cut()
        return self.wait(timeout)

    def step(self, count: int = 1, timeout: float = 10.0) -> StopInfo | None:
        """Execute `count` instructions (interrupts stay pending), then stop again."""
        if count < 1:
            raise RunControlError(f"step count {count} must be at least 1")
        with self._cond:
            self._check_not_finished()
            if self._state is RunState.RUNNING:
                raise RunControlError("the machine is running: `stop` it first")
            self._arm(None)
            self._steps = count
            self._state = RunState.RUNNING
            self._cond.notify_all()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> StopInfo | None:
        """Block until the machine is no longer running; None if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._state is RunState.RUNNING:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                # short waits keep the caller's thread responsive to Ctrl-C
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            return self.last_stop

    @contextmanager
    def inspecting(self) -> Iterator[None]:
        """Hold the machine at a slice boundary for a consistent look, then let it go on if it
        was running (the guest does not see the pause: its clock is frozen meanwhile)."""
        running = self._state is RunState.RUNNING
        if running:
            with self._cond:
                if self._want_pause is None:
                    self._want_pause = StopInfo("inspect", "")
            self.machine.cpu.timer.cut()
            self.wait()
        try:
            yield
        finally:
            if running and self._state is RunState.PAUSED and self._paused_for == "inspect":
                with self._cond:
                    self._state = RunState.RUNNING
                    self._cond.notify_all()

    def _arm(self, until: Until | None) -> None:
        self._until = until
        self._want_pause = None
        self._steps = 0
        m = self.machine
        if self.breakpoints is not None:
            self.breakpoints.skip = m.cpu.rip
        if until is not None and until.kind == "enclave":
            self._watch_enclaves()

    def _check_not_finished(self) -> None:
        if self._state is RunState.FINISHED:
            last = self.last_stop
            raise RunControlError(f"the machine is not running any more ({last}); "
                                  "`reset` boots it again")

    # ------------------------------------------------------------------ the machine thread
    def wait_until_running(self) -> bool:
        """Called by the machine loop before each slice: park while paused (the virtual clock
        frozen); False when the run must end."""
        with self._cond:
            if self._want_pause is not None:
                self._paused_for = self._want_pause.reason
                self._stopped(self._want_pause)
                self._want_pause = None
                self._state = RunState.PAUSED
                self._cond.notify_all()
            if self._state is RunState.PAUSED and not self._quit:
                parked = time.perf_counter_ns()
                while self._state is RunState.PAUSED and not self._quit:
                    self._cond.wait()
                self.machine.skip_clock(time.perf_counter_ns() - parked)
            return not self._quit

    def run_slice(self, slice_us: int) -> None:
        """One slice for the machine loop: a single instruction while stepping."""
        cpu = self.machine.cpu
        stepping = self._steps > 0
        cpu.run_slice(slice_us, step=stepping)
        if self.breakpoints is not None:
            self.breakpoints.skip = None
        with self._cond:
            if stepping and self._want_pause is None:
                self._steps -= 1
                if not self._steps:
                    self._want_pause = StopInfo("step", "", cpu.rip)
            if self._until is not None and self._until.kind == "enclave":
                self._watch_enclaves()

    # ------------------------------------------------------------------ `until enclave`
    def _watch_enclaves(self) -> None:
        """A code hook over each initialized enclave's ELRANGE: its first instruction stops the
        guest, however the enclave was entered (ENCLU or hypercall, EENTER or ERESUME, in the
        CPU loop or not). Runs between slices; an EINIT meanwhile cuts the slice short."""
        manager = self.machine.monitor.enclaves
        if manager is None:
            return
        if manager is not self._manager:
            self._manager = manager
            manager.initialized_hooks.append(self._on_einit)
        uc = self.machine.cpu.uc
        for secs, enclave in manager.enclaves.items():
            if enclave.initialized and secs not in self._enclave_hooks \
                    and self._until.value in (None, secs):
                lo, hi = enclave.elrange
                self._enclave_hooks[secs] = uc.hook_add(UC_HOOK_CODE, self._on_enclave_code,
                                                        secs, lo, hi - 1)
                uc.ctl_flush_tb()

    def _unwatch_enclaves(self) -> None:
        uc = self.machine.cpu.uc if self.machine.cpu is not None else None
        for handle in self._enclave_hooks.values():
            if uc is not None:
                uc.hook_del(handle)
        if self._enclave_hooks and uc is not None:
            uc.ctl_flush_tb()
        self._enclave_hooks.clear()

    def _on_einit(self, _enclave: object) -> None:
        if self._until is not None and self._until.kind == "enclave":
            self.machine.cpu.timer.cut()           # hook it at the slice boundary

    def _on_enclave_code(self, _uc: object, address: int, _size: int, secs: int) -> None:
        runner = self.machine.monitor.runner
        thread = runner.inside.get(self.machine.cpu.index) if runner is not None else None
        if thread is not None and thread.enclave.secs_pa == secs:
            self._request_stop(StopInfo("enclave", f"entered enclave {secs:#x} on TCS "
                                        f"{thread.tcs_la:#x}", address))

    def _stopped(self, info: StopInfo) -> None:
        """The machine thread parks (or the run ended): record why, tell the listeners. A pause
        for `inspecting()` is no stop: the run and its pending condition go on afterwards."""
        if info.reason == "inspect":
            return
        if info.rip is None and info.reason in RIP_STOPS and self.machine.cpu is not None:
            info = StopInfo(info.reason, info.detail, self.machine.cpu.rip)
        self.last_stop = info
        self._until = None
        self._steps = 0
        self._unwatch_enclaves()
        for listener in self.stop_listeners:
            listener(info)

    def _request_stop(self, info: StopInfo) -> None:
        """A stop condition hit on the vCPU thread: end the slice right here."""
        with self._cond:
            if self._want_pause is None:
                self._want_pause = info
        self.machine.cpu.timer.cut()

    def _on_breakpoint(self, number: int, address: int) -> None:
        self._request_stop(StopInfo("breakpoint", f"breakpoint {number}", address))

    def _on_exit(self, cpu: "VCpu", reason: ExitReason) -> None:
        until = self._until
        if until is None or self._state is not RunState.RUNNING:
            return
        if until.kind == "exit" and until.value in (None, reason):
            self._request_stop(StopInfo("exit", f"VM exit {reason.name}"))
        elif until.kind == "hypercall" and reason is ExitReason.VMCALL:
            code = cpu.reg("rax") & 0xFFFF_FFFF_FFFF_FFFF
            if until.value in (None, code):
                self._request_stop(StopInfo("hypercall", f"VM exit VMCALL {code_name(code)}"))

    def _on_line(self, line: str) -> None:
        until = self._until
        if until is not None and until.kind == "serial" and until.value.search(line):
            self._request_stop(StopInfo("serial", f"serial line {line!r}"))


def serial_condition(pattern: str) -> Until:
    """`until serial REGEX`, with the regular expression checked now."""
    try:
        return Until("serial", re.compile(pattern))
    except re.error as err:
        raise RunControlError(f"bad regular expression {pattern!r}: {err}") from None
