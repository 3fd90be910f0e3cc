"""TPM commands: info pcrs and info eventlog (decoded, replayed against the TPM)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import cmd2
from cmd2 import Cmd2ArgumentParser

from hyperenclave.tpm.eventlog import EventLogError, describe, parse_eventlog, replay

from .memview import ConsoleError

if TYPE_CHECKING:
    from .app import HvConsole

PCR_COUNT = 24


def _pcr_index(text: str) -> int:
    try:
        index = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad PCR {text!r}: a number 0-{PCR_COUNT - 1}") from None
    if not 0 <= index < PCR_COUNT:
        raise argparse.ArgumentTypeError(f"no PCR {index}: PCRs are 0-{PCR_COUNT - 1}")
    return index


def _pcrs_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Read the SHA-256 PCR bank from the TPM (all non-zero "
                                       "PCRs, or the ones named).")
    p.add_argument("pcr", nargs="*", type=_pcr_index, help="PCR numbers (default: all in use)")
    return p


def _eventlog_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Decode the TCG event log in guest memory and replay it "
                                       "against the TPM's PCRs.")
    p.add_argument("--pcr", type=_pcr_index, help="only the events of this PCR")
    return p


class TpmCommands(cmd2.CommandSet):
    """The TPM's PCRs and the measured-boot event log."""

    @property
    def app(self) -> "HvConsole":
        return self._cmd

    def _pcrs(self) -> dict[int, bytes]:
        if self.app.machine.tpm is None:
            raise ConsoleError("the TPM is not running (the machine is shut down)")
        return self.app.machine.pcrs()

    @cmd2.as_subcommand_to("info", "pcrs", _pcrs_parser, help="the TPM's SHA-256 PCRs")
    def info_pcrs(self, args: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            pcrs = self._pcrs()
        wanted = args.pcr or [i for i, v in pcrs.items() if any(v) and v != b"\xff" * 32]
        app.poutput("\n".join(f"PCR{i:<2} sha256 {pcrs[i].hex()}" for i in wanted))

    @cmd2.as_subcommand_to("info", "eventlog", _eventlog_parser, help="the TCG event log, decoded")
    def info_eventlog(self, args: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            try:
                events = parse_eventlog(app.machine.eventlog_bytes())
            except EventLogError as err:
                raise ConsoleError(f"the event log in guest memory does not parse: {err}") from None
            pcrs = self._pcrs()
        shown = [e for e in events if args.pcr is None or e.pcr == args.pcr]
        app.poutput("\n".join(f"{i:3} {describe(e)}" for i, e in enumerate(events) if e in shown))
        replayed = replay(events)
        differ = [i for i, v in replayed.items() if pcrs.get(i) != v]
        app.poutput(f"{len(events)} events; replay of PCRs {', '.join(map(str, sorted(replayed)))}: "
                    + ("matches the TPM" if not differ else
                       "differs from the TPM in PCR " + ", ".join(map(str, differ))))
