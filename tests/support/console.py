"""Drive the monitor console in-process, command by command, as a script would (standard
input not a terminal: batch mode, errors set the exit status)."""

from __future__ import annotations

import contextlib
import io

from hyperenclave.machine import Machine
from hyperenclave.runcontrol import RunControl
from hyperenclave.tools.console import HvConsole


class ConsoleSession:
    """One console on a booted machine, held at its first instruction."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.out = io.StringIO()
        self.app = HvConsole(machine, RunControl(machine).start(paused=True),
                             stdin=io.StringIO(""), stdout=self.out, interactive=False)

    def run(self, line: str) -> str:
        """Run one command line; returns what it printed (errors included)."""
        start = len(self.out.getvalue())
        with contextlib.redirect_stderr(self.out):
            self.app.onecmd_plus_hooks(line)
        return self.out.getvalue()[start:]

    def close(self) -> None:
        self.app.runctl.close()
