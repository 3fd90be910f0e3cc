"""The console as users start it: `hyperenclave-console --script FILE` and `python boot.py
--console` in batch mode (standard input not a terminal), and interactively in a real
terminal (a pty driven with pexpect) with tab completion, help and the issue's walk-through."""

from __future__ import annotations

import lzma
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from hyperenclave.machine import DEFAULT_CMDLINE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = [sys.executable, "-m", "hyperenclave.tools.console"]
PROMPT = r"\(hyperenclave\)"


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "HYPERENCLAVE_STATE": str(tmp / "state"), "PYTHONPATH": str(ROOT)}


def test_script_mode_runs_the_file_then_stops_at_end_of_input(tmp_path) -> None:
    script = tmp_path / "walk.txt"
    script.write_text("until hypercall\ninfo exits\ninfo pcrs 0\nquit\n")
    done = subprocess.run([*CONSOLE, "--name", "script", "--script", str(script)], cwd=ROOT,
                          env=_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "(hyperenclave) until hypercall\nrunning until next hypercall\nstopped: hypercall at rip" in out
    assert re.search(r"^VMCALL\s+18\s+1\s+100.0%$", out, re.M)
    assert re.search(r"^PCR0  sha256 [0-9a-f]{64}$", out, re.M)


def test_boot_py_console_reads_commands_from_a_pipe_and_fails_on_a_bad_one(tmp_path) -> None:
    done = subprocess.run([sys.executable, "boot.py", "--console", "--name", "pipe",
                           "--state-dir", str(tmp_path / "tpm")], cwd=ROOT, env=_env(tmp_path),
                          input="info status\ninfo enclave 0x5\n", capture_output=True,
                          text=True, timeout=60)
    assert "(hyperenclave) info status\nVM status: paused" in done.stdout
    assert "error: the monitor is not running" in done.stderr
    assert done.returncode == 1


class Terminal:
    """A pty the console runs in, read as a person sees it (colours and cursor moves dropped)."""

    ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x08")

    def __init__(self, tmp: Path, *args: str) -> None:
        env = {**_env(tmp), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.child = pexpect.spawn(CONSOLE[0], [*CONSOLE[1:], "--name", "tty", *args],
                                   cwd=str(ROOT), env=env, encoding="utf-8", dimensions=(50, 200))
        self.text, self.pos = "", 0

    def expect(self, pattern: str, timeout: float = 30) -> re.Match:
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        while (m := regex.search(self.text, self.pos)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen:\n{self.text[self.pos:][-2000:]}")
            try:
                self.text += self.ANSI.sub("", self.child.read_nonblocking(4096, timeout=0.2))
            except pexpect.TIMEOUT:
                pass
        self.pos = m.end()
        return m

    def type(self, keys: str) -> None:
        self.child.send(keys)


def test_a_person_at_a_terminal(tmp_path) -> None:
    """Tab completion, help, stop at the first hypercall, VMCS, EPT, step, PCRs, the next
    enclave entry, attestation, quit."""
    term = Terminal(tmp_path, "--cmdline", f"{DEFAULT_CMDLINE} shell")
    try:
        term.expect(PROMPT)
        # Tab completes a command and a subcommand (the screen shows the completed rest)
        term.type("gv\t")
        term.expect(r"a2gpa")
        term.type("$rip\r")
        term.expect(r"guest walk of 0x7000 from CR3 0x10000 \(host\)")
        term.type("info reg\t")
        term.expect(r"isters")
        term.type("\r")
        term.expect(r"RIP=0000000000007000")
        term.type("info vmcs\r")
        term.expect(r"error: no VMCS: the monitor is not running")
        mark = term.pos
        term.type("help info\r")
        term.expect(r"Usage: info")
        term.expect(PROMPT)
        shown = term.text[mark:term.pos]
        for what in ("registers", "vmcs", "ept", "exits", "enclave", "pcrs", "eventlog"):
            assert what in shown, shown
        term.type("until hyp\t")
        term.expect(r"ercall")
        term.type("\r")
        term.expect(r"stopped: hypercall at rip 0x[0-9a-f]+: VM exit VMCALL INIT_CMRM")
        term.type("info vmcs\r")
        term.expect(r"VM_EXIT_REASON\s+0x00000012  VMCALL \(18\)")
        term.type("info ept\r")
        term.expect(r"\(every 2M page\)\s+256M r-- WB")
        term.type("step\r")
        term.expect(r"stopped: step at rip 0x[0-9a-f]+")
        insn = term.expect(r"=> [0-9a-f]{16}: ((?:[0-9a-f]{2} )+)").group(1).split()
        term.type(f"break $rip+{len(insn)}\r")         # the instruction after the one `step` showed
        term.expect(r"breakpoint 1 at 0x[0-9a-f]+")
        term.type("cont\r")                            # returns at once; the stop is announced
        term.expect(r"running")
        term.expect(r"stopped: breakpoint at rip 0x[0-9a-f]+: breakpoint 1")
        term.type("info pcrs 12\r")
        term.expect(r"PCR12 sha256 [0-9a-f]{64}")
        term.type("delete 1\r")
        term.expect(PROMPT)
        term.type("until encl\t")
        term.expect(r"ave")
        term.type("\r")                                # /etc/rc's hello_app enters its enclave
        term.expect(r"entered enclave 0x[0-9a-f]+ on TCS 0x[0-9a-f]+")
        term.type("until serial 'hyperenclave shell'\r")
        term.expect(r"stopped: serial at rip 0x[0-9a-f]+: serial line \"hyperenclave shell")
        term.type("cont\r")
        term.expect(r"running")
        term.type("attest\r")
        term.expect(r"ok   report_policy", timeout=60)
        term.expect(r"verdict: pass")
        term.expect(PROMPT)
        term.type("quit\r")
        term.child.expect(pexpect.EOF, timeout=30)
    finally:
        term.child.close(force=True)
    assert term.child.exitstatus == 0
    history = lzma.decompress((tmp_path / "state" / "console_history").read_bytes())  # cmd2's format
    assert b"until hypercall" in history, "history persists for the next session"
