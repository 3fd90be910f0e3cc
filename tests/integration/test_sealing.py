"""Enclave sealing on a booted machine (sample `sealer`, trusted runtime trts/seal.c): text sealed
with EGETKEY's SEAL key opens again in the same boot and after a reboot (the monitor's root
secret comes back from the TPM), never when modified, never in another enclave under MRENCLAVE
policy, and never after a boot with another kernel command line (the TPM keeps the root secret;
EGETKEY then derives from a secret of that launch only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hyperenclave.machine import DEFAULT_CMDLINE
from hyperenclave.sdk import SignedEnclave, sign
from hyperenclave.sdk.build import build_enclave
from hyperenclave.sdk.image import EnclaveConfig, layout_from_elf
from hyperenclave.sdk.samples import SAMPLES_DIR, sample_bundles, sample_key
from hyperenclave.session import CommandResult, Session
from hyperenclave.vmm.keys import CPU_SVN
from tests.support.sealing import HEADER, SealedBlob, open_blob

pytestmark = pytest.mark.integration

ENABLE = "/bin/sysctl -w dev.hyper_enclave.enabled=1"
TEXT = "attack at dawn"
SIGNED_TEXT = "for every enclave of this signer"
#: the sealer's code in another enclave (another heap size: another MRENCLAVE) of the same
#: signer, one security version newer
NEWER = "/enclaves/sealer2.bin"
LONGEST = " ".join(["sealed"] * 7)              # SEALER_MAX_TEXT (48) bytes, words joined
# (what is changed, byte offset in the blob, XOR mask)
TAMPERING = [("KEYPOLICY (MRENCLAVE -> MRENCLAVE|MRSIGNER)", 4, 0x02),
             ("ISVSVN (1 -> 0, an older version)", 6, 0x01),
             ("CPUSVN (2 -> 0, an older CPU)", 8, 0x02),
             ("KEYID", 30, 0x80),
             ("ciphertext", HEADER.size, 0x01),
             ("tag", -1, 0x01)]


def seal(s: Session, text: str, *options: str) -> bytes:
    out = s.sh(" ".join(["/bin/sealer_app", *options, "seal", text])).output
    return bytes.fromhex(out.split("sealer_app: sealed ")[1].split()[0])


def unseal(s: Session, blob: bytes, *options: str) -> CommandResult:
    return s.sh(" ".join(["/bin/sealer_app", *options, "unseal", blob.hex()]), check=False)


def opened(result: CommandResult, text: str) -> bool:
    return result.status == 0 and f'sealer_app: unsealed "{text}"' in result.output


def refused(result: CommandResult, status: str) -> bool:
    return result.status == 1 and f"sealer_app: unseal failed: {status}" in result.output


def tampered(blob: bytes, offset: int, mask: int) -> bytes:
    raw = bytearray(blob)
    raw[offset] ^= mask
    return bytes(raw)


@dataclass
class Runs:
    """What the machine did in its three boots (collected once, asserted by the tests)."""

    newer: SignedEnclave
    blob: bytes = b""                                   # TEXT, MRENCLAVE policy
    signed_blob: bytes = b""                            # SIGNED_TEXT, MRSIGNER policy
    again: bytes = b""                                  # TEXT sealed a second time
    newer_blob: bytes = b""                             # SIGNED_TEXT, MRSIGNER, by NEWER
    opened_by_monitor_keys: list[bytes] = field(default_factory=list)
    first: dict[str, CommandResult] = field(default_factory=dict)
    rebooted: dict[str, CommandResult] = field(default_factory=dict)
    changed: dict[str, CommandResult] = field(default_factory=dict)
    monitor_logs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    elf = build_enclave([SAMPLES_DIR / "sealer" / "enclave.c"])
    config = EnclaveConfig.load(SAMPLES_DIR / "sealer" / "enclave.json")
    newer = sign(layout_from_elf(elf.read_bytes(), EnclaveConfig(
        heap_size=config.heap_size + 4096, stack_size=config.stack_size,
        isv_prod_id=config.isv_prod_id, isv_svn=config.isv_svn + 1)), sample_key())
    sealer = SignedEnclave.from_bytes(sample_bundles()["/enclaves/sealer.bin"])
    r = Runs(newer)
    options = {"name": "sealing", "state_dir": tmp_path_factory.mktemp("sealing") / "state",
               "rc": [ENABLE], "files": {NEWER: newer.to_bytes()}}
    with Session.start(**options) as s:
        r.blob, r.signed_blob = seal(s, TEXT), seal(s, SIGNED_TEXT, "--mrsigner")
        r.again = seal(s, TEXT)
        keys = s.monitor.key_leaves.keys
        r.opened_by_monitor_keys = [open_blob(keys, sealer, b) for b in (r.blob, r.signed_blob)]
        r.first["mrenclave"] = unseal(s, r.blob)
        r.first["mrsigner"] = unseal(s, r.signed_blob)
        for what, offset, mask in TAMPERING:
            r.first[what] = unseal(s, tampered(r.blob, offset, mask))
        r.first["magic"] = unseal(s, tampered(r.blob, 0, 0x01))
        r.first["truncated"] = unseal(s, r.blob[:-1])
        r.first["not hex"] = s.sh("/bin/sealer_app unseal 48534c31zz", check=False)
        r.first["too long"] = s.sh(f"/bin/sealer_app seal {'x' * 49}", check=False)
        r.first["longest"] = unseal(s, seal(s, LONGEST))
        r.first["newer, mrenclave"] = unseal(s, r.blob, "--enclave", NEWER)
        r.first["newer, mrsigner"] = unseal(s, r.signed_blob, "--enclave", NEWER)
        r.newer_blob = seal(s, SIGNED_TEXT, "--mrsigner", "--enclave", NEWER)
        r.first["older, newer's blob"] = unseal(s, r.newer_blob)
        r.monitor_logs.append("\n".join(s.monitor.log_lines))
        s.reboot()
        r.rebooted["mrenclave"] = unseal(s, r.blob)
        r.rebooted["mrsigner"] = unseal(s, r.signed_blob)
        r.monitor_logs.append("\n".join(s.monitor.log_lines))
    with Session.start(**options, cmdline=f"{DEFAULT_CMDLINE} sealing.changed=1") as s:
        r.changed["mrenclave"] = unseal(s, r.blob)
        r.changed["mrsigner"] = unseal(s, r.signed_blob)
        r.changed["sealed in this boot"] = unseal(s, seal(s, TEXT))
        r.monitor_logs.append("\n".join(s.monitor.log_lines))
    return r


def test_sealed_text_opens_again_in_the_same_boot(runs: Runs) -> None:
    assert opened(runs.first["mrenclave"], TEXT), runs.first["mrenclave"].output
    assert opened(runs.first["mrsigner"], SIGNED_TEXT), runs.first["mrsigner"].output


def test_the_blob_is_the_documented_format_under_the_enclaves_seal_key(runs: Runs) -> None:
    blob, signed = SealedBlob.parse(runs.blob), SealedBlob.parse(runs.signed_blob)
    assert (blob.policy, signed.policy) == (1, 2), "MRENCLAVE by default, MRSIGNER on request"
    assert blob.isv_svn == 1 and blob.cpu_svn == CPU_SVN, "the enclave's own SVNs (its REPORT)"
    assert TEXT.encode() not in runs.blob and len(blob.ciphertext) == len(TEXT)
    assert runs.opened_by_monitor_keys == [TEXT.encode(), SIGNED_TEXT.encode()], \
        "the monitor's EGETKEY key for this enclave opens it: encrypted, not just MACed"


def test_each_seal_uses_a_fresh_random_key_id(runs: Runs) -> None:
    first, second = SealedBlob.parse(runs.blob), SealedBlob.parse(runs.again)
    assert first.key_id != second.key_id and first.ciphertext != second.ciphertext
    assert len(set(first.key_id)) > 4, "RDRAND bytes, not a constant"


@pytest.mark.parametrize("what", [t[0] for t in TAMPERING])
def test_a_blob_with_one_changed_bit_is_refused(runs: Runs, what: str) -> None:
    assert refused(runs.first[what], "SGX_ERROR_MAC_MISMATCH (0x3001)"), runs.first[what].output


def test_what_is_not_a_blob_is_refused_as_a_bad_parameter(runs: Runs) -> None:
    for what in ("magic", "truncated"):
        assert refused(runs.first[what], "SGX_ERROR_INVALID_PARAMETER"), runs.first[what].output


def test_the_longest_text_round_trips_through_the_shell(runs: Runs) -> None:
    assert len(LONGEST) == 48 and opened(runs.first["longest"], LONGEST), \
        runs.first["longest"].output


def test_the_app_refuses_bad_arguments_with_a_clear_message(runs: Runs) -> None:
    assert runs.first["not hex"].status == 2
    assert "sealer_app: not a sealed blob: expected up to 108 bytes in hex" in \
        runs.first["not hex"].output
    assert runs.first["too long"].status == 2
    assert "sealer_app: the text is too long (at most 48 bytes)" in runs.first["too long"].output


def test_mrenclave_policy_keeps_other_enclaves_of_the_signer_out(runs: Runs) -> None:
    assert SignedEnclave.from_bytes(sample_bundles()["/enclaves/sealer.bin"]).mrenclave != \
        runs.newer.mrenclave
    assert refused(runs.first["newer, mrenclave"], "SGX_ERROR_MAC_MISMATCH"), \
        runs.first["newer, mrenclave"].output


def test_mrsigner_policy_lets_a_newer_version_open_an_older_ones_blob_not_back(
        runs: Runs) -> None:
    assert opened(runs.first["newer, mrsigner"], SIGNED_TEXT), runs.first["newer, mrsigner"].output
    assert SealedBlob.parse(runs.newer_blob).isv_svn == 2
    assert refused(runs.first["older, newer's blob"], "SGX_ERROR_INVALID_ISVSVN"), \
        runs.first["older, newer's blob"].output


def test_blobs_open_after_a_reboot_of_the_same_machine(runs: Runs) -> None:
    assert "root secret unsealed" in runs.monitor_logs[1]
    assert opened(runs.rebooted["mrenclave"], TEXT), runs.rebooted["mrenclave"].output
    assert opened(runs.rebooted["mrsigner"], SIGNED_TEXT), runs.rebooted["mrsigner"].output


def test_blobs_do_not_open_after_a_boot_with_another_command_line(runs: Runs) -> None:
    assert "root secret unseal failed" in runs.monitor_logs[2]
    for what in ("mrenclave", "mrsigner"):
        assert refused(runs.changed[what], "SGX_ERROR_MAC_MISMATCH"), runs.changed[what].output
    assert TEXT not in runs.changed["mrenclave"].output
    assert opened(runs.changed["sealed in this boot"], TEXT), \
        "sealing itself still works, under this launch's own secret"

