"""EREPORT and EGETKEY on a booted machine: host programs enter hand-written enclaves
(tests/support/key_enclave.py) with the real ENCLU instruction; the enclaves ask for reports and
keys with ENCLU too. An enclave verifies its own REPORT with its REPORT key (AES-CMAC with
AES-NI, inside); SEAL keys follow the key policy across enclaves; the host gets no key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.sdk import EnclaveLayout, sign
from hyperenclave.vmm.keys import KeyName, KeyPolicy
from hyperenclave.vmm.sgx import AttributeFlags, Attributes, KeyRequest, SgxErrorCode, Secs
from hyperenclave.vmm.sigstruct import generate_signing_key
from tests.support.asm import assemble
from tests.support.key_enclave import (SEAL_MRENCLAVE, SEAL_MRSIGNER, SEAL_NEWER_SVN,
                                       SELF_REPORT, SOURCE, fingerprint)

pytestmark = pytest.mark.integration

# (command, enclaves it enters in order)
COMMANDS = [(f"/bin/enclave_load /a.bin --enter {SELF_REPORT}", "a"),
            (f"/bin/enclave_load /a.bin /b.bin /c.bin --enter {SEAL_MRSIGNER}", "abc"),
            (f"/bin/enclave_load /a.bin /b.bin /c.bin --enter {SEAL_MRENCLAVE}", "abc"),
            (f"/bin/enclave_load /a.bin --enter {SEAL_NEWER_SVN}", "a")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """a and b: one signer, two MRENCLAVEs; c: a's pages signed by another signer."""
    code = assemble(SOURCE, 0)
    signer, other = generate_signing_key(), generate_signing_key()
    enclaves = {"a": sign(EnclaveLayout.simple(code, bytes(4096)), signer),
                "b": sign(EnclaveLayout.simple(code + b"enclave b", bytes(4096)), signer),
                "c": sign(EnclaveLayout.simple(code, bytes(4096)), other)}
    rc = "/bin/sysctl -w dev.hyper_enclave.enabled=1\n" + \
        "".join(command + "\n" for command, _ in COMMANDS) + "/bin/hcall 0x8000000b 0 0\n"
    files = {"/etc/rc": rc.encode()} | {f"/{name}.bin": e.to_bytes() for name, e in enclaves.items()}
    tmp: Path = tmp_path_factory.mktemp("keys")
    with Machine(MachineConfig(name="keys", state_dir=tmp / "state"),
                 default_boot_images(extra_files=files)) as m:
        m.boot()
        result = m.run(timeout=180)
        assert result.state == "poweroff", result.reason
        log = m.serial_text()
    returned = [int(v, 16) for v in re.findall(r"EENTER\(0x[0-9a-f]+\) returned (0x[0-9a-f]+)", log)]
    assert len(returned) == sum(len(e) for _, e in COMMANDS), log[-3000:]
    results, it = [], iter(returned)
    for _, names in COMMANDS:
        results.append({name: next(it) for name in names})
    return log, m.monitor, enclaves, results


def seal_fingerprint(monitor, enclave, policy: KeyPolicy) -> int:
    """What the enclave should have returned, from the monitor's own key hierarchy."""
    secs = Secs(attributes=Attributes(AttributeFlags.INIT | AttributeFlags.MODE64BIT, 3),
                mr_enclave=enclave.mrenclave, mr_signer=enclave.mrsigner)
    request = KeyRequest(key_name=KeyName.SEAL_KEY, key_policy=policy)
    return fingerprint(monitor.key_leaves.keys.egetkey(secs, request))


def test_an_enclave_verifies_its_own_report_with_its_report_key(run) -> None:
    _, _, _, results = run
    assert results[0]["a"] == 0b1111, "MAC matches (EGETKEY + CMAC, VerifyReport); one " \
        "flipped REPORTDATA bit does not"


def test_seal_keys_under_mrsigner_are_shared_by_one_signers_enclaves(run) -> None:
    _, monitor, enclaves, results = run
    keys = results[1]
    assert keys["a"] == keys["b"], "same MRSIGNER, other MRENCLAVE: same key"
    assert keys["c"] != keys["a"], "another signer: another key"
    for name, enclave in enclaves.items():
        assert keys[name] == seal_fingerprint(monitor, enclave, KeyPolicy.MRSIGNER)


@pytest.mark.attack(name="ask for another enclave's seal key",
                    route='EGETKEY from an enclave with another MRENCLAVE',
                    defence="keys derive from the caller's own SECS")
def test_seal_keys_under_mrenclave_are_the_enclaves_own(run) -> None:
    _, monitor, enclaves, results = run
    keys = results[2]
    assert keys["a"] != keys["b"], "same signer, other MRENCLAVE: other key"
    assert keys["a"] == keys["c"], "same MRENCLAVE (and ISVPRODID), whoever signed it"
    assert keys["a"] != results[1]["a"], "the policy is part of the key"
    for name, enclave in enclaves.items():
        assert keys[name] == seal_fingerprint(monitor, enclave, KeyPolicy.MRENCLAVE)


def test_a_key_for_a_newer_isvsvn_is_refused(run) -> None:
    _, _, _, results = run
    assert results[3]["a"] == SgxErrorCode.SGX_INVALID_ISVSVN


@pytest.mark.attack(name='ask for a key from the host',
                    route='EGETKEY hypercall from outside an enclave',
                    defence='#UD')
def test_the_host_cannot_ask_for_a_key(run) -> None:
    log, monitor, _, _ = run
    assert "hcall: 0x8000000b" not in log, "the EGETKEY hypercall returned to the host"
    assert re.search(r"/bin/hcall\[\d+\] .*(killed|signal|invalid opcode)", log, re.I) or \
        "invalid opcode" in log, log[-2000:]
    assert any("ENCLAVE_GET_KEY" in line and "#UD" in line for line in monitor.log_lines)
