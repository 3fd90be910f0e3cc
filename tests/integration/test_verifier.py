"""The open verifier on real TPM evidence (swtpm quotes, tests/support/evidence.py): genuine
evidence passes every named check (and tpm2-tools' checkquote agrees); each forgery or policy
violation fails exactly the check named for it, with a reason, including the two forgeries
tpm2-tools 5.4 accepts (CVE-2024-29038, CVE-2024-29039)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hyperenclave.tpm.eventlog import EventLog, parse_eventlog
from hyperenclave.tpm.evidence import read_pcrs_ser
from hyperenclave.tpm.quote import serialize_pcrs
from hyperenclave.verifier import CHECKS, Policy, PolicyError, verify
from hyperenclave.verifier.cli import main
from hyperenclave.verifier.verify import launch_json
from hyperenclave.vmm.quote import EnclaveQuote
from hyperenclave.vmm.sgx import AttributeFlags
from hyperenclave.vmm.tpm_anchor import EnclaveIdentity
from tests.support.evidence import ENCLAVE, Boot, Ca, make_evidence, policy_for

pytestmark = pytest.mark.integration
CROSSCHECK = Path(__file__).resolve().parents[3] / "shared" / "checks" / "crosscheck-evidence"


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca.create("HyperEnclave test attestation CA")


@pytest.fixture
def evidence(tmp_path: Path, ca: Ca):
    """make(boot=Boot(...)) -> the evidence directory of that boot."""
    def make(boot: Boot | None = None, name: str = "ev") -> Path:
        return make_evidence(tmp_path / name, boot or Boot(), ca, tmp_path / f"{name}-tpm")
    return make


def failed(verdict: dict) -> dict[str, str]:
    return {c["name"]: c["reason"] for c in verdict["checks"] if not c["ok"]}


def appraise(path: Path, ca: Ca, boot: Boot | None = None, **changes) -> dict:
    return verify(path, Policy.from_json(policy_for(boot or Boot(), ca, **changes)))


def test_genuine_evidence_passes_every_check(evidence, ca) -> None:
    path = evidence()
    verdict = appraise(path, ca)
    assert [c["name"] for c in verdict["checks"]] == list(CHECKS)
    assert verdict["ok"] and verdict["verdict"] == "pass", failed(verdict)
    assert json.loads((path / "verdict.json").read_text()) == verdict
    assert verdict["enclave"]["mr_enclave"] == ENCLAVE.mr_enclave.hex()
    assert verdict["launched_enclaves"] == [launch_json(ENCLAVE)]


def test_tpm2_tools_agree_on_the_genuine_evidence(evidence) -> None:
    result = subprocess.run([str(CROSSCHECK), str(evidence())], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


DEBUG = dataclasses.replace(ENCLAVE, flags=ENCLAVE.flags | AttributeFlags.DEBUG)
ROGUE = EnclaveIdentity(b"\x66" * 32, b"\x99" * 32, ENCLAVE.flags, ENCLAVE.xfrm, 1, 2)


@pytest.mark.parametrize("case, boot, check, reason", [
    ("tampered kernel", Boot(kernel=b"evil kernel"), "boot_measurements", "PCR 9 event"),
    ("tampered monitor", Boot(monitor_image=b"evil monitor"), "boot_measurements", "PCR 12 event"),
    ("changed command line", Boot(cmdline="console=ttyS0 init=/bin/sh"), "boot_measurements",
     "PCR 8 event"),
    ("replayed old evidence", Boot(nonce=b"yesterday's challenge"), "nonce", "replayed"),
    ("forged quote with bad magic (CVE-2024-29038)", Boot(forge_magic=True), "attest_structure",
     "not TPM_GENERATED_VALUE"),
    ("AK not certified by the CA", Boot(ak_issuer="rogue"), "ak_certificate", "not issued by"),
    ("debug enclave under a production policy", Boot(launched=[DEBUG], quoted=DEBUG),
     "report_policy", "DEBUG"),
    ("wrong signer", Boot(launched=[ROGUE], quoted=ROGUE), "report_policy", "neither MRENCLAVE"),
    ("an enclave launched that the policy does not list", Boot(launched=[ENCLAVE, ROGUE]),
     "enclave_launches", "is not allowed"),
    ("quoted enclave never launched", Boot(launched=[]), "enclave_launches", "not among"),
    ("quote signed by an unmeasured key",
     Boot(quote_signer=ec.generate_private_key(ec.SECP256R1())), "monitor_key", "did not sign"),
])
@pytest.mark.attack(name='replayed old evidence and forged quotes, logs and reports',
                    route='evidence handed to the verifier',
                    defence="the verifier's named check fails")
def test_each_forgery_fails_its_check(evidence, ca, case, boot, check, reason) -> None:
    verdict = appraise(evidence(boot), ca, Boot())
    assert not verdict["ok"] and verdict["verdict"] == "fail"
    assert check in failed(verdict), (case, failed(verdict))
    assert reason in failed(verdict)[check], (case, failed(verdict))
    also = {"replayed old evidence": {"report_policy"},   # the old nonce is in REPORTDATA too
            "wrong signer": {"enclave_launches"}}.get(case, set())   # and a rogue launch
    others = {n: r for n, r in failed(verdict).items() if n != check and n not in also}
    assert all(r.startswith("needs ") for r in others.values()), (case, others)


def test_the_cve_2024_29038_forgery_has_a_valid_ak_signature(evidence, ca) -> None:
    """tpm2-tools 5.4 stops here and accepts; the magic is what gives it away."""
    verdict = appraise(evidence(Boot(forge_magic=True)), ca)
    assert "quote_signature" not in failed(verdict) and "nonce" not in failed(verdict)
    assert "attest_structure" in failed(verdict)


def test_swapped_pcr_selection_fails_cve_2024_29039(evidence, ca) -> None:
    """The real quote, with its values claimed for other PCRs (same digest)."""
    path = evidence()
    _, values = read_pcrs_ser((path / "pcrs.ser").read_bytes())
    moved = {10 + i: value for i, (_, value) in enumerate(values)}
    (path / "pcrs.ser").write_bytes(serialize_pcrs(moved))
    assert "pcr_values" in failed(appraise(path, ca))
    assert "claims PCRs sha256:10," in failed(appraise(path, ca))["pcr_values"]


def test_a_quote_over_other_pcrs_than_requested_fails_attest_structure(evidence, ca) -> None:
    path = evidence()
    verdict = appraise(path, ca, pcr_selection={"sha256": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14]})
    assert "not the requested" in failed(verdict)["attest_structure"]


def test_wrong_nonce_fails_nonce_and_report_data(evidence, ca) -> None:
    verdict = appraise(evidence(), ca, nonce=b"another challenge".hex())
    assert set(failed(verdict)) == {"nonce", "report_policy"}
    assert "nonce" in failed(verdict)["report_policy"]


def test_an_edited_event_log_fails_replay(evidence, ca) -> None:
    path = evidence()
    events = parse_eventlog((path / "eventlog.bin").read_bytes())
    log = EventLog()
    for e in events:
        digest = bytes(32) if e.pcr == 9 else e.digest       # hide the real kernel digest
        log.append(e.pcr, e.event_type, e.data, digest)
    (path / "eventlog.bin").write_bytes(log.to_bytes())
    verdict = appraise(path, ca)
    assert "replays PCR 9" in failed(verdict)["eventlog_replay"]
    assert {"boot_measurements", "monitor_key", "enclave_launches"} <= set(failed(verdict))
    assert all(r == "needs eventlog_replay" for n, r in failed(verdict).items()
               if n != "eventlog_replay")


def test_a_second_pcr_13_extend_fails_monitor_key(evidence, ca) -> None:
    """A host that got an extend of PCR 13 through (the device must refuse it) is seen here."""
    boot = Boot(launched=[ENCLAVE])
    path = evidence(boot)
    events = parse_eventlog((path / "eventlog.bin").read_bytes())
    pcr13 = next(e for e in events if e.pcr == 13)
    log = EventLog()
    for e in events:
        log.append(e.pcr, e.event_type, e.data, e.digest)
    log.append(13, pcr13.event_type, pcr13.data, pcr13.digest)
    (path / "eventlog.bin").write_bytes(log.to_bytes())
    assert "PCR 13" in failed(appraise(path, ca))["eventlog_replay"]


def test_a_changed_report_body_fails_the_monitor_signature(evidence, ca) -> None:
    path = evidence()
    quote = EnclaveQuote.from_bytes((path / "enclave-quote.bin").read_bytes())
    raised = dataclasses.replace(quote, body=dataclasses.replace(quote.body, isv_svn=9))
    (path / "enclave-quote.bin").write_bytes(raised.to_bytes())
    (path / "enclave-quote.json").write_text(json.dumps(raised.to_json()))
    verdict = appraise(path, ca)
    assert "not signed by the quote's monitor key" in failed(verdict)["monitor_signature"]
    assert "not among" in failed(verdict)["enclave_launches"], "and ISVSVN 9 was never launched"
    assert set(failed(verdict)) == {"monitor_signature", "enclave_launches"}


def test_a_json_quote_that_disagrees_with_the_binary_is_refused(evidence, ca) -> None:
    path = evidence()
    doc = json.loads((path / "enclave-quote.json").read_text())
    doc["report_body"]["isv_svn"] = 9
    (path / "enclave-quote.json").write_text(json.dumps(doc))
    assert "disagree" in failed(appraise(path, ca))["monitor_signature"]


def test_a_corrupted_quote_signature_fails(evidence, ca) -> None:
    path = evidence()
    sig = bytearray((path / "quote.sig").read_bytes())
    sig[-1] ^= 1
    (path / "quote.sig").write_bytes(bytes(sig))
    assert "not the AK's signature" in failed(appraise(path, ca))["quote_signature"]


def test_an_untrusted_ca_fails_even_if_it_issued_the_ak(evidence, ca) -> None:
    verdict = appraise(evidence(), Ca.create("someone else's CA"))
    assert "not the trusted attestation CA" in failed(verdict)["ak_certificate"]


def test_golden_pcrs_are_compared(evidence, ca) -> None:
    path = evidence()
    verdict = appraise(path, ca, golden_pcrs={"0": "00" * 32})
    assert "PCR 0 is" in failed(verdict)["boot_measurements"]


def test_a_missing_file_fails_the_checks_that_need_it(evidence, ca) -> None:
    path = evidence()
    (path / "eventlog.bin").unlink()
    assert "eventlog.bin" in failed(appraise(path, ca))["eventlog_replay"]


def test_the_enclave_launch_events_are_decoded_in_the_verdict(evidence, ca) -> None:
    verdict = appraise(evidence(Boot(launched=[ROGUE, ENCLAVE])), ca,
                       allowed_enclaves=[{"mr_signer": ENCLAVE.mr_signer.hex()},
                                         {"mr_enclave": ROGUE.mr_enclave.hex()}])
    assert verdict["ok"], failed(verdict)
    assert [e["mr_enclave"] for e in verdict["launched_enclaves"]] == [
        ROGUE.mr_enclave.hex(), ENCLAVE.mr_enclave.hex()]


def test_the_command_line_writes_the_verdict_and_exits_by_it(evidence, ca, tmp_path, capsys) -> None:
    path = evidence()
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(policy_for(Boot(), ca)))
    assert main([str(path), "--policy", str(policy)]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "pass"
    assert json.loads((path / "verdict.json").read_text())["ok"]
    policy.write_text(json.dumps(policy_for(Boot(), ca, nonce="00")))
    assert main([str(path), "--policy", str(policy)]) == 1
    policy.write_text(json.dumps(policy_for(Boot(), ca, allow_everything=True)))
    assert main([str(path), "--policy", str(policy)]) == 2
    assert "unknown key(s) allow_everything" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"nonce": "zz"}, "nonce: 'zz' is not a hex string"),
    ({"pcr_selection": {"sha256": [0, 1]}}, "must include PCRs 13 and 14"),
    ({"enclave": {"allow_debug": True}}, "give allowed mr_enclave and/or mr_signer"),
    ({"golden_pcrs": {"15": "00" * 32}}, "PCR 15 has reference values but is not in pcr_selection"),
    ({"allowed_enclaves": [{"mr_enclave": "11" * 32, "mr_signer": "22" * 32}]}, "one of"),
])
def test_bad_policies_are_refused_with_the_key_named(ca, change, message) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_json(policy_for(Boot(), ca, **change))
