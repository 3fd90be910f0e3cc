"""Drive the monitor console in-process, in batch mode, as a script would: a whole script
at once (`run_script`) or command by command (`ConsoleSession`)."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass

from hyperenclave.machine import Machine
from hyperenclave.runcontrol import RunControl
from hyperenclave.tools.console import HvConsole
from hyperenclave.tools.console.app import PROMPT


@dataclass
class Transcript:
    """What a console session printed, split per command (commands in script order)."""

    text: str
    exit_code: int
    steps: list[tuple[str, str]]

    def output(self, command: str, nth: int = 0) -> str:
        """The output of the `nth` occurrence of `command` (exactly as typed)."""
        found = [out for cmd, out in self.steps if cmd == command]
        assert len(found) > nth, f"{command!r} was not run {nth + 1} time(s): {[c for c, _ in self.steps]}"
        return found[nth]


def run_script(machine: Machine, commands: list[str]) -> Transcript:
    """Open the console on a booted `machine` (held at its first instruction), feed it
    `commands` on a non-terminal stdin, and return what it printed (stdout and stderr)."""
    out = io.StringIO()
    run_control = RunControl(machine).start(paused=True)
    app = HvConsole(machine, run_control, stdin=io.StringIO("\n".join(commands) + "\n"),
                    stdout=out, interactive=False)
    with contextlib.redirect_stderr(out):
        code = app.cmdloop()
    return parse_transcript(out.getvalue(), code)


def parse_transcript(text: str, exit_code: int) -> Transcript:
    steps: list[tuple[str, str]] = []
    for chunk in re.split(rf"^{re.escape(PROMPT)}", text, flags=re.M)[1:]:
        command, _, output = chunk.partition("\n")
        steps.append((command, output))
    return Transcript(text, exit_code, steps)


class ConsoleSession:
    """One console on a booted machine, driven command by command like a script."""

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
