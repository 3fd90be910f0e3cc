"""The console application: a cmd2 shell over one machine and its `RunControl`.

cmd2 gives the parsing (argparse per command), tab completion of commands and arguments,
`help CMD`, a persistent history file, `run_script`, and batch mode when standard input is not
a terminal. Commands live in command sets by concern (run control, CPU, monitor, TPM, host);
`info` is one command whose subcommands those sets add, as in QEMU's monitor.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import cmd2
from cmd2 import Cmd2ArgumentParser, constants
from cmd2.exceptions import Cmd2ArgparseError

from hyperenclave.machine import default_state_root
from hyperenclave.runcontrol import RunControl, RunControlError, StopInfo

from .cpu_commands import CpuCommands
from .attest_commands import AttestCommands
from .host_commands import HostCommands
from .memview import ConsoleError, MemView
from .monitor_commands import MonitorCommands
from .run_commands import RunCommands
from .tpm_commands import TpmCommands

if TYPE_CHECKING:
    from hyperenclave.machine import Machine
    from hyperenclave.vmm.enclave import Enclave

PROMPT = "(hyperenclave) "
#: Errors a command reports as one line (anything else is a bug and keeps cmd2's report).
USER_ERRORS = (ConsoleError, RunControlError)


def _info_parser() -> Cmd2ArgumentParser:
    parser = Cmd2ArgumentParser(description="Show machine, monitor, enclave and TPM state "
                                            "(QEMU's `info`).")
    parser.add_subparsers(title="what", metavar="WHAT", required=True)
    return parser


class HvConsole(cmd2.Cmd):
    """The hypervisor monitor console of one machine."""

    def __init__(self, machine: "Machine", run_control: RunControl, *, stdin=None, stdout=None,
                 history_file: str = "", startup_script: str = "",
                 interactive: bool | None = None) -> None:
        shortcuts = {**constants.DEFAULT_SHORTCUTS, "x/": "x -f", "xp/": "xp -f"}
        super().__init__(stdin=stdin, stdout=stdout, allow_cli_args=False, auto_suggest=False,
                         persistent_history_file=history_file, shortcuts=shortcuts,
                         startup_script=startup_script,
                         command_sets=[RunCommands(), CpuCommands(), MonitorCommands(),
                                       TpmCommands(), HostCommands(), AttestCommands()])
        self.machine = machine
        self.runctl = run_control
        self.prompt = PROMPT
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self.awaiting_stop = False
        self.echo = not self.interactive          # batch output reads like a session
        self.hidden_commands += ["edit", "shell", "run_pyscript", "macro", "alias", "shortcuts"]
        self.attach(run_control)

    # ------------------------------------------------------------------ machine plumbing
    def attach(self, run_control: RunControl) -> None:
        self.runctl = run_control
        self.mem = MemView(self.machine, self.vm_name)
        run_control.stop_listeners.append(self._on_stop)

    def _on_stop(self, info: StopInfo) -> None:
        """Stops that happen while the prompt waits (breakpoints, power off after `cont`) are
        announced above it; a command that waits for its stop reports it itself."""
        if self.interactive and not self.awaiting_stop:
            self.add_alert(msg=f"stopped: {info}")

    @contextmanager
    def awaiting(self) -> Iterator[None]:
        """A command waits for the guest to stop (step, until, cont --wait, stop)."""
        self.awaiting_stop = True
        try:
            yield
        finally:
            self.awaiting_stop = False

    @contextmanager
    def inspecting(self) -> Iterator[None]:
        """A consistent look at the machine: held at a slice boundary if it is running."""
        if self.machine.cpu is None:
            raise ConsoleError("the machine is shut down")
        with self.runctl.inspecting():
            yield

    def vm_name(self) -> str:
        """The VM the vCPU is in now: the host, or the enclave it entered."""
        runner = self.machine.monitor.runner
        thread = runner.inside.get(self.machine.cpu.index) if runner is not None else None
        return "host" if thread is None else f"enclave {thread.enclave.secs_pa:#x}"

    def enclaves(self) -> dict[int, "Enclave"]:
        manager = self.machine.monitor.enclaves
        return dict(manager.enclaves) if manager is not None else {}

    def enclave(self, text: str) -> "Enclave":
        """An enclave by its ID (the EPC address of its SECS, as `info vms` lists it)."""
        try:
            secs = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise ConsoleError(f"bad enclave ID {text!r}: use its SECS address from `info vms` "
                               "(e.g. 0x31000000)") from None
        enclaves = self.enclaves()
        if secs not in enclaves:
            have = ", ".join(f"{s:#x}" for s in enclaves) or "none exist now"
            raise ConsoleError(f"unknown enclave {secs:#x} (enclaves: {have})")
        return enclaves[secs]

    def enclave_ids(self) -> list[str]:
        return [f"{secs:#x}" for secs in self.enclaves()]

    def vcpu(self, index: int | None) -> None:
        """Check a vCPU number (the machine has one)."""
        cpu = self.machine.cpu
        if cpu is None:
            raise ConsoleError("the machine is shut down")
        if index is not None and index != cpu.index:
            raise ConsoleError(f"no vCPU {index}: the machine has 1 (vCPU {cpu.index})")

    # ------------------------------------------------------------------ cmd2 behaviour
    @cmd2.with_category("Inspection")
    @cmd2.with_argparser(_info_parser)
    def do_info(self, args: argparse.Namespace) -> None:
        """Show machine, monitor, enclave and TPM state."""
        args.cmd2_subcommand_func(args)

    def _failed(self) -> None:
        """A script or a pipe exits 1 if any command failed; a person at a terminal sees it."""
        if not self.interactive:
            self.exit_code = 1

    def pexcept(self, exception: BaseException, **kwargs) -> None:
        self._failed()
        if isinstance(exception, USER_ERRORS):
            self.perror(f"error: {exception}")
        else:
            super().pexcept(exception, **kwargs)

    def onecmd(self, statement, *, add_to_history: bool = True) -> bool:
        try:
            return super().onecmd(statement, add_to_history=add_to_history)
        except Cmd2ArgparseError:
            self._failed()                       # argparse already said what was wrong
            raise

    def default(self, statement) -> bool | None:
        self._failed()
        return super().default(statement)

    def postloop(self) -> None:
        self.runctl.close()


def open_console(machine: "Machine", *, script: str | None = None, running: bool = False) -> int:
    """Attach run control to a booted `machine` and run the console (a script first if
    given) until `quit` or the end of input; returns the exit status (1 if a command failed
    in batch mode). History is kept beside the machines' TPM state."""
    if script and not Path(script).is_file():
        raise ConsoleError(f"no script file {script!r}")
    history_file = default_state_root() / "console_history"
    history_file.parent.mkdir(parents=True, exist_ok=True)
    run_control = RunControl(machine).start(paused=not running)
    app = HvConsole(machine, run_control, history_file=str(history_file),
                    startup_script=script or "")
    return app.cmdloop()
