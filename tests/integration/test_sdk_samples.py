"""The enclave SDK end to end: enclaves written in C against the trusted runtime, signed by
`hyperenclave-sign`, run by host programs through the untrusted runtime on a real machine:
ECALLs, OCALLs, AEX/ERESUME under timer preemption, bounds-checked copies, and an enclave
exception aborting the enclave (through its SSA path) while the app and the host go on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.platform.firmware.measured_boot import BootImages
from hyperenclave.sdk import SignedEnclave, sign
from hyperenclave.sdk.build import build_enclave
from hyperenclave.sdk.image import CONFIG, EnclaveConfig, layout_from_elf
from hyperenclave.sdk.samples import sample_bundles, sample_key
from hyperenclave.vmm.sgx import PageType

pytestmark = pytest.mark.integration

SPIN = 4_000_000
SECRET = "s3cr3t-0f-th3-3ncl4v3"
RC = f"""/bin/sysctl -w dev.hyper_enclave.enabled=1
/bin/hello_app 19 23
/bin/spinner_app {SPIN}
/bin/secret_keeper_app {SECRET} nope {SECRET}
/bin/fault_app 1
/bin/fault_app 2
/bin/fault_app 3
/bin/heap_app
/bin/hello
"""
HEAP = Path(__file__).resolve().parents[1] / "support" / "enclaves"
HEAP_SIZE = 8192
SGX_EXITINFO_VALID_HW = 0x8000_0300     # EXITINFO.VALID | EXIT_TYPE = hardware exception


@dataclass
class Run:
    log: str
    monitor_log: list[str]


def boot(tmp: Path, images: BootImages) -> Run:
    with Machine(MachineConfig(name="sdk", state_dir=tmp / "state"), images) as m:
        m.boot()
        result = m.run(timeout=180)
        assert result.state == "poweroff", result.reason
        return Run(m.serial_text(), list(m.monitor.log_lines))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    elf = build_enclave([HEAP / "heap.c"])
    heap = sign(layout_from_elf(elf.read_bytes(), EnclaveConfig(heap_size=HEAP_SIZE)),
                sample_key())
    images = default_boot_images(extra_files={"/etc/rc": RC.encode(),
                                              "/enclaves/heap.bin": heap.to_bytes()},
                                 extra_programs={"heap_app": [HEAP / "heap_app.c"]})
    return boot(tmp_path_factory.mktemp("sdk"), images)


def spinner_checksum(seed: int, iterations: int) -> int:
    """samples/spinner/spinner.h, in Python."""
    x, mask = seed, (1 << 64) - 1
    for _ in range(iterations):
        x = (x * 6364136223846793005 + 1442695040888963407) & mask
        x ^= x >> 29
    return x


def exit_status(log: str, program: str) -> list[str]:
    return re.findall(rf"/bin/{program}\[\d+\] (exited with status \d+|killed by signal .*)", log)


def test_hello_ecall_adds_and_its_ocall_prints_through_the_app(run: Run) -> None:
    hello = sample_bundles()["/enclaves/hello.bin"]
    mrenclave = SignedEnclave.from_bytes(hello).mrenclave.hex()
    assert re.search(rf"hello_app: enclave at 0x[0-9a-f]+ MRENCLAVE {mrenclave} initialized",
                     run.log), run.log[-3000:]
    ocall = run.log.index("hello_app: OCALL print: hello from the enclave: 19 + 23 = 42")
    assert run.log.index("hello_app: ECALL add(19, 23) = 42") > ocall
    assert run.log.index("hello_app: enclave destroyed") > ocall
    assert exit_status(run.log, "hello_app") == ["exited with status 0"]
    assert any("shared [" in line and "with the app" in line for line in run.monitor_log)


def test_the_spinner_returns_the_uninterrupted_result_after_timer_aexs(run: Run) -> None:
    m = re.search(rf"spinner_app: {SPIN} iterations: checksum (0x[0-9a-f]+) in the enclave "
                  r"after (\d+) AEX, (0x[0-9a-f]+) outside: equal", run.log)
    assert m, run.log[-3000:]
    inside, aex, outside = int(m.group(1), 16), int(m.group(2)), int(m.group(3), 16)
    assert inside == outside == spinner_checksum(0x5EED, SPIN)
    assert aex > 0, "the loop outlived a timer tick"
    base = int(re.search(r"spinner_app: enclave at (0x[0-9a-f]+)", run.log).group(1), 16)
    layout = SignedEnclave.from_bytes(sample_bundles()["/enclaves/spinner.bin"]).layout
    tcs = base + next(p.offset for p in layout.pages if p.page_type == PageType.PT_TCS)
    created = next(i for i, line in enumerate(run.monitor_log)
                   if f"ELRANGE [{base:#x}-" in line)
    lines = run.monitor_log[created:]
    lines = lines[:next(i for i, line in enumerate(lines) if "destroyed" in line)]
    interrupts = [line for line in lines if f"(TCS {tcs:#x})" in line
                  and line.endswith("(interrupt)")]
    assert len(interrupts) == aex, "each AEX the app counted was a timer interrupt"


def test_the_secret_keeper_checks_guesses_and_keeps_its_secret(run: Run) -> None:
    assert f"secret_keeper_app: provisioned a {len(SECRET)}-byte secret: SGX_SUCCESS" in run.log
    assert 'secret_keeper_app: guess "nope": wrong' in run.log
    assert f'secret_keeper_app: guess "{SECRET}": right' in run.log
    where = re.search(r"secret_keeper_app: the secret lives at (0x[0-9a-f]+) \((\d+) bytes\) in "
                      r"ELRANGE \[(0x[0-9a-f]+)-(0x[0-9a-f]+)\]", run.log)
    assert where, run.log[-3000:]
    address, length, lo, hi = (int(g, 0) for g in where.groups())
    assert lo <= address and address + length <= hi + 1 and length == len(SECRET)
    layout = SignedEnclave.from_bytes(sample_bundles()["/enclaves/secret_keeper.bin"]).layout
    config = next(p.data for p in layout.pages if b"HECONFIG" in p.data)
    _, _, heap, heap_size, _ = CONFIG.unpack_from(config, config.index(b"HECONFIG"))
    assert heap <= address - lo and address - lo + length <= heap + heap_size, "on the heap"


@pytest.mark.attack(name='Iago-style marshalling pointers into ELRANGE or outside the marshalling area',
                    route='secret_keeper_app passes hostile pointers to ECALLs',
                    defence="trusted runtime's bounds-checked copies")
def test_bounds_checked_copies_refuse_elrange_and_leave_the_marshalling_area(run: Run) -> None:
    echo = dict(re.findall(r"secret_keeper_app: ECALL echo from 0x[0-9a-f]+ \((.+)\): (\w+)",
                           run.log))
    assert echo == {
        "the marshalling area": "SGX_SUCCESS",
        "the secret, inside ELRANGE": "SGX_ERROR_INVALID_PARAMETER",
        "the app's stack, outside the marshalling area": "SGX_ERROR_INVALID_PARAMETER",
        "wrapping around": "SGX_ERROR_INVALID_PARAMETER",
    }
    assert re.search(r"secret_keeper_app: ECALL with the marshalling area at 0x[0-9a-f]+ "
                     r"\(inside ELRANGE\): SGX_ERROR_INVALID_PARAMETER", run.log)
    assert exit_status(run.log, "secret_keeper_app") == ["exited with status 0"]


@pytest.mark.parametrize("kind, vector", [(1, 6), (2, 14), (3, 0)])
def test_an_enclave_exception_aborts_the_enclave_and_the_app_goes_on(run: Run, kind: int,
                                                                      vector: int) -> None:
    reports = re.findall(r"fault_app: ECALL (\d+): (\w+), EXITINFO (0x[0-9a-f]+) \(vector (\d+)\),"
                         r" last host exception vector (-?\d+)", run.log)
    kind_report = [r for r in reports if r[0] == str(kind)]
    assert kind_report == [(str(kind), "SGX_ERROR_ENCLAVE_CRASHED",
                            hex(SGX_EXITINFO_VALID_HW | vector), str(vector), str(vector))]
    assert run.log.count("fault_app: ECALL nothing: SGX_SUCCESS") == 3
    assert run.log.count("fault_app: ECALL nothing afterwards: SGX_ERROR_ENCLAVE_CRASHED") == 3
    assert exit_status(run.log, "fault_app") == ["exited with status 0"] * 3
    assert any(re.search(rf"AEX from enclave .* vector {vector:#x}$", line)
               for line in run.monitor_log)


def test_the_heap_hands_out_enclave_memory_and_merges_what_is_freed(run: Run) -> None:
    block = (100 + 16 + 15) & ~15                   # the size header, 16-byte granules
    assert (f"heap_app: SGX_SUCCESS: {HEAP_SIZE // block} blocks, {HEAP_SIZE // block} in "
            "ELRANGE, big block before merge 0, after 1") in run.log, run.log[-3000:]


def test_the_host_keeps_running_after_the_enclaves(run: Run) -> None:
    assert run.log.index("Hello from user space") > run.log.rindex("fault_app: enclave destroyed")
    assert "segfault" not in run.log and "traps:" not in run.log
    destroyed = re.findall(r"hyper_enclave: enclave \[0x[0-9a-f]+-0x[0-9a-f]+\] destroyed", run.log)
    assert len(destroyed) == 7


def test_the_default_boot_runs_the_hello_enclave(tmp_path, guest_images: BootImages) -> None:
    log = boot(tmp_path, guest_images).log
    assert "hello_app: OCALL print: hello from the enclave: 2 + 40 = 42" in log, log[-3000:]
    assert "hello_app: ECALL add(2, 40) = 42" in log
    assert "hello_app: enclave destroyed" in log
