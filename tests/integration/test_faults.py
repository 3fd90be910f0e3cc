"""Faults a hostile or broken host and platform cause, each ending with a clear message and a
clean next run: swtpm killed mid-run or its state corrupted, a guest triple fault, an enclave
that never returns, a host that never answers an OCALL, EPC exhaustion (tested in
test_enclave_load.py and test_enclave_host_programs.py), and sealing keys that survive ten
reboots of the same machine."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.sdk import EnclaveLayout, sign
from hyperenclave.tpm.swtpm import SwtpmError
from hyperenclave.vmm.sigstruct import generate_signing_key
from tests.integration.test_hostile_host import AEX_ENCLAVE, EPC, GUEST, SECRET
from tests.support.asm import assemble
from tests.support.key_enclave import SEAL_MRENCLAVE, SOURCE

pytestmark = pytest.mark.integration

OCALL_ENCLAVE = "mov $1, %edx ; mov %rcx, %rbx ; mov $4, %eax ; enclu"
PROGRAMS = {"hostile": [GUEST / "hostile.c"], "tpm_pcrextend": [GUEST / "tpm_pcrextend.c"]}


@dataclass
class Run:
    state: str
    reason: str
    log: str
    monitor_log: str
    seconds: float
    swtpm_pid: int | None = None
    epc_after: bytes = b""


def boot(state_dir: Path, rc: str, files: dict[str, bytes] | None = None, *, name: str = "faults",
         on_line=None, timeout: float = 120) -> Run:
    images = default_boot_images(extra_files={"/etc/rc": rc.encode()} | (files or {}),
                                 extra_programs=PROGRAMS)
    start = time.monotonic()
    with Machine(MachineConfig(name=name, state_dir=state_dir), images) as m:
        if on_line:
            m.line_listeners.append(lambda line: on_line(m, line))
        m.boot()
        result = m.run(timeout=timeout)
        pid = m.swtpm.pid if m.swtpm else None
        run = Run(result.state, result.reason or "", m.serial_text(),
                  "\n".join(m.monitor.log_lines), time.monotonic() - start, pid,
                  m.memory.read(EPC, 0x40000))
    return run


def bundle(code: str, data: bytes = b"") -> bytes:
    return sign(EnclaveLayout.simple(assemble(code, 0), data), generate_signing_key()).to_bytes()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Run:
    """An enclave that never returns, an OCALL never answered, then a triple fault."""
    rc = ("/bin/sysctl -w dev.hyper_enclave.enabled=1\n"
          "/bin/hostile abandon /spin.bin 1000000000000 3\n"
          "/bin/hostile no-callback /ocall.bin\n"
          "/bin/hello_app 19 23\n"
          "/bin/attack triple_fault\n"
          "/bin/hello\n")
    files = {"/spin.bin": bundle(AEX_ENCLAVE, struct.pack("<Q", SECRET)),
             "/ocall.bin": bundle(OCALL_ENCLAVE)}
    return boot(tmp_path_factory.mktemp("hostile") / "state", rc, files)


@pytest.mark.attack(name="an enclave that never returns",
                    route="endless enclave loop; the app gives up at its AEP and exits",
                    defence="timer AEX keeps the host scheduling; process exit destroys the "
                            "suspended enclave")
def test_an_enclave_that_never_returns_leaves_the_host_running_and_dies_with_its_app(
        hostile_run: Run) -> None:
    log = hostile_run.log
    assert "hostile: abandon: still inside after 3 AEX; exiting without ERESUME" in log, log[-3000:]
    assert "hostile: abandon: the enclave returned" not in log
    first = log.index("Run /bin/hostile")
    assert re.search(r"hyper_enclave: enclave \[0x[0-9a-f]+-0x[0-9a-f]+\] destroyed",
                     log[first:log.index("no-callback")]), "closing on exit destroyed it"


@pytest.mark.attack(name="a host that never answers an OCALL",
                    route="the enclave EEXITs asking for an OCALL; the app never re-enters",
                    defence="the enclave waits outside; destroy works and scrubs it")
def test_a_host_that_stops_calling_back_can_still_destroy_the_enclave(hostile_run: Run) -> None:
    log = hostile_run.log
    assert "hostile: no-callback: the enclave asked for an OCALL (RDX 1); not answering" in log
    assert "hostile: no-callback: destroying it: close 0" in log
    assert "hello_app: ECALL add(19, 23) = 42" in log, "the next enclave runs"


@pytest.mark.attack(name="guest triple fault with the monitor running",
                    route="the host kernel loads an empty IDT and faults (/dev/he_attack)",
                    defence="the monitor scrubs EPC and its memory, then the platform resets")
def test_a_guest_triple_fault_resets_the_platform_after_scrubbing(hostile_run: Run) -> None:
    assert hostile_run.state == "reset", hostile_run.reason
    assert "triple fault" in hostile_run.reason
    assert "host triple fault" in hostile_run.monitor_log
    assert "scrubbing and resetting the platform" in hostile_run.monitor_log
    assert hostile_run.epc_after == bytes(len(hostile_run.epc_after))
    assert "Hello from user space" not in hostile_run.log.split("triple_fault")[-1]


# ------------------------------------------------------------------ swtpm


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Run, Run, Path]:
    """swtpm killed once the host runs under the monitor, then the next boot of the machine."""
    state = tmp_path_factory.mktemp("killed") / "state"
    rc = ("/bin/sysctl -w dev.hyper_enclave.enabled=1\n/bin/hello\n/bin/tpm_pcrextend 16\n"
          "/bin/hello_app 1 2\n/bin/hello\n")

    def kill(m: Machine, line: str) -> None:
        if line.startswith("Hello from user space") and "killed" not in seen:
            seen["killed"] = m.swtpm.pid
            os.kill(m.swtpm.pid, signal.SIGKILL)
    seen: dict[str, int] = {}
    first = boot(state, rc, on_line=kill, timeout=60)
    first.swtpm_pid = seen["killed"]
    again = boot(state, rc)         # the same images: the same PCRs, so the root secret unseals
    return first, again, state


def swtpm_processes(state: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(state) in (proc / "cmdline").read_text():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_killed_swtpm_is_a_clear_error_without_a_hang(killed) -> None:
    first, _, _ = killed
    assert first.state == "poweroff" and first.seconds < 60
    assert "tpm_pcrextend: PCR16 rc=0x101" in first.log, "TPM_RC_FAILURE at the host's device"
    assert re.search(r"EINIT: .*could not be measured into PCR 14: swtpm died", first.monitor_log)
    assert "hello_app: /enclaves/hello.bin: INIT failed" in first.log
    assert first.log.count("Hello from user space") == 2, "the host went on"


def test_a_killed_swtpm_leaves_no_process_and_the_next_boot_works(killed) -> None:
    first, again, state = killed
    assert not Path(f"/proc/{first.swtpm_pid}").exists() or \
        first.swtpm_pid not in swtpm_processes(state)
    assert swtpm_processes(state) == []
    assert again.state == "poweroff"
    assert "root secret unsealed" in again.monitor_log
    assert "hello_app: ECALL add(1, 2) = 3" in again.log


def test_a_corrupted_swtpm_state_is_a_clear_error(killed, tmp_path) -> None:
    _, _, state = killed
    broken = tmp_path / "state"
    shutil.copytree(state, broken)
    [permall] = (broken).rglob("tpm2-00.permall")
    permall.write_bytes(b"\xde\xad\xbe\xef" * 64)
    start = time.monotonic()
    with pytest.raises(SwtpmError) as err:
        boot(broken, "/bin/hello\n", timeout=60)
    assert time.monotonic() - start < 30
    assert "swtpm died at start-up" in str(err.value)
    assert "Could not initialize libtpms" in str(err.value), "swtpm's own reason, from its log"
    assert swtpm_processes(broken) == []


# ------------------------------------------------------------------ sealing


def test_seal_keys_are_identical_across_ten_reboots(tmp_path) -> None:
    state = tmp_path / "state"
    enclave = sign(EnclaveLayout.simple(assemble(SOURCE, 0), bytes(4096)),
                   generate_signing_key()).to_bytes()
    rc = (f"/bin/sysctl -w dev.hyper_enclave.enabled=1\n"
          f"/bin/enclave_load /a.bin --enter {SEAL_MRENCLAVE}\n")
    keys = []
    for _ in range(10):
        run = boot(state, rc, {"/a.bin": enclave}, name="sealing")
        assert run.state == "poweroff", run.reason
        keys += re.findall(r"EENTER\(0x[0-9a-f]+\) returned (0x[0-9a-f]+)", run.log)
    assert len(keys) == 10 and len(set(keys)) == 1, keys
