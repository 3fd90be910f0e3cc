"""Swtpm process ownership: ports, start-up and later death, no stray processes, manufacture."""

import gc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hyperenclave.tpm.swtpm as swtpm_module
from hyperenclave.tpm import Swtpm, SwtpmDied, SwtpmNotInstalled, TpmClient

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_exists(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_two_instances_run_at_once_with_separate_ports_and_pcrs(tmp_path: Path) -> None:
    with Swtpm(tmp_path / "a") as a, Swtpm(tmp_path / "b") as b:
        assert a.port != b.port
        assert (a.ctrl_port, b.ctrl_port) == (a.port + 1, b.port + 1)
        with TpmClient.connect(a) as ca, TpmClient.connect(b) as cb:
            ca.pcr_extend(10, bytes(range(32)))
            assert cb.pcr_read([10]) == {10: bytes(32)}
            assert ca.pcr_read([10]) != {10: bytes(32)}


def test_stop_leaves_no_process_and_is_idempotent(tmp_path: Path) -> None:
    tpm = Swtpm(tmp_path / "tpm").start()
    pid = tpm.pid
    assert pid is not None and process_exists(pid)
    tpm.stop()
    assert not process_exists(pid)
    tpm.stop()
    assert not tpm.running


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    tpm = Swtpm(tmp_path / "tpm", stop_timeout=0.2).start()
    pid = tpm.pid
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    tpm.stop()
    assert not process_exists(pid)


def test_dropping_the_last_reference_stops_the_process(tmp_path: Path) -> None:
    tpm = Swtpm(tmp_path / "tpm").start()
    pid = tpm.pid
    del tpm
    gc.collect()
    assert not process_exists(pid)


def test_no_process_survives_a_crash_of_the_python_side(tmp_path: Path) -> None:
    script = (
        "from hyperenclave.tpm import Swtpm\n"
        f"tpm = Swtpm({str(tmp_path / 'tpm')!r}).start()\n"
        "print(tpm.pid, flush=True)\n"
        "raise SystemExit('simulated crash')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1, result.stderr
    assert wait_gone(int(result.stdout))


def test_killed_swtpm_makes_the_next_client_call_raise_swtpm_died(tmp_path: Path) -> None:
    with Swtpm(tmp_path / "tpm") as tpm, TpmClient.connect(tpm) as client:
        client.pcr_read([0])
        os.kill(tpm.pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(SwtpmDied, match="SIGKILL") as info:
            client.pcr_read([0])
        assert time.monotonic() - start < 3
        assert info.value.exit_code == -signal.SIGKILL
        with pytest.raises(SwtpmDied):
            client.transmit(bytes.fromhex("80010000000c0000017b0008"))
        with pytest.raises(SwtpmDied):
            tpm.check_alive()


def test_killed_swtpm_is_detected_by_a_call_already_on_the_wire(tmp_path: Path) -> None:
    # No process check happens first: the client must map the I/O error to SwtpmDied.
    with Swtpm(tmp_path / "tpm") as tpm:
        client = TpmClient(tpm.port, swtpm=tpm)
        tpm._proc.kill()  # the kernel closes the socket; check_alive() has not looked yet
        with pytest.raises(SwtpmDied):
            client.get_random(8)


def test_start_up_failure_raises_swtpm_died_with_exit_code_and_log(tmp_path: Path) -> None:
    with Swtpm(tmp_path / "tpm"):
        with pytest.raises(SwtpmDied, match=r"(?s)at start-up with exit code 1.*lock") as info:
            Swtpm(tmp_path / "tpm").start()  # the state directory is locked by the first
        assert info.value.exit_code == 1


def test_start_retries_with_new_ports_when_the_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        pairs = iter([(taken, taken + 1)])
        real = swtpm_module._free_port_pair
        monkeypatch.setattr(swtpm_module, "_free_port_pair", lambda: next(pairs, None) or real())
        with Swtpm(tmp_path / "tpm") as tpm:
            assert tpm.port != taken
            with TpmClient.connect(tpm) as client:
                assert len(client.get_random(8)) == 8


def test_missing_binary_raises_swtpm_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SwtpmNotInstalled, match="apt-get install swtpm swtpm-tools"):
        Swtpm(tmp_path / "tpm").start()


def nv_indices(tpm: Swtpm) -> str:
    result = subprocess.run(
        ["tpm2_nvreadpublic", "-T", f"swtpm:host=127.0.0.1,port={tpm.port}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return result.stdout


def test_manufacture_writes_ek_certificates_once_with_a_private_ca(tmp_path: Path) -> None:
    tpm = Swtpm(tmp_path / "machine" / "tpm")
    assert tpm.manufacture() is True
    assert tpm.manufacture() is False  # marker: not re-manufactured
    ca = tmp_path / "machine" / "swtpm-localca"
    assert (ca / "issuercert.pem").exists() and (ca / "signkey.pem").exists()
    with tpm:
        listing = nv_indices(tpm)
        assert "0x1c00002:" in listing  # RSA EK certificate
        assert "0x1c00016:" in listing  # ECC EK certificate
    with tpm:  # state persists across a restart (an emulated reboot)
        assert nv_indices(tpm) == listing
