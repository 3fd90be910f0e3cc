"""Run control: cont, stop, step, break/delete, until, reset and `info status`.

`cont` returns at once (QEMU: the guest runs in the background and the prompt stays); `step`
and `until` wait for their stop, and Ctrl-C stops the guest instead.
"""

from __future__ import annotations

import argparse
import functools

import cmd2
from cmd2 import Cmd2ArgumentParser

from hyperenclave.runcontrol import RunControl, RunState, StopInfo, Until, serial_condition
from hyperenclave.vmm.hypercall import HypercallCode
from hyperenclave.vmm.vmcs import ExitReason

from .cpu_commands import next_instruction
from .memview import ConsoleError, parse_address

CATEGORY = "Run control"


def _cont_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Continue the guest in the background (`stop` or a "
                                       "breakpoint stops it).")
    p.add_argument("-w", "--wait", action="store_true",
                   help="wait until the guest stops (breakpoint, power off), as scripts need")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: stop after S seconds")
    return p


def _step_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Execute N guest instructions (default 1), then stop; "
                                       "interrupts stay pending meanwhile (as in QEMU's gdbstub).")
    p.add_argument("count", nargs="?", type=int, default=1, help="instructions (default 1)")
    return p


def _break_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Stop when the vCPU is about to execute the instruction "
                                       "at guest-virtual ADDR; without ADDR, list breakpoints.")
    p.add_argument("address", nargs="*", help="0x..., $reg, with + or -")
    return p


def _delete_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Delete breakpoint N (all of them without N).")
    p.add_argument("number", nargs="?", type=int, help="the number `break` gave")
    return p


def _exit_reasons() -> list[str]:
    return sorted(r.name for r in ExitReason)


def _hypercall_names() -> list[str]:
    return sorted(c.name for c in HypercallCode)


def _until_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Continue until an event, then stop there "
                                       "(Ctrl-C stops earlier).")
    timeout = Cmd2ArgumentParser(add_help=False)
    timeout.add_argument("--timeout", type=float, default=None, help="stop after S seconds anyway")
    sub = p.add_subparsers(title="events", metavar="EVENT", required=True, dest="event")
    sub.add_parser = functools.partial(sub.add_parser, parents=[timeout])
    e = sub.add_parser("exit", help="the next VM exit (of REASON, e.g. CPUID, VMCALL)")
    e.add_argument("reason", nargs="?", choices_provider=lambda _self: _exit_reasons(),
                   help="an SDM basic exit reason")
    h = sub.add_parser("hypercall", help="the next hypercall (VMCALL exit), or of CODE")
    h.add_argument("code", nargs="?", choices_provider=lambda _self: _hypercall_names(),
                   help="a code name (e.g. INIT_CMRM) or number")
    n = sub.add_parser("enclave", help="the next enclave entry (EENTER/ERESUME), or into ID")
    n.add_argument("id", nargs="?", choices_provider=lambda self: self._cmd.enclave_ids(),
                   help="the enclave's SECS address")
    s = sub.add_parser("serial", help="the next guest console line matching REGEX")
    s.add_argument("regex", help="a Python regular expression")
    return p


class RunCommands(cmd2.CommandSet):
    """Stop, go on, step and stop conditions."""

    @property
    def runctl(self) -> RunControl:
        return self._cmd.runctl

    def _report(self, info: StopInfo | None) -> None:
        if info is None:
            self._cmd.poutput("the guest is still running")
        else:
            self._cmd.poutput(f"stopped: {info}")

    def _resume_and_wait(self, until: Until | None, timeout: float | None) -> None:
        """Resume, wait for the stop, or stop the guest on Ctrl-C / timeout."""
        with self._cmd.awaiting():
            self.runctl.resume(until)
            if until is not None:
                self._cmd.poutput(f"running until {until.describe()}")
            try:
                info = self.runctl.wait(timeout)
                if info is None:
                    info = self.runctl.pause()
                    self._cmd.poutput(f"timed out after {timeout} s")
            except KeyboardInterrupt:
                info = self.runctl.pause()
                self._cmd.poutput("interrupted")
        self._report(info)

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_cont_parser)
    def do_cont(self, args: argparse.Namespace) -> None:
        """Continue the guest."""
        if args.wait:
            self._resume_and_wait(None, args.timeout)
        else:
            self.runctl.resume()
            self._cmd.poutput("running")

    @cmd2.with_category(CATEGORY)
    def do_stop(self, _: cmd2.Statement) -> None:
        """Stop the guest at the next time-slice boundary (its clock stops too)."""
        if self.runctl.state is RunState.FINISHED:
            raise ConsoleError(f"the machine is not running any more ({self.runctl.last_stop})")
        with self._cmd.awaiting():
            info = self.runctl.pause()
        self._report(info)

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_step_parser)
    def do_step(self, args: argparse.Namespace) -> None:
        """Execute N instructions."""
        with self._cmd.awaiting():
            try:
                info = self.runctl.step(args.count)
            except KeyboardInterrupt:
                info = None
            if info is None:                      # interrupted, or still going after 10 s
                info = self.runctl.pause()
        self._report(info)
        if info is not None and info.rip is not None:
            self._cmd.poutput(next_instruction(self._cmd))

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_break_parser)
    def do_break(self, args: argparse.Namespace) -> None:
        """Set an instruction breakpoint at a guest-virtual address, or list them."""
        bps = self.runctl.breakpoints
        if not args.address:
            items = bps.items()
            for number, address in items:
                self._cmd.poutput(f"breakpoint {number} at {address:#x}")
            if not items:
                self._cmd.poutput("no breakpoints")
            return
        with self._cmd.inspecting():
            address = parse_address(" ".join(args.address), self._cmd.machine.cpu.registers)
            number = bps.add(address)
        self._cmd.poutput(f"breakpoint {number} at {address:#x}")

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_delete_parser)
    def do_delete(self, args: argparse.Namespace) -> None:
        """Delete a breakpoint (all without a number)."""
        bps = self.runctl.breakpoints
        with self._cmd.inspecting():
            if args.number is None:
                for number, _ in bps.items():
                    bps.delete(number)
            else:
                bps.delete(args.number)
        self._cmd.poutput("deleted")

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_until_parser)
    def do_until(self, args: argparse.Namespace) -> None:
        """Continue until a VM exit, a hypercall, an enclave entry or a console line."""
        if args.event == "exit":
            until = Until("exit", _exit_reason(args.reason) if args.reason else None)
        elif args.event == "hypercall":
            until = Until("hypercall", _hypercall_code(args.code) if args.code else None)
        elif args.event == "enclave":
            until = Until("enclave", self._cmd.enclave(args.id).secs_pa if args.id else None)
        else:
            until = serial_condition(args.regex)
        self._resume_and_wait(until, args.timeout)

    @cmd2.with_category(CATEGORY)
    def do_reset(self, _: cmd2.Statement) -> None:
        """Power-cycle the machine: a new measured boot (TPM reset), held at the first instruction."""
        app = self._cmd
        old = self.runctl
        old.close()
        app.machine.shutdown()
        app.machine.boot()
        app.attach(RunControl(app.machine).start(paused=True))
        cleared = f"; breakpoints {old.breakpoints.describe()} cleared" \
            if old.breakpoints and old.breakpoints.items() else ""
        app.poutput(f"machine reset: measured boot done, held at rip {app.machine.cpu.rip:#x}{cleared}")

    @cmd2.as_subcommand_to("info", "status", Cmd2ArgumentParser, help="run state, last stop, breakpoints")
    def info_status(self, _: argparse.Namespace) -> None:
        rc = self.runctl
        self._cmd.poutput(f"VM status: {rc.state.value}")
        if rc.last_stop is not None:
            self._cmd.poutput(f"last stop: {rc.last_stop}")
        bps = rc.breakpoints.describe() if rc.breakpoints else ""
        self._cmd.poutput(f"breakpoints: {bps or 'none'}")


def _exit_reason(text: str) -> ExitReason:
    try:
        return ExitReason[text.upper()]
    except KeyError:
        raise ConsoleError(f"unknown exit reason {text!r} (reasons: {', '.join(_exit_reasons())})") from None


def _hypercall_code(text: str) -> int:
    try:
        return HypercallCode[text.upper()]
    except KeyError:
        pass
    try:
        return int(text, 0)
    except ValueError:
        raise ConsoleError(f"unknown hypercall {text!r}: a code name ({', '.join(_hypercall_names())}) "
                           "or a number") from None
