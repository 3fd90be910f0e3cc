"""Host commands: the guest's console output (`serial`, live with -f) and `dmesg` tails."""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING

import cmd2
from cmd2 import Cmd2ArgumentParser

from hyperenclave.runcontrol import RunState

from .memview import ConsoleError

if TYPE_CHECKING:
    from .app import HvConsole

CATEGORY = "Host"


def _serial_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="The guest's console (COM1) output so far; -f follows "
                                       "it live until Ctrl-C or the guest stops.")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    return p


def _dmesg_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="The last lines of the host kernel's log (its console), "
                                       "or of the monitor's log with --hv (like `xl dmesg`).")
    p.add_argument("-n", "--lines", type=int, default=20, help="how many (default 20)")
    p.add_argument("--hv", action="store_true", help="the monitor's log instead")
    return p


class HostCommands(cmd2.CommandSet):
    """What the host printed."""

    @property
    def app(self) -> "HvConsole":
        return self._cmd

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_serial_parser)
    def do_serial(self, args: argparse.Namespace) -> None:
        """Print the guest's console output (serial -f: follow it)."""
        app = self.app
        lines = app.machine.serial_lines
        done = len(lines)
        app.poutput("\n".join(lines[:done]))
        if not args.follow:
            return
        arrived = threading.Event()
        app.machine.line_listeners.append(lambda _line: arrived.set())
        listener = app.machine.line_listeners[-1]
        try:
            while True:
                arrived.wait(0.2)
                arrived.clear()
                for line in lines[done:len(lines)]:
                    app.poutput(line)
                done = len(lines)
                if app.runctl.state is not RunState.RUNNING:
                    app.poutput(f"(guest {app.runctl.state.value}: {app.runctl.last_stop})")
                    return
        except KeyboardInterrupt:
            pass
        finally:
            app.machine.line_listeners.remove(listener)

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_dmesg_parser)
    def do_dmesg(self, args: argparse.Namespace) -> None:
        """Print the tail of the host kernel's log (--hv: the monitor's)."""
        app = self.app
        if args.lines < 1:
            raise ConsoleError(f"bad line count {args.lines}: at least 1")
        if args.hv:
            source = list(app.machine.monitor.log_lines)
        else:
            source = [line for line in app.machine.serial_lines if line.startswith("[")]
        app.poutput("\n".join(source[-args.lines:]) if source else "(empty)")
