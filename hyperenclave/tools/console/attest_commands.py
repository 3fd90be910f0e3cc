"""Guest-driven commands: `sh` types a command at the host's shell, `attest` challenges an enclave
app and appraises its quote with the open verifier, `seal`/`unseal` run the sealer sample.

They need the host kernel's shell on the serial console (cmdline `shell`) and a running guest;
the console acts like a person at that console, never reaching into the guest otherwise.
"""

from __future__ import annotations

import argparse
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import cmd2
from cmd2 import Cmd2ArgumentParser

from hyperenclave.attestation import AttestationError, appraise, new_nonce
from hyperenclave.runcontrol import RunState

from .memview import ConsoleError

if TYPE_CHECKING:
    from .app import HvConsole

CATEGORY = "Attestation and host programs"
_EXIT = re.compile(r"\] (/\S+)\[\d+\] (exited with status (\d+)|killed by signal \d+)")


def _sh_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Type a command line at the host's shell and print what "
                                       "it printed until its program exited.")
    p.add_argument("-t", "--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="program path and arguments")
    return p


def _attest_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Remote attestation: a fresh nonce, `APP --quote NONCE` in "
                                       "the host, the monitor's quote appraised by the open "
                                       "verifier (policy: this machine's CA, the expected sample "
                                       "enclave's MRENCLAVE, the booted images' reference "
                                       "digests).")
    p.add_argument("app", nargs="?", default="/bin/hello_app",
                   help="host program that quotes its enclave (default /bin/hello_app)")
    p.add_argument("--enclave", default="hello",
                   help="SDK sample whose MRENCLAVE the policy expects (default hello)")
    p.add_argument("--out", help="evidence directory (default: a new temporary one)")
    return p


def _seal_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Seal TEXT in the sealer sample enclave (EGETKEY SEAL key, "
                                       "AES-CTR + CMAC); prints the blob for `unseal`.")
    p.add_argument("--mrsigner", action="store_true", help="MRSIGNER key policy (default MRENCLAVE)")
    p.add_argument("text", nargs="+", help="what to seal (at most 48 bytes)")
    return p


def _unseal_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Unseal a blob `seal` printed (in this boot or a later one).")
    p.add_argument("blob", help="the hex blob")
    return p


class AttestCommands(cmd2.CommandSet):
    """Host programs, remote attestation and sealing, through the guest's own shell."""

    @property
    def app(self) -> "HvConsole":
        return self._cmd

    def run_in_guest(self, command: str, timeout: float) -> tuple[str, int | None]:
        """Type `command` at the host's shell; its output and exit status (None if killed)."""
        app = self.app
        if " shell" not in f" {app.machine.config.cmdline}":
            raise ConsoleError("the host has no shell on its console: boot with "
                               "--cmdline '... shell'")
        if app.runctl.state is not RunState.RUNNING:
            raise ConsoleError(f"the guest is {app.runctl.state.value}: `cont` first")
        program = command.split()[0]
        lines: list[str] = []
        done = threading.Event()

        def collect(line: str) -> None:
            lines.append(line)
            m = _EXIT.search(line)
            if m and m.group(1) == program:
                done.set()
        app.machine.line_listeners.append(collect)
        try:
            app.machine.uart.feed(command.encode() + b"\n")
            if not done.wait(timeout):
                raise ConsoleError(f"{program} did not finish within {timeout:g} s")
        finally:
            app.machine.line_listeners.remove(collect)
        status = _EXIT.search(lines[-1])
        return "\n".join(lines), int(status.group(3)) if status.group(3) else None

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_sh_parser)
    def do_sh(self, args: argparse.Namespace) -> None:
        """Run a host program through the host's shell."""
        if not args.command:
            raise ConsoleError("sh: which command? (e.g. sh /bin/hello)")
        output, _ = self.run_in_guest(" ".join(args.command), args.timeout)
        self.app.poutput(output)

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_attest_parser)
    def do_attest(self, args: argparse.Namespace) -> None:
        """Attest an enclave app and appraise its quote with the open verifier."""
        from hyperenclave.sdk.samples import SAMPLES, sign_sample
        if args.enclave not in SAMPLES:
            raise ConsoleError(f"no SDK sample {args.enclave!r} (samples: {', '.join(SAMPLES)})")
        expected = sign_sample(args.enclave)
        nonce = new_nonce()
        output, status = self.run_in_guest(f"{args.app} --quote {nonce}", 120.0)
        if status != 0:
            raise ConsoleError(f"{args.app} failed (status {status}):\n{output}")
        try:
            verdict, where = appraise(self.app.machine, output, nonce,
                                      mr_enclave=[expected.mrenclave],
                                      out=Path(args.out) if args.out else None)
        except AttestationError as e:
            raise ConsoleError(str(e)) from None
        for check in verdict["checks"]:
            self.app.poutput(f"  {'ok  ' if check['ok'] else 'FAIL'} {check['name']}"
                             + ("" if check["ok"] else f": {check.get('reason', '')}"))
        self.app.poutput(f"verdict: {verdict['verdict']} (nonce {nonce}; evidence {where})")
        if not verdict["ok"]:
            self.app._failed()

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_seal_parser)
    def do_seal(self, args: argparse.Namespace) -> None:
        """Seal text with the sealer sample enclave."""
        policy = " --mrsigner" if args.mrsigner else ""
        output, _ = self.run_in_guest(f"/bin/sealer_app{policy} seal {' '.join(args.text)}", 60.0)
        self.app.poutput("\n".join(line for line in output.splitlines()
                                   if line.startswith("sealer_app:")))

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_unseal_parser)
    def do_unseal(self, args: argparse.Namespace) -> None:
        """Unseal a blob with the sealer sample enclave."""
        if not re.fullmatch(r"[0-9a-f]+", args.blob):
            raise ConsoleError(f"unseal: {args.blob[:20]!r}... is not a hex blob")
        output, _ = self.run_in_guest(f"/bin/sealer_app unseal {args.blob}", 60.0)
        self.app.poutput("\n".join(line for line in output.splitlines()
                                   if line.startswith("sealer_app:")))
