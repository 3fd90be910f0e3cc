"""One swtpm (TPM 2.0 simulator) process per emulated machine, owned by this Python process.

We start swtpm ourselves (no --daemon) so we hold its PID: it is stopped on stop(), on
garbage collection and at interpreter exit, and a crash is reported as SwtpmDied with
its exit code and log instead of an opaque TSS error later.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path
from types import TracebackType

_BIND_RETRIES = 5
_LOG_TAIL_BYTES = 2000
# TPM2_GetRandom(8): tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested
_PROBE_COMMAND = bytes.fromhex("80010000000c0000017b0008")
_MANUFACTURED_MARKER = ".hyperenclave-manufactured"
_CA_DIR_NAME = "swtpm-localca"


class SwtpmError(RuntimeError):
    """Base class of swtpm process failures."""


class SwtpmNotInstalled(SwtpmError):
    """The swtpm binaries are missing from PATH."""

    def __init__(self, binary: str = "swtpm") -> None:
        super().__init__(f"{binary} not found: apt-get install swtpm swtpm-tools")


class SwtpmDied(SwtpmError):
    """swtpm exited (at start-up or later); carries its exit code and the tail of its log."""

    def __init__(self, exit_code: int | None, log_tail: str, context: str = "") -> None:
        where = f" {context}" if context else ""
        how = f"exit code {exit_code}"
        if exit_code is not None and exit_code < 0:
            how += f" (killed by {signal.Signals(-exit_code).name})"
        super().__init__(f"swtpm died{where} with {how}; log tail:\n{log_tail or '(empty)'}")
        self.exit_code = exit_code
        self.log_tail = log_tail


def _free_port_pair() -> tuple[int, int]:
    """Two consecutive free loopback ports (P, P+1).

    The libtss2 swtpm TCTI always talks to the control channel on server port + 1.
    """
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port, port + 1
    raise SwtpmError("no two consecutive free TCP ports found on 127.0.0.1")


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; always reaps the child."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Swtpm:
    """A `swtpm socket --tpm2` process on free loopback ports with a persistent state dir.

    The control channel is on `port + 1` because that is where the TCTI looks for it.

    The state directory belongs to the caller (one per machine name) so NV contents and
    sealed data survive emulated reboots.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        start_timeout: float = 5.0,
        stop_timeout: float = 2.0,
    ) -> None:
        """`stop_timeout` is how long stop() waits after SIGTERM before SIGKILL."""
        self.state_dir = Path(state_dir)
        self.log_path = self.state_dir / "swtpm.log"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self.ctrl_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running process, None before start()."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the started process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Swtpm:
        """Start swtpm and wait until its server port answers a TPM command.

        If another process grabbed the chosen ports in the meantime, retry on new ones.
        """
        if self.running:
            return self
        if shutil.which("swtpm") is None:
            raise SwtpmNotInstalled("swtpm")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        attempt = 1
        while True:
            try:
                self._start_once()
                return self
            except SwtpmDied as died:
                if attempt == _BIND_RETRIES or "Address already in use" not in died.log_tail:
                    raise
            attempt += 1

    def _start_once(self) -> None:
        self.port, self.ctrl_port = _free_port_pair()
        cmd = [
            "swtpm", "socket", "--tpm2",
            "--tpmstate", f"dir={self.state_dir}",
            "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1",
            "--flags", "not-need-init,startup-clear",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._finalizer = weakref.finalize(self, _terminate, self._proc, self.stop_timeout)
        deadline = time.monotonic() + self.start_timeout
        while True:
            self.check_alive("at start-up")
            if self._answers_tpm_commands():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SwtpmError(
                    f"swtpm did not answer on 127.0.0.1:{self.port} "
                    f"within {self.start_timeout} s; log tail:\n{self._log_tail()}"
                )
            time.sleep(0.01)

    def _answers_tpm_commands(self) -> bool:
        """True once the server port answers TPM2_GetRandom.

        A bare connect() is not proof: if swtpm lost a race for the port, another
        listener may accept the connection while swtpm is still exiting.
        """
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(_PROBE_COMMAND)
                header = sock.recv(10)
        except OSError:
            return False
        return len(header) == 10 and header[:2] == b"\x80\x01"

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return "(no log)"

    def check_alive(self, context: str = "", grace: float = 0.0) -> None:
        """Raise SwtpmDied if the process has exited.

        `grace` waits that long for an exit in progress: after an I/O error the socket may
        close a moment before the process can be reaped.
        """
        if self._proc is None:
            raise SwtpmError("swtpm was not started")
        try:
            code = self._proc.wait(grace) if grace > 0 else self._proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            raise SwtpmDied(code, self._log_tail(), context)

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL); safe to call repeatedly."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Swtpm:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def manufacture(self, ca_dir: str | os.PathLike[str] | None = None) -> bool:
        """Create EK and platform certificates in NV, once per state directory.

        The certificates are signed by a swtpm_localca CA kept in `ca_dir` (default:
        `<state_dir parent>/swtpm-localca`, shared by sibling machines), so nothing in
        /etc or /var is used. Must run before start(). Returns False if already done.
        """
        if self.running:
            raise SwtpmError("manufacture() must run before start(): swtpm_setup runs its own")
        marker = self.state_dir / _MANUFACTURED_MARKER
        if marker.exists():
            return False
        for tool in ("swtpm_setup", "swtpm_localca"):
            if shutil.which(tool) is None:
                raise SwtpmNotInstalled(tool)
        ca = Path(ca_dir) if ca_dir is not None else self.state_dir.parent / _CA_DIR_NAME
        ca = ca.resolve()
        ca.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        setup_conf = _write_ca_config(ca)
        cmd = [
            "swtpm_setup", "--tpm2", "--tpmstate", str(self.state_dir),
            "--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite",
            "--config", str(setup_conf), "--logfile", str(self.state_dir / "swtpm_setup.log"),
        ]  # fmt: skip
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if result.returncode != 0:
            log_path = self.state_dir / "swtpm_setup.log"
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise SwtpmError(
                f"swtpm_setup failed with exit code {result.returncode}:\n"
                f"{result.stderr.decode(errors='replace')}\n{log[-_LOG_TAIL_BYTES:]}"
            )
        marker.touch()
        return True


def _write_ca_config(ca: Path) -> Path:
    """swtpm_setup.conf + swtpm-localca.conf that keep the local CA inside `ca`."""
    localca_conf = ca / "swtpm-localca.conf"
    localca_conf.write_text(
        f"statedir = {ca}\n"
        f"signingkey = {ca / 'signkey.pem'}\n"
        f"issuercert = {ca / 'issuercert.pem'}\n"
        f"certserial = {ca / 'certserial'}\n"
    )
    options = ca / "swtpm-localca.options"
    options.write_text(
        "--platform-manufacturer hyperenclave\n"
        "--platform-version 2.1\n"
        "--platform-model emulator\n"
    )
    setup_conf = ca / "swtpm_setup.conf"
    setup_conf.write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
        f"create_certs_tool_config = {localca_conf}\n"
        f"create_certs_tool_options = {options}\n"
        "active_pcr_banks = sha256\n"
    )
    return setup_conf
