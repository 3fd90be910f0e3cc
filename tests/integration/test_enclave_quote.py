"""Remote attestation end to end on a booted machine: a host program gives its enclave the
verifier's nonce, the enclave EREPORTs for HyperEnclave's pseudo-QE, the quote hypercall
(0x8000_000d) returns the monitor-signed enclave quote with a TPM2_Quote over the boot chain
and PCRs 12-14, and the open verifier accepts exactly that evidence with the machine's own
event log, against a policy naming the enclave, the CA and the nonce."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.sdk import EnclaveLayout, sign
from hyperenclave.tpm.quote import QUOTE_PCRS
from hyperenclave.verifier import Policy, verify
from hyperenclave.vmm.quote import QuoteBundle
from hyperenclave.vmm.sigstruct import generate_signing_key
from tests.support.asm import assemble
from tests.support.key_enclave import SOURCE

pytestmark = pytest.mark.integration
NONCE = "fresh-challenge-4711"
CROSSCHECK = Path(__file__).resolve().parents[3] / "shared" / "checks" / "crosscheck-evidence"


@pytest.fixture(scope="module")
def attested(tmp_path_factory):
    enclave = sign(EnclaveLayout.simple(assemble(SOURCE, 0), bytes(4096)), generate_signing_key())
    rc = ("/bin/sysctl -w dev.hyper_enclave.enabled=1\n"
          f"/bin/enclave_load /quoted.bin --quote {NONCE}\n")
    tmp: Path = tmp_path_factory.mktemp("quote")
    files = {"/etc/rc": rc.encode(), "/quoted.bin": enclave.to_bytes()}
    with Machine(MachineConfig(name="quote", state_dir=tmp / "state"),
                 default_boot_images(extra_files=files)) as m:
        m.boot()
        result = m.run(timeout=180)
        assert result.state == "poweroff", result.reason
        log = m.serial_text()
        assert re.search(rf"QUOTE\({NONCE}\) = 0, enclave (0x)?0, \d+ bytes", log), log[-3000:]
        bundle = bytes.fromhex("".join(re.findall(r"enclave_load: quote ([0-9a-f]+)", log)))
        out = tmp / "evidence"
        out.mkdir()
        QuoteBundle.from_bytes(bundle).write(out)
        (out / "eventlog.bin").write_bytes(m.eventlog_bytes())
        pcrs = {"sha256": {str(i): v.hex() for i, v in m.pcrs().items()}}
        (out / "pcrs.json").write_text(json.dumps(pcrs))
        monitor_log = list(m.monitor.log_lines)
    ca = x509.load_pem_x509_certificate((tmp / "state" / "attestation-ca" / "ca.crt.pem").read_bytes())
    return out, enclave, ca, monitor_log


def policy(enclave, ca, nonce: str = NONCE) -> Policy:
    return Policy.from_json({
        "trusted_ca_sha256": ca.fingerprint(hashes.SHA256()).hex(),
        "nonce": nonce.encode().hex(),
        "pcr_selection": {"sha256": list(QUOTE_PCRS)},
        "allowed_enclaves": [{"mr_signer": enclave.mrsigner.hex()}],
        "enclave": {"mr_enclave": [enclave.mrenclave.hex()], "isv_prod_id": 0,
                    "min_isv_svn": 0, "allow_debug": False}})


def test_the_quote_of_a_running_enclave_verifies(attested) -> None:
    out, enclave, ca, _ = attested
    verdict = verify(out, policy(enclave, ca))
    assert verdict["ok"], [c for c in verdict["checks"] if not c["ok"]]
    assert verdict["enclave"]["mr_enclave"] == enclave.mrenclave.hex()
    assert enclave.mrenclave.hex() in [e["mr_enclave"] for e in verdict["launched_enclaves"]]
    assert json.loads((out / "verdict.json").read_text())["verdict"] == "pass"


def test_tpm2_tools_agree(attested) -> None:
    out, *_ = attested
    result = subprocess.run([str(CROSSCHECK), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_same_evidence_is_stale_for_another_challenge(attested) -> None:
    out, enclave, ca, _ = attested
    verdict = verify(out, policy(enclave, ca, nonce="next-challenge"), write=False)
    failed = {c["name"] for c in verdict["checks"] if not c["ok"]}
    assert failed == {"nonce", "report_policy"}


def test_the_monitor_logged_the_quote(attested) -> None:
    _, enclave, _, monitor_log = attested
    assert any(f"EnclaveQuote: MRENCLAVE {enclave.mrenclave.hex()} quoted" in line
               for line in monitor_log)
