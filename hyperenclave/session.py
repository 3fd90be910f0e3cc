"""Drive a running machine the way a person at its serial console would (the scenario/test API).

    from hyperenclave.session import Session

    with Session.start(name="demo", rc=["/bin/sysctl -w dev.hyper_enclave.enabled=1"]) as s:
        s.wait_for(r"hyper_enclave: .*launched", timeout=30)
        print(s.sh("/bin/hello").output)          # run a host program, wait for its exit
        print(s.exits(), s.pcrs()[12].hex())
        s.disable_monitor()
    # leaving the block powers the guest off (shell `poweroff`), stops swtpm, frees memory

The guest runs in a background thread; the kernel's shell (cmdline `shell`) reads the commands
`sh()` types on the UART. Every blocking call takes a timeout and raises a typed exception
(`MachineTimeout`, `ProgramFailed`, `GuestStopped`) whose message says what was awaited and
shows the last console lines.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .attestation import AttestationError, appraise, new_nonce
from .machine import (DEFAULT_CMDLINE, Machine, MachineConfig, MachineError, MachineTimeout,
                      RunResult, default_boot_images)
from .platform.memory import parse_size
from .tpm.eventlog import Event, parse_eventlog

if TYPE_CHECKING:
    from .platform.firmware.measured_boot import BootImages
    from .sdk.signer import SignedEnclave

__all__ = ["AttestationError", "CommandResult", "GuestStopped", "ProgramFailed", "Session",
           "boot_images"]

PROMPT = b"\n# "
_EXIT_LINE = re.compile(rb"\] (\S+)\[(\d+)\] (?:exited with status (\d+)|killed by signal (\d+))")


class GuestStopped(MachineError):
    """The guest powered off, reset or crashed while something was awaited."""


class ProgramFailed(MachineError):
    """A host program exited with a non-zero status or was killed (see `result`)."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(f"{result.command!r} {result.describe()}; its output:\n{result.output}")
        self.result = result


@dataclass(frozen=True)
class CommandResult:
    """What a shell command printed and how its program ended."""

    command: str
    output: str
    status: int | None          # exit status, None when killed by a signal
    signal: int | None = None

    def describe(self) -> str:
        return (f"was killed by signal {self.signal}" if self.signal is not None
                else f"exited with status {self.status}")


def boot_images(*, rc: list[str] | str | None = None, files: dict[str, bytes] | None = None,
                programs: dict[str, object] | None = None, rebuild: bool = False) -> BootImages:
    """The guest images Session.start builds: the default guest, the SDK samples and the monitor
    image, with /etc/rc replaced by `rc` (a list of lines or a string) and `files`/`programs`
    added. For scenarios that boot images they changed (a tampered kernel, say)."""
    extra = dict(files or {})
    if rc is not None:
        lines = rc.splitlines() if isinstance(rc, str) else list(rc)
        extra["/etc/rc"] = "".join(line + "\n" for line in lines).encode()
    return default_boot_images(rebuild=rebuild, extra_files=extra, extra_programs=programs)


class Session:
    """A booted machine running in the background, with its shell on the serial console."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._output = bytearray()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.result: RunResult | None = None
        #: evidence directories attest() wrote (export_evidence keeps their TPM files)
        self.attested: set[Path] = set()
        #: called with this session after the guest stopped, before swtpm and memory go
        self.before_shutdown: list[Callable[[Session], None]] = []
        machine.uart.listeners.append(self._on_byte)

    # ------------------------------------------------------------------ building
    @classmethod
    def start(cls, *, name: str = "session", memory: int | str = "1G",
              cmdline: str = DEFAULT_CMDLINE, state_dir: str | Path | None = None,
              rc: list[str] | str | None = None, files: dict[str, bytes] | None = None,
              programs: dict[str, object] | None = None, images: BootImages | None = None,
              echo_serial: bool = False, boot_timeout: float = 60.0,
              **config: Any) -> Session:
        """Build, boot and start a machine, then wait until its shell prompts (after /etc/rc).

        `rc`: the programs /etc/rc runs before the shell (default: the image's own rc);
        `files`/`programs`: extra initramfs files and C/asm programs built into /bin;
        `images`: boot exactly these (see `boot_images`) instead."""
        if images is not None and (rc is not None or files or programs):
            raise ValueError("give either images or rc/files/programs, not both")
        if " shell" not in f" {cmdline}":
            cmdline = f"{cmdline} shell"
        cfg = MachineConfig(name=name, memory=parse_size(memory) if isinstance(memory, str)
                            else memory, cmdline=cmdline,
                            state_dir=Path(state_dir) if state_dir else None,
                            echo_serial=echo_serial, **config)
        machine = Machine(cfg, images or boot_images(rc=rc, files=files, programs=programs,
                                                     rebuild=cfg.rebuild))
        try:
            machine.boot()
            session = cls(machine)
            session._run_in_background()
            session._wait_for_prompt(0, boot_timeout, "the shell prompt after /etc/rc")
        except BaseException:
            machine.shutdown()
            raise
        return session

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ running
    def _run_in_background(self) -> None:
        def run() -> None:
            try:
                self.result = self.machine.run(timeout=None)
            except BaseException as e:  # handed to whoever waits next
                self._error = e
            with self._cond:
                self._cond.notify_all()
        self._thread = threading.Thread(target=run, name=f"guest-{self.machine.config.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _on_byte(self, byte: bytes) -> None:
        with self._cond:
            self._output += byte
            self._cond.notify_all()

    def _wait(self, done, timeout: float, what: str):
        """Wait until done(output) returns a value; the typed error otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = done(self._output)
                if found is not None:
                    return found
                if not self.running:
                    if self._error is not None:
                        raise GuestStopped(f"the machine failed while waiting for {what}: "
                                           f"{self._error}") from self._error
                    state = self.result.state if self.result else "stopped"
                    raise GuestStopped(f"the guest {state} while waiting for {what}"
                                       f"{self._tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MachineTimeout(f"no {what} after {timeout} s{self._tail()}")
                self._cond.wait(min(left, 0.1))

    def _tail(self, lines: int = 8) -> str:
        text = self._output.decode(errors="replace").splitlines()[-lines:]
        return "; last console lines:\n  " + "\n  ".join(text) if text else ""

    def _wait_for_prompt(self, start: int, timeout: float, what: str) -> int:
        return self._wait(lambda out: (i + len(PROMPT) if (i := out.find(PROMPT, start)) >= 0
                                       else None), timeout, what)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 30.0, *,
                 since: int = 0) -> re.Match[str]:
        """The first console match of `pattern` in complete lines (from byte `since` of the
        output): a line still being printed could match only part of what it will say."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def find(out: bytearray) -> re.Match[str] | None:
            end = out.rfind(b"\n") + 1
            return regex.search(out[since:end].decode(errors="replace")) if end > since else None
        return self._wait(find, timeout, f"console output matching {regex.pattern!r}")

    def sh(self, command: str, timeout: float = 60.0, *, check: bool = True) -> CommandResult:
        """Type `command` at the shell and wait for the next prompt; raises ProgramFailed when
        the program exits non-zero (unless check=False)."""
        if "\n" in command:
            raise ValueError("one command per sh() call")
        with self._cond:
            start = len(self._output)
        self.machine.uart.feed(command.encode() + b"\n")
        end = self._wait_for_prompt(start, timeout, f"{command!r} to finish")
        raw = bytes(self._output[start:end - len(PROMPT)])
        status: int | None = None
        signal: int | None = None
        for m in _EXIT_LINE.finditer(raw):
            status = int(m.group(3)) if m.group(3) is not None else None
            signal = int(m.group(4)) if m.group(4) is not None else None
        text = raw.decode(errors="replace").replace("\r", "")
        first_newline = text.find("\n")
        output = text[first_newline + 1:] if first_newline >= 0 else ""   # drop the echo
        result = CommandResult(command, output, status, signal)
        if check and (signal is not None or status not in (0, None)):
            raise ProgramFailed(result)
        return result

    # ------------------------------------------------------------------ the monitor
    def enable_monitor(self, timeout: float = 30.0) -> None:
        """Demote the host under the monitor (the driver's sysctl), as a user would."""
        self.sh("/bin/sysctl -w dev.hyper_enclave.enabled=1", timeout)
        if not self.machine.monitor.enabled:
            raise MachineError(f"the monitor did not launch{self._tail()}")

    def disable_monitor(self, timeout: float = 30.0) -> None:
        self.sh("/bin/sysctl -w dev.hyper_enclave.enabled=0", timeout)
        if self.machine.monitor.enabled:
            raise MachineError(f"the monitor is still running{self._tail()}")

    @property
    def monitor(self):
        return self.machine.monitor

    def exits(self) -> dict[str, int]:
        """VM-exit counters per exit reason name."""
        return {r.name: n for r, n in sorted(self.machine.monitor.exit_counts.items())}

    # ------------------------------------------------------------------ attestation
    def attest(self, app: str, *, expect: SignedEnclave | None = None,
               mr_enclave: list[bytes] | None = None, mr_signer: list[bytes] | None = None,
               out: str | Path | None = None, nonce: str | None = None,
               reference: BootImages | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Challenge-response remote attestation of the enclave that host program `app` runs:
        a fresh nonce, `APP --quote NONCE` prints the quote bundle the monitor's quote hypercall
        made, the host's event log and PCRs join it in `out`, and the open verifier appraises it
        against a policy trusting this machine's attestation CA, the enclave `expect` (or the
        given MRENCLAVE/MRSIGNER lists) and the reference digests of `reference` (default: the
        images this machine booted) and of this tree's monitor image. Returns the verdict
        (also out/verdict.json; the policy is out/policy.json)."""
        nonce = nonce or new_nonce()
        result = self.sh(f"{app} --quote {nonce}", timeout)
        if expect is not None:
            mr_enclave = [*(mr_enclave or []), expect.mrenclave]
            mr_signer = [*(mr_signer or []), expect.mrsigner]
        verdict, where = appraise(self.machine, result.output, nonce, mr_enclave=mr_enclave,
                                  mr_signer=mr_signer, out=out, reference=reference)
        self.attested.add(where.resolve())
        return verdict

    # ------------------------------------------------------------------ TPM and evidence
    def pcrs(self) -> dict[int, bytes]:
        return self.machine.pcrs()

    def eventlog(self) -> list[Event]:
        return parse_eventlog(self.machine.eventlog_bytes())

    def serial(self) -> str:
        return self._output.decode(errors="replace")

    def export_evidence(self, out: str | Path) -> Path:
        """The machine's evidence files; where attest() wrote evidence, its TPM files stay."""
        return self.machine.export_evidence(
            out, tpm_evidence=Path(out).resolve() not in self.attested)

    # ------------------------------------------------------------------ ending
    def poweroff(self, timeout: float = 30.0) -> RunResult:
        """Ask the shell to power off and wait for the guest to stop."""
        if self.running:
            self.machine.uart.feed(b"poweroff\n")
            assert self._thread is not None
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise MachineTimeout(f"the guest did not power off within {timeout} s"
                                     f"{self._tail()}")
        if self._error is not None:
            raise GuestStopped(f"the machine failed: {self._error}") from self._error
        assert self.result is not None
        return self.result

    def stop(self) -> None:
        """Power off if still running (forcefully after a grace period); free everything."""
        try:
            if self.running:
                try:
                    self.poweroff(timeout=10.0)
                except MachineError:
                    self.machine.stop()
                    if self._thread is not None:
                        self._thread.join(5.0)
        finally:
            try:
                for hook in self.before_shutdown:
                    hook(self)
            finally:
                self.before_shutdown.clear()
                self.machine.shutdown()

    def reboot(self, timeout: float = 60.0) -> Session:
        """Power off and boot the same machine again (same name and state dir: same TPM
        state); this session then drives the new boot."""
        self.poweroff()
        self.machine.shutdown()
        self.machine = Machine(self.machine.config, self.machine.images)
        with self._cond:
            self._output.clear()
        self._error, self.result = None, None
        self.machine.boot()
        self.machine.uart.listeners.append(self._on_byte)
        self._run_in_background()
        self._wait_for_prompt(0, timeout, "the shell prompt after /etc/rc")
        return self
