"""The enclave lifecycle from a host user program: SDK signer -> bundle -> /bin/enclave_load ->
/dev/hyper_enclave -> the monitor's ECREATE/EADD/EINIT/destroy, on one real boot.

The EPC is kept small (memmap=18M: 16 MiB of monitor memory, 512 EPC pages) so that one bundle
can exhaust it and a line listener can search all of it for an enclave's data while the guest
runs (power-off scrubs it, so afterwards is too late).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.sdk import EnclaveLayout, SignedEnclave, sign
from hyperenclave.vmm.sgx import Attributes
from hyperenclave.vmm.sigstruct import generate_signing_key

pytestmark = pytest.mark.integration

CMDLINE = "console=ttyS0 memmap=18M$0x30000000"
EPC, EPC_PAGES = 0x31000000, 512            # after the 16 MiB of monitor memory
MARKER = b"enclave data marker 4242"
CODE = b"\x0f\x01\xd7" * 100                 # any bytes: nothing runs in the enclave yet

Bundles = dict[str, SignedEnclave]

RC = [
    "/bin/enclave_load /enclaves/good",                     # before the monitor runs
    "/bin/sysctl -w dev.hyper_enclave.enabled=1",
    "/bin/enclave_load /enclaves/good",
    "/bin/enclave_load /enclaves/wrong-pages",
    "/bin/enclave_load /enclaves/forged",
    "/bin/enclave_load /enclaves/not-64-bit",
    "/bin/enclave_load /enclaves/good /enclaves/two-threads --keep",
    "/bin/enclave_load /enclaves/too-big",
    "/bin/enclave_load /enclaves/good",
    "/bin/sysctl -w dev.hyper_enclave.enabled=0",
]


@dataclass
class Run:
    log: str
    monitor_log: str
    outputs: list[str]                      # console output of each RC line, in order
    epc_markers: list[tuple[str, int]]      # (console line, MARKER copies in the EPC then)


@pytest.fixture(scope="module")
def bundles() -> Bundles:
    key = generate_signing_key()
    good = sign(EnclaveLayout.simple(CODE, MARKER, isv_prod_id=7, isv_svn=3), key)
    other_pages = EnclaveLayout.simple(CODE, b"other data")
    signature = good.sigstruct.signature ^ 1
    # code pages, a TCS and two SSA pages fill the EPC; the SECS is the page too many
    too_big = EnclaveLayout.simple(bytes(4096 * (EPC_PAGES - 3)))
    return {
        "good": good,
        "wrong-pages": SignedEnclave(other_pages, good.sigstruct),
        "forged": replace(good, sigstruct=replace(good.sigstruct, signature=signature)),
        "not-64-bit": sign(EnclaveLayout.simple(CODE, attributes=Attributes(0, 0x3)), key),
        "two-threads": sign(EnclaveLayout.simple(CODE, b"second", threads=2), key),
        "too-big": sign(too_big, key),
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, bundles: Bundles) -> Run:
    files = {f"/enclaves/{name}": b.to_bytes() for name, b in bundles.items()}
    files["/etc/rc"] = "\n".join(RC).encode() + b"\n"
    tmp = tmp_path_factory.mktemp("enclave_load")
    m = Machine(MachineConfig(name="enclave-load", state_dir=Path(tmp) / "state", cmdline=CMDLINE),
                default_boot_images(extra_files=files))
    markers: list[tuple[str, int]] = []

    def on_line(line: str) -> None:
        if "enclave_load: enclave at" in line or "hyper_enclave: enclave [" in line:
            markers.append((line, m.memory.read(EPC, EPC_PAGES * 4096).count(MARKER)))
    m.line_listeners.append(on_line)
    try:
        m.boot()
        result = m.run(timeout=120)
        assert result.state == "poweroff", result.reason
        log = m.serial_text()
        monitor_log = "\n".join(m.monitor.log_lines)
    finally:
        m.shutdown()
    starts = [match.start() for match in re.finditer(r"Run /bin/\w+ as init process", log)]
    assert len(starts) == len(RC), log
    outputs = [log[a:b] for a, b in zip(starts, starts[1:] + [log.index("reboot: Power down")])]
    return Run(log, monitor_log, outputs, markers)


def exit_status(output: str) -> int:
    return int(re.search(r"/bin/\w+\[\d+\] exited with status (\d+)", output).group(1))


def test_without_the_monitor_the_device_is_enodev(run: Run) -> None:
    assert "enclave_load: /dev/hyper_enclave: No such device" in run.outputs[0]
    assert exit_status(run.outputs[0]) == 1


def test_a_signed_enclave_initializes_with_the_signers_mrenclave(run: Run,
                                                                 bundles: Bundles) -> None:
    good = bundles["good"]
    expected = good.layout.mrenclave()
    assert good.mrenclave == expected
    out = run.outputs[2]
    match = re.search(rf"enclave_load: enclave at (0x[0-9a-f]+) MRENCLAVE {expected.hex()} "
                      "initialized", out)
    assert match, out
    base = int(match.group(1), 16)
    assert base % good.layout.size == 0, "ELRANGE is size-aligned"
    assert f"ECREATE: enclave {EPC:#x}, ELRANGE [{base:#x}-{base + good.layout.size - 1:#x}]" \
        in run.monitor_log
    assert (f"EINIT: enclave {EPC:#x} MRENCLAVE {expected.hex()} MRSIGNER {good.mrsigner.hex()} "
            "ISVPRODID 7 ISVSVN 3") in run.monitor_log
    assert exit_status(out) == 0


def test_close_destroys_the_enclave_and_the_monitor_scrubs_its_epc(run: Run,
                                                                   bundles: Bundles) -> None:
    pages = len(bundles["good"].layout.pages) + 1
    out = run.outputs[2]
    assert re.search(rf"hyper_enclave: enclave \[0x[0-9a-f]+-0x[0-9a-f]+\] destroyed, {pages} "
                     "EPC pages freed", out)
    (initialized, live), (destroyed, after) = run.epc_markers[:2]
    assert "initialized" in initialized and live == 1, "the data page is in the EPC"
    assert "destroyed" in destroyed and after == 0, "and scrubbed once the enclave is gone"
    assert f"enclave {EPC:#x} destroyed, its EPC pages scrubbed" in run.monitor_log


@pytest.mark.attack(name='load pages other than the signed ones',
                    route='enclave_load with changed pages',
                    defence='EINIT: SGX_INVALID_MEASUREMENT')
def test_pages_other_than_the_signed_ones_fail_einit(run: Run) -> None:
    out = run.outputs[3]
    assert "hyper_enclave: EINIT failed: SGX_INVALID_MEASUREMENT (4)" in out
    assert "enclave_load: /enclaves/wrong-pages: INIT failed: SGX_INVALID_MEASUREMENT (4)" in out
    assert "destroyed" in out and exit_status(out) == 1


@pytest.mark.attack(name='forged SIGSTRUCT',
                    route='enclave_load of a bundle with a forged signature',
                    defence='EINIT verifies RSA-3072 and Q1/Q2')
def test_a_forged_signature_fails_einit(run: Run) -> None:
    out = run.outputs[4]
    assert "hyper_enclave: EINIT failed: SGX_INVALID_SIGNATURE (8)" in out
    assert "enclave_load: /enclaves/forged: INIT failed: SGX_INVALID_SIGNATURE (8)" in out
    assert exit_status(out) == 1


def test_a_secs_the_monitor_refuses_is_einval(run: Run) -> None:
    out = run.outputs[5]
    assert "hyper_enclave: ECREATE failed: #GP (vector 13)" in out
    assert "enclave_load: /enclaves/not-64-bit: ENCLAVE_CREATE failed: Invalid argument" in out
    assert "destroyed" not in out, "there was no enclave"


def test_two_enclaves_live_at_once_and_process_exit_destroys_them(run: Run,
                                                                  bundles: Bundles) -> None:
    out = run.outputs[6]
    bases = re.findall(r"enclave_load: enclave at (0x[0-9a-f]+) MRENCLAVE ([0-9a-f]{64})", out)
    assert [mr for _, mr in bases] == [bundles["good"].mrenclave.hex(),
                                       bundles["two-threads"].mrenclave.hex()]
    assert len({base for base, _ in bases}) == 2
    kept = out.index("enclave_load: exiting with 2 enclave(s) open")
    destroyed = [m.start() for m in re.finditer(r"hyper_enclave: enclave \[.*\] destroyed", out)]
    assert len(destroyed) == 2 and kept < destroyed[0]
    assert destroyed[1] < out.index("exited with status 0")


def test_running_out_of_epc_is_enomem_and_frees_every_page(run: Run) -> None:
    out = run.outputs[7]
    assert f"hyper_enclave: EPC [mem {EPC:#x}-{EPC + EPC_PAGES * 4096 - 1:#x}]: {EPC_PAGES} " \
        "pages for enclaves" in run.log
    assert f"hyper_enclave: out of EPC: all {EPC_PAGES} pages are in use" in out
    assert re.search(r"enclave_load: /enclaves/too-big: ADD_PAGE at 0x[0-9a-f]+ failed: "
                     "Cannot allocate memory", out)
    assert f"destroyed, {EPC_PAGES} EPC pages freed" in out
    again = run.outputs[8]
    assert "initialized" in again and exit_status(again) == 0, "the whole EPC is free again"


def test_every_enclave_is_gone_so_the_monitor_can_leave(run: Run) -> None:
    creates = re.findall(r"ECREATE: enclave (0x[0-9a-f]+)", run.monitor_log)
    destroys = re.findall(r"enclave (0x[0-9a-f]+) destroyed", run.monitor_log)
    assert len(creates) == 7 and sorted(creates) == sorted(destroys)
    assert "hyper_enclave: The hypervisor has been disabled" in run.outputs[9]
