"""Attestation evidence made with a real TPM (swtpm + tpm2-pytss) for verifier tests.

A measured boot is simulated the way the machine does it: each event is appended to a TCG log
and its digest extended into swtpm; an AK under the owner hierarchy makes a real TPM2_Quote;
a local CA certifies the AK; a monitor key signs an enclave quote and is measured into PCR 13,
the enclave launches into PCR 14. The files are those of issue 5's evidence directory.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tpm2_pytss import (ESYS_TR, TPM2_ALG, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE,
                        TPMA_OBJECT, TPMT_SIG_SCHEME)

from hyperenclave.tpm.client import TpmClient
from hyperenclave.tpm.eventlog import (EV_EVENT_TAG, EV_IPL, EV_POST_CODE, EV_S_CRTM_VERSION,
                                       EV_SEPARATOR, EventLog, encode_event_tag, encode_utf16)
from hyperenclave.tpm.objects import AK_ATTRIBUTES, storage_primary
from hyperenclave.tpm.quote import TPM_GENERATED_VALUE, serialize_pcrs
from hyperenclave.tpm.swtpm import Swtpm
from hyperenclave.vmm.quote import (EnclaveQuote, monitor_key_bytes, qualifying_data_for,
                                    report_data_for)
from hyperenclave.vmm.sgx import AttributeFlags, Attributes, ReportBody
from hyperenclave.vmm.tpm_anchor import (ENCLAVE_PCR, MONITOR_KEY_PCR, TAG_ENCLAVE,
                                         TAG_MONITOR_KEY, EnclaveIdentity)

QUOTED_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14]
ENCLAVE = EnclaveIdentity(b"\x11" * 32, b"\x22" * 32,
                          AttributeFlags.INIT | AttributeFlags.MODE64BIT, 3, 1, 2)
#: The monitor's AK (tpm/objects.py) but authorised by its (empty) password instead of a
#: locality-2 policy: a throwaway AK for verifier tests, restricted like the real one.
AK_TEMPLATE = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null",
                                 AK_ATTRIBUTES | TPMA_OBJECT.USERWITHAUTH)


@dataclass
class Boot:
    """What one boot measures and which enclave it quotes; tests change one field."""

    nonce: bytes = b"challenge-0001"
    kernel: bytes = b"kernel image"
    initramfs: bytes = b"initramfs"
    cmdline: str = "console=ttyS0 memmap=256M$0x30000000"
    monitor_image: bytes = b"monitor image"
    launched: list[EnclaveIdentity] = field(default_factory=lambda: [ENCLAVE])
    quoted: EnclaveIdentity = ENCLAVE
    report_data: bytes | None = None              # default: the nonce's REPORTDATA
    quote_nonce: bytes | None = None              # default: the nonce (TPM side)
    monitor_key: ec.EllipticCurvePrivateKey | None = None   # default: a fresh one
    quote_signer: ec.EllipticCurvePrivateKey | None = None  # default: the monitor key (measured)
    forge_magic: bool = False                     # CVE-2024-29038: sign a fake attest
    ak_issuer: str = "trusted"                    # "trusted" CA, or "rogue" (another CA)


@dataclass(frozen=True)
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def issue(self, public_key, name: str) -> x509.Certificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))

    @property
    def fingerprint(self) -> bytes:
        return self.cert.fingerprint(hashes.SHA256())


def measure(log: EventLog, tpm: TpmClient, pcr: int, event_type: int, data: bytes,
            digest: bytes | None = None) -> None:
    event = log.append(pcr, event_type, data, digest)
    tpm.pcr_extend(pcr, event.digest)


def measure_boot(log: EventLog, tpm: TpmClient, boot: Boot, monitor_key: bytes) -> None:
    """Firmware, loader, kernel, command line, monitor image, monitor key, enclave launches."""
    measure(log, tpm, 0, EV_S_CRTM_VERSION, encode_utf16("HyperEnclave emulator firmware"))
    measure(log, tpm, 0, EV_POST_CODE, b"firmware code")
    measure(log, tpm, 1, EV_EVENT_TAG, encode_event_tag(1, b"ram=1G cpus=1"))
    for pcr in range(8):
        measure(log, tpm, pcr, EV_SEPARATOR, bytes(4))
    measure(log, tpm, 8, EV_IPL, f"kernel_cmdline: {boot.cmdline}\0".encode(),
            hashlib.sha256(boot.cmdline.encode()).digest())
    measure(log, tpm, 9, EV_IPL, b"/boot/kernel\0", hashlib.sha256(boot.kernel).digest())
    measure(log, tpm, 9, EV_IPL, b"/boot/initramfs\0", hashlib.sha256(boot.initramfs).digest())
    measure(log, tpm, 12, EV_EVENT_TAG, encode_event_tag(0x48454E43, b"hyperenclave-monitor.bin"),
            hashlib.sha256(boot.monitor_image).digest())
    measure(log, tpm, MONITOR_KEY_PCR, EV_EVENT_TAG, encode_event_tag(TAG_MONITOR_KEY, monitor_key),
            hashlib.sha256(monitor_key).digest())
    for identity in boot.launched:
        data = identity.pack()
        measure(log, tpm, ENCLAVE_PCR, EV_EVENT_TAG, encode_event_tag(TAG_ENCLAVE, data),
                hashlib.sha256(data).digest())


def reference_digests(boot: Boot) -> dict[str, list[str]]:
    """The reference manifest of a boot (what the image build would publish)."""
    return {"8": [hashlib.sha256(boot.cmdline.encode()).hexdigest()],
            "9": [hashlib.sha256(boot.kernel).hexdigest(),
                  hashlib.sha256(boot.initramfs).hexdigest()],
            "12": [hashlib.sha256(boot.monitor_image).hexdigest()]}


def _quote(tpm: TpmClient, qualifying: bytes, forge_magic: bool):
    """A TPM2_Quote by a fresh AK: (AK public PEM, attest bytes, signature bytes)."""
    def run(e):
        primary = storage_primary(e)
        try:
            private, public, _, _, _ = e.create(primary, TPM2B_SENSITIVE_CREATE(), AK_TEMPLATE)
            ak = e.load(primary, private, public)
        finally:
            e.flush_context(primary)
        try:
            selection = "sha256:" + ",".join(map(str, QUOTED_PCRS))
            attest, signature = e.quote(ak, selection, qualifying)
            msg = bytes(attest)
            if forge_magic:         # CVE-2024-29038: TPM2_Hash gives a ticket for non-TPM data
                msg = (0).to_bytes(4, "big") + msg[4:]
                assert int.from_bytes(msg[:4], "big") != TPM_GENERATED_VALUE
                digest, ticket = e.hash(msg, TPM2_ALG.SHA256, ESYS_TR.OWNER)
                scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
                scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
                signature = e.sign(ak, digest, scheme, ticket)
            return public.to_pem(), msg, signature.marshal()
        finally:
            e.flush_context(ak)
    return tpm.run("quote", run)


def make_evidence(out: Path, boot: Boot, ca: Ca, state_dir: Path) -> Path:
    """Boot, quote and write every evidence file into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    monitor = boot.monitor_key or ec.generate_private_key(ec.SECP256R1())
    key_bytes = monitor_key_bytes(monitor.public_key())
    report_data = boot.report_data or report_data_for(boot.nonce)
    log = EventLog()
    with Swtpm(state_dir) as swtpm, TpmClient.connect(swtpm) as tpm:
        measure_boot(log, tpm, boot, key_bytes)
        qualifying = qualifying_data_for(report_data_for(boot.quote_nonce or boot.nonce))
        ak_pem, msg, sig = _quote(tpm, qualifying, boot.forge_magic)
        pcrs = tpm.pcr_read(QUOTED_PCRS)
    issuer = ca if boot.ak_issuer == "trusted" else Ca.create("rogue CA")
    ak_public = serialization.load_pem_public_key(ak_pem)
    body = ReportBody(attributes=Attributes(boot.quoted.flags, boot.quoted.xfrm),
                      mr_enclave=boot.quoted.mr_enclave,
                      mr_signer=boot.quoted.mr_signer, isv_prod_id=boot.quoted.isv_prod_id,
                      isv_svn=boot.quoted.isv_svn, report_data=report_data)
    quote = EnclaveQuote.sign(body, boot.quote_signer or monitor)
    files = {
        "ak.pub.pem": ak_pem,
        "ak.crt.pem": issuer.issue(ak_public, "HyperEnclave AK").public_bytes(
            serialization.Encoding.PEM),
        "ca.crt.pem": ca.cert.public_bytes(serialization.Encoding.PEM),
        "quote.msg": msg, "quote.sig": sig,
        "pcrs.ser": serialize_pcrs(pcrs),
        "nonce.bin": qualifying,
        "pcrs.json": json.dumps({"sha256": {str(k): v.hex() for k, v in pcrs.items()}}).encode(),
        "eventlog.bin": log.to_bytes(),
        "enclave-quote.bin": quote.to_bytes(),
        "enclave-quote.json": json.dumps(quote.to_json(), indent=2).encode(),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out


def policy_for(boot: Boot, ca: Ca, **changes) -> dict:
    """The policy a relying party would write for `boot`'s enclave and images."""
    doc = {"trusted_ca_sha256": ca.fingerprint.hex(), "nonce": boot.nonce.hex(),
           "pcr_selection": {"sha256": QUOTED_PCRS},
           "reference_digests": reference_digests(boot),
           "allowed_enclaves": [{"mr_signer": ENCLAVE.mr_signer.hex()}],
           "enclave": {"mr_enclave": [ENCLAVE.mr_enclave.hex()], "isv_prod_id": 1,
                       "min_isv_svn": 2, "allow_debug": False}}
    doc.update(changes)
    return doc
