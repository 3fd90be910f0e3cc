"""The monitor anchored in the TPM, on booted machines: the root secret sealed at the first
launch and unsealed on a reboot (but not with another command line or a damaged blob), the
attestation key in PCR 13 and each EINIT in PCR 14 with events tpm2_eventlog replays, host
extends of PCRs 12-14 refused at the device, the AK quote crosschecked by tpm2-tools, and a
dead swtpm refusing the launch instead of hanging."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss import TPMS_ATTEST

from hyperenclave.machine import DEFAULT_CMDLINE, Machine, MachineConfig, default_boot_images
from hyperenclave.sdk import EnclaveLayout, sign
from hyperenclave.tpm import eventlog as tcg
from hyperenclave.tpm.attestation_ca import TCG_KP_AIK_CERTIFICATE
from hyperenclave.vmm.sigstruct import generate_signing_key
from hyperenclave.vmm.tpm_anchor import (TAG_ENCLAVE, TAG_MONITOR_KEY, AnchorKeys,
                                         EnclaveIdentity, RootSecretUnavailable)
from tests.support.asm import assemble

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CROSSCHECK = ROOT.parent / "shared" / "checks" / "crosscheck-evidence"
PCREXTEND = Path(__file__).resolve().parents[1] / "support" / "guest" / "tpm_pcrextend.c"
EEXIT_AT_ONCE = """
    mov %rcx, %rbx
    mov $4, %eax
    enclu
"""
RC = ("/bin/sysctl -w dev.hyper_enclave.enabled=1\n"
      "/bin/tpm_pcrextend 16 12 13 14\n"
      "/bin/enclave_load /enclave.bin --enter 5\n")
NONCE = hashlib.sha256(b"verifier nonce").digest()
TPM_RC_LOCALITY = 0x907


@dataclass
class Boot:
    serial: str
    monitor_log: list[str]
    anchor: AnchorKeys | None
    out: Path
    state: str


@pytest.fixture(scope="module")
def images():
    bundle = sign(EnclaveLayout.simple(assemble(EEXIT_AT_ONCE, 0)), generate_signing_key())
    return default_boot_images(extra_files={"/etc/rc": RC.encode(), "/enclave.bin": bundle.to_bytes()},
                               extra_programs={"tpm_pcrextend": PCREXTEND})


def boot(images, state: Path, out: Path, cmdline: str = DEFAULT_CMDLINE) -> Boot:
    with Machine(MachineConfig(name="anchored", state_dir=state, cmdline=cmdline), images) as m:
        m.boot()
        result = m.run(timeout=120)
        m.export_evidence(out, nonce=NONCE)
        return Boot(m.serial_text(), list(m.monitor.log_lines), m.monitor.anchor_keys, out,
                    result.state)


@pytest.fixture(scope="module")
def boots(images, tmp_path_factory) -> dict[str, Boot]:
    """Four boots of one machine: first launch, reboot, changed command line, and one with the
    sealed blob and the AK certificate damaged."""
    tmp = tmp_path_factory.mktemp("anchored")
    state = tmp / "state"
    runs = {"first": boot(images, state, tmp / "first"),
            "reboot": boot(images, state, tmp / "reboot"),
            "cmdline": boot(images, state, tmp / "cmdline", DEFAULT_CMDLINE + " quiet")}
    priv = state / "monitor" / "root-secret.priv"
    priv.write_bytes(priv.read_bytes()[:-7])
    (state / "monitor" / "ak.crt.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    runs["damaged"] = boot(images, state, tmp / "damaged")
    return runs


def hv_lines(run: Boot, text: str) -> list[str]:
    return [line for line in run.monitor_log if text in line]


# ------------------------------------------------------------------ root secret
def test_the_first_launch_seals_a_root_secret_and_a_reboot_unseals_the_same_one(boots) -> None:
    first, reboot = boots["first"], boots["reboot"]
    assert hv_lines(first, "root secret created from the TPM RNG and sealed to PCRs "
                           "0,1,2,3,4,5,6,7,8,9,12")
    assert hv_lines(reboot, "root secret unsealed (PCRs 0,1,2,3,4,5,6,7,8,9,12 match")
    assert len(first.anchor.root_secret) == 32
    assert reboot.anchor.require_root_secret() == first.anchor.root_secret


def test_another_command_line_cannot_unseal_the_root_secret(boots) -> None:
    run = boots["cmdline"]
    [line] = hv_lines(run, "root secret unseal failed")
    assert "PCRs 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12 differ from their values at sealing time" in line
    assert "enclave sealing keys are unavailable" in line
    assert run.anchor.root_secret is None
    with pytest.raises(RootSecretUnavailable, match="sealing keys are unavailable"):
        run.anchor.require_root_secret()
    assert run.state == "poweroff" and hv_lines(run, "launched on CPU 0")


def test_a_damaged_sealed_blob_is_reported_and_the_monitor_still_launches(boots) -> None:
    run = boots["damaged"]
    [line] = hv_lines(run, "root secret unseal failed")
    assert "sealed blob" in line
    assert run.anchor.root_secret is None
    assert run.state == "poweroff" and hv_lines(run, "launched on CPU 0")


# ------------------------------------------------------------------ PCR 13 and 14
def events(run: Boot, pcr: int) -> list[tcg.Event]:
    log = tcg.parse_eventlog((run.out / "eventlog.bin").read_bytes())
    return [e for e in log if e.pcr == pcr]


def test_pcr13_holds_exactly_this_launchs_attestation_key(boots) -> None:
    for run in boots.values():
        [event] = events(run, 13)
        assert event.event_type == tcg.EV_EVENT_TAG
        spki = run.anchor.attestation_public_der
        assert event.data == tcg.encode_event_tag(TAG_MONITOR_KEY, spki)
        assert event.digest == hashlib.sha256(spki).digest()
    assert boots["first"].anchor.attestation_public_der != boots["reboot"].anchor.attestation_public_der


def test_pcr14_records_the_identity_of_each_initialized_enclave(boots) -> None:
    run = boots["first"]
    [einit] = hv_lines(run, "EINIT: enclave")
    m = re.search(r"MRENCLAVE (\w+) MRSIGNER (\w+) ISVPRODID (\d+) ISVSVN (\d+)", einit)
    [event] = events(run, 14)
    tag_id, size = int.from_bytes(event.data[:4], "little"), int.from_bytes(event.data[4:8], "little")
    assert (tag_id, size) == (TAG_ENCLAVE, 84)
    identity = EnclaveIdentity.unpack(event.data[8:])
    assert identity.mr_enclave.hex() == m.group(1) and identity.mr_signer.hex() == m.group(2)
    assert (identity.isv_prod_id, identity.isv_svn) == (int(m.group(3)), int(m.group(4)))
    assert identity.flags & 1, "ATTRIBUTES.INIT as EINIT left it"
    assert event.digest == hashlib.sha256(event.data[8:]).digest()


def test_tpm2_eventlog_replays_pcrs_13_and_14_to_the_tpms_values(boots) -> None:
    run = boots["first"]
    result = subprocess.run(["tpm2_eventlog", str(run.out / "eventlog.bin")], capture_output=True,
                            text=True, check=True)
    assert "WARN" not in result.stderr and "ERROR" not in result.stderr
    pcrs_section = result.stdout.split("\npcrs:", 1)[1]
    tpm = (run.out / "pcrs.json").read_text()
    for pcr in (13, 14):
        replayed = re.search(rf"^\s+{pcr}\s*:\s*0x([0-9A-Fa-f]+)", pcrs_section, re.M).group(1)
        assert f'"{pcr}": "{replayed.lower()}"' in tpm
        assert replayed.lower() == tcg.replay(events(run, pcr))[pcr].hex()


# ------------------------------------------------------------------ host mediation
@pytest.mark.attack(name='extend the monitor-owned PCRs 12-14',
                    route="TPM2_PCR_Extend through the host's /dev/tpm0",
                    defence='CRB mediation: TPM_RC_LOCALITY')
def test_after_launch_the_host_cannot_extend_pcrs_12_to_14(boots) -> None:
    run = boots["first"]
    assert "hyper_enclave: measured monitor image into PCR12" in run.serial   # before launch
    assert "tpm_pcrextend: PCR16 rc=0x0\n" in run.serial
    for pcr in (12, 13, 14):
        assert f"tpm_pcrextend: PCR{pcr} rc={TPM_RC_LOCALITY:#x}" in run.serial
        assert hv_lines(run, f"refused a host TPM command: PCR {pcr} belongs to the monitor")


# ------------------------------------------------------------------ quote and AK
def test_tpm2_tools_verify_the_quote_nonce_and_event_log(boots) -> None:
    for name in ("first", "reboot"):
        result = subprocess.run([str(CROSSCHECK), str(boots[name].out)], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "crosscheck: OK" in result.stdout


def test_the_quote_is_over_the_boot_chain_and_monitor_pcrs_with_the_nonce(boots) -> None:
    out = boots["first"].out
    attest, _ = TPMS_ATTEST.unmarshal((out / "quote.msg").read_bytes())
    assert bytes(attest.extraData) == NONCE == (out / "nonce.bin").read_bytes()
    [selection] = attest.attested.quote.pcrSelect
    assert bytes(selection.pcrSelect)[:3] == bytes([0xFF, 0x73, 0x00])   # 0-9, 12, 13, 14


def test_the_ak_is_enrolled_once_and_its_certificate_chains_to_the_ca(boots) -> None:
    first, reboot = boots["first"], boots["reboot"]
    assert hv_lines(first, "TPM attestation key enrolled")
    assert not hv_lines(reboot, "TPM attestation key enrolled")
    for run in (first, reboot):
        ca = x509.load_pem_x509_certificate((run.out / "ca.crt.pem").read_bytes())
        ak_cert = x509.load_pem_x509_certificate((run.out / "ak.crt.pem").read_bytes())
        ak_cert.verify_directly_issued_by(ca)
        eku = ak_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert TCG_KP_AIK_CERTIFICATE in eku
        ak_pub = serialization.load_pem_public_key((run.out / "ak.pub.pem").read_bytes())
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert ak_cert.public_key().public_bytes(*fmt) == ak_pub.public_bytes(*fmt)
    assert (first.out / "ak.crt.pem").read_bytes() == (reboot.out / "ak.crt.pem").read_bytes()


def test_a_damaged_ak_certificate_makes_the_monitor_enroll_a_new_ak(boots) -> None:
    run = boots["damaged"]
    assert hv_lines(run, "ak.crt.pem is damaged")
    assert hv_lines(run, "TPM attestation key enrolled")
    assert (run.out / "ak.pub.pem").read_bytes() != (boots["first"].out / "ak.pub.pem").read_bytes()
    check = subprocess.run([str(CROSSCHECK), str(run.out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_default_scenario_exports_evidence_tpm2_tools_accept(tmp_path) -> None:
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "boot.py"), "--state-dir", str(tmp_path / "st"),
                          "--out", str(out), "-q"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in ("ak.pub.pem", "quote.msg", "quote.sig", "pcrs.ser", "nonce.bin", "ak.crt.pem",
                 "ca.crt.pem"):
        assert (out / name).stat().st_size > 0, name
    check = subprocess.run([str(CROSSCHECK), str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# ------------------------------------------------------------------ failures
def test_a_dead_swtpm_refuses_the_launch_and_the_host_goes_on(tmp_path) -> None:
    rc = "/bin/sysctl -w dev.hyper_enclave.enabled=1\n/bin/hello\n"
    images = default_boot_images(extra_files={"/etc/rc": rc.encode()})
    with Machine(MachineConfig(name="dead-tpm", state_dir=tmp_path / "state"), images) as m:
        def kill_swtpm(line: str) -> None:
            if "measured monitor image into PCR12" in line:
                os.kill(m.swtpm.pid, signal.SIGKILL)
        m.line_listeners.append(kill_swtpm)
        m.boot()
        result = m.run(timeout=60)
        log = list(m.monitor.log_lines)
        serial = m.serial_text()
    assert result.state == "poweroff"
    [refused] = [line for line in log if "launch refused" in line]
    assert "TPM anchor failed: swtpm died" in refused and "(-EIO)" in refused
    assert "Hello from user space" in serial
    assert m.monitor.anchor_keys is None and not m.monitor.enabled
