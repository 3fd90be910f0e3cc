"""The monitor's anchor in the TPM (docs/tpm-attestation.md).

At each launch the monitor
1. unseals its root secret (sealed at the first launch on this machine to locality 2 and
   PCRs 0-9 and 12, so a changed firmware, kernel, command line, initramfs or monitor image
   cannot get it back);
2. creates its attestation key (ECDSA P-256, new every launch) and extends the SHA-256 of its
   SubjectPublicKeyInfo into PCR 13, with an EV_EVENT_TAG in the TCG log;
3. makes sure the TPM attestation key (AK) is enrolled with the local attestation CA.
Every EINIT then extends the enclave's identity into PCR 14, and the host's TPM commands are
mediated (hyperenclave/tpm/mediation.py). All of the monitor's own TPM traffic goes through
TpmClient at locality 2.

Files in the machine's state directory: `monitor/root-secret.{pub,priv}` (the sealed blob),
`monitor/ak.crt.pem`, `attestation-ca/ca.{key,crt}.pem`; the AK itself is persistent in the
TPM at MONITOR_AK_HANDLE.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hyperenclave.platform.devices.tpm_crb import error_response
from hyperenclave.platform.firmware.bootparam import BOOT_PARAMS_ADDR, BootParams
from hyperenclave.platform.memory import PhysicalMemory
from hyperenclave.tpm import eventlog as tcg
from hyperenclave.tpm.ak import certifies, enroll_ak, read_ak_public
from hyperenclave.tpm.attestation_ca import CA_CERT_FILE, AttestationCa, EnrollmentError, spki
from hyperenclave.tpm.client import TpmClient, TpmError
from hyperenclave.tpm.mediation import refusal
from hyperenclave.tpm.objects import MONITOR_LOCALITY
from hyperenclave.tpm.quote import QUOTE_PCRS, Quote, quote
from hyperenclave.tpm.seal import SealedBlob, SealError, seal, unseal
from hyperenclave.tpm.swtpm import SwtpmError

from .keys import ROOT_SECRET_SIZE
from .sgx import Secs

ROOT_SECRET_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12)
ROOT_SECRET_BLOB = "root-secret"
AK_CERT_FILE = "ak.crt.pem"
MONITOR_KEY_PCR = 13
ENCLAVE_PCR = 14
#: EV_EVENT_TAG ids (ASCII, read as a big-endian u32, like the driver's "HENC" in PCR 12).
TAG_MONITOR_KEY = 0x4845414B     # "HEAK": data = the key's SubjectPublicKeyInfo (DER)
TAG_ENCLAVE = 0x48454E49         # "HENI": data = ENCLAVE_IDENTITY
#: MRENCLAVE, MRSIGNER, ATTRIBUTES.FLAGS, ATTRIBUTES.XFRM, ISVPRODID, ISVSVN (84 bytes, LE).
ENCLAVE_IDENTITY = struct.Struct("<32s32sQQHH")
_EVENTLOG_SIZE_OFFSET = 48        # boot_params.eventlog_size (bootparam.h)


class RootSecretUnavailable(RuntimeError):
    """Sealing keys were asked for, but the root secret could not be unsealed at launch."""


class EventLogFull(RuntimeError):
    """The guest's TCG log area has no room (or no valid boot_params) for a measurement."""


#: What makes the TPM anchor fail as a whole (the monitor refuses to launch, or EINIT);
#: OSError: the state directory cannot be read or written.
ANCHOR_ERRORS = (TpmError, SwtpmError, EventLogFull, EnrollmentError, OSError)


@dataclass(frozen=True)
class EnclaveIdentity:
    """What PCR 14 records of an enclave at EINIT."""

    mr_enclave: bytes
    mr_signer: bytes
    flags: int
    xfrm: int
    isv_prod_id: int
    isv_svn: int

    @classmethod
    def of(cls, secs: Secs) -> EnclaveIdentity:
        return cls(secs.mr_enclave, secs.mr_signer, secs.attributes.flags, secs.attributes.xfrm,
                   secs.isv_prod_id, secs.isv_svn)

    def pack(self) -> bytes:
        return ENCLAVE_IDENTITY.pack(self.mr_enclave, self.mr_signer, self.flags, self.xfrm,
                                     self.isv_prod_id, self.isv_svn)

    @classmethod
    def unpack(cls, data: bytes) -> EnclaveIdentity:
        if len(data) != ENCLAVE_IDENTITY.size:
            raise ValueError(f"enclave identity is {len(data)} bytes, expected {ENCLAVE_IDENTITY.size}")
        return cls(*ENCLAVE_IDENTITY.unpack(data))


@dataclass(frozen=True)
class AnchorKeys:
    """The monitor's secrets for one launch (gone at teardown).

    `root_secret` is None when it could not be unsealed (`root_secret_error` says why): the
    boot chain or monitor differs from the first launch, or the sealed blob is damaged.
    """

    root_secret: bytes | None
    root_secret_error: str | None
    attestation_key: ec.EllipticCurvePrivateKey

    def require_root_secret(self) -> bytes:
        """The root secret, for sealing keys; RootSecretUnavailable with the reason otherwise."""
        if self.root_secret is None:
            raise RootSecretUnavailable(f"sealing keys are unavailable: {self.root_secret_error}")
        return self.root_secret

    @property
    def attestation_public_der(self) -> bytes:
        """SubjectPublicKeyInfo (DER) of the attestation key: what PCR 13 measures."""
        return spki(self.attestation_key.public_key())


def _log_params(memory: PhysicalMemory, need: int) -> BootParams:
    """The live boot_params, if the firmware's log area has room for `need` more bytes."""
    try:
        params = BootParams.unpack(memory.read(BOOT_PARAMS_ADDR, 0x1000))
    except ValueError as err:
        raise EventLogFull(f"no event log: {err}") from None
    if not params.eventlog_addr or params.eventlog_size + need > params.eventlog_max:
        raise EventLogFull(f"the event log has no room for a {need}-byte event "
                           f"({params.eventlog_size} of {params.eventlog_max} bytes used)")
    return params


def append_guest_event(memory: PhysicalMemory, record: bytes) -> None:
    """Append a TCG_PCR_EVENT2 to the firmware's log in guest memory, as the kernel does."""
    params = _log_params(memory, len(record))
    memory.write(params.eventlog_addr + params.eventlog_size, record)
    memory.write(BOOT_PARAMS_ADDR + _EVENTLOG_SIZE_OFFSET,
                 struct.pack("<Q", params.eventlog_size + len(record)))


class MonitorTpm:
    """The monitor's TPM: sealing, measurements, the AK and quotes, host mediation."""

    def __init__(self, tpm: TpmClient, state_dir: Path, manufacturer_ca_cert: Path,
                 machine_name: str) -> None:
        """`state_dir` is the machine's; `manufacturer_ca_cert` signed the EK certificate."""
        self.tpm = tpm
        self.dir = state_dir / "monitor"
        self.ca_dir = state_dir / "attestation-ca"
        self.manufacturer_ca_cert = manufacturer_ca_cert
        self.machine_name = machine_name
        self.ak_cert: x509.Certificate | None = None
        self.ak_public_pem: bytes | None = None

    # ------------------------------------------------------------------ launch
    def launch(self, memory: PhysicalMemory, log: Callable[[str], None]) -> AnchorKeys:
        """Root secret, attestation key into PCR 13, AK enrollment. TPM failures propagate."""
        secret, error = self._root_secret(log)
        key = ec.generate_private_key(ec.SECP256R1())
        keys = AnchorKeys(secret, error, key)
        public_der = keys.attestation_public_der
        digest = hashlib.sha256(public_der).digest()
        self._measure(memory, MONITOR_KEY_PCR, digest,
                      tcg.encode_event_tag(TAG_MONITOR_KEY, public_der))
        log(f"attestation key (ECDSA P-256) measured into PCR{MONITOR_KEY_PCR}: "
            f"sha256(SPKI)={digest.hex()[:16]}...")
        self._ensure_ak(log)
        return keys

    def _root_secret(self, log: Callable[[str], None]) -> tuple[bytes | None, str | None]:
        pcrs = ",".join(map(str, ROOT_SECRET_PCRS))
        try:
            blob = SealedBlob.load(self.dir, ROOT_SECRET_BLOB)
            if blob is None:
                secret = self.tpm.get_random(ROOT_SECRET_SIZE, locality=MONITOR_LOCALITY)
                seal(self.tpm, secret, ROOT_SECRET_PCRS).save(self.dir, ROOT_SECRET_BLOB)
                log(f"root secret created from the TPM RNG and sealed to PCRs {pcrs} "
                    f"({self.dir / ROOT_SECRET_BLOB}.pub/.priv)")
                return secret, None
            secret = unseal(self.tpm, blob, ROOT_SECRET_PCRS)
        except SealError as err:
            reason = str(err)
            log(f"root secret unseal failed: {reason}; the kernel, command line, firmware or "
                "monitor image differ from the first launch on this machine, so enclave "
                "sealing keys are unavailable")
            return None, reason
        if len(secret) != ROOT_SECRET_SIZE:
            reason = f"the sealed root secret is {len(secret)} bytes, expected {ROOT_SECRET_SIZE}"
            log(f"root secret unseal failed: {reason}")
            return None, reason
        log(f"root secret unsealed (PCRs {pcrs} match the first launch)")
        return secret, None

    def _ensure_ak(self, log: Callable[[str], None]) -> None:
        cert_path = self.dir / AK_CERT_FILE
        public = read_ak_public(self.tpm)
        cert = None
        if cert_path.exists():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except ValueError as err:
                log(f"{cert_path} is damaged ({err}); enrolling the AK again")
        if public is None or cert is None or not certifies(cert, public):
            try:
                manufacturer = x509.load_pem_x509_certificate(self.manufacturer_ca_cert.read_bytes())
            except (OSError, ValueError) as err:
                raise EnrollmentError(f"no TPM vendor CA certificate to check the EK against: "
                                      f"{err}") from None
            ca = AttestationCa.open(self.ca_dir, [manufacturer])
            public, cert = enroll_ak(self.tpm, ca, f"HyperEnclave AK ({self.machine_name})")
            self.dir.mkdir(parents=True, exist_ok=True)
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            log(f"TPM attestation key enrolled: EK certificate checked, credential activated, "
                f"AK certificate issued by {cert.issuer.rfc4514_string()}")
        self.ak_cert, self.ak_public_pem = cert, public.to_pem()

    # ------------------------------------------------------------------ measurements
    def _measure(self, memory: PhysicalMemory, pcr: int, digest: bytes, data: bytes) -> None:
        """Extend and log, like the kernel's tpm_measure: room in the log is checked first."""
        record = tcg.encode_event(pcr, tcg.EV_EVENT_TAG, digest, data)
        _log_params(memory, len(record))
        self.tpm.pcr_extend(pcr, digest, locality=MONITOR_LOCALITY)
        append_guest_event(memory, record)

    def measure_enclave(self, memory: PhysicalMemory, identity: EnclaveIdentity) -> bytes:
        """Extend sha256(identity) into PCR 14 with its event; returns the digest."""
        data = identity.pack()
        digest = hashlib.sha256(data).digest()
        self._measure(memory, ENCLAVE_PCR, digest, tcg.encode_event_tag(TAG_ENCLAVE, data))
        return digest

    # ------------------------------------------------------------------ attestation
    def quote(self, nonce: bytes, pcrs: Iterable[int] = QUOTE_PCRS) -> Quote:
        """TPM2_Quote by the enrolled AK over `pcrs` (sha256) with qualifying data `nonce`."""
        if self.ak_cert is None:
            raise RuntimeError("the AK is not enrolled: the monitor has not launched on this boot")
        return quote(self.tpm, nonce, pcrs)

    def write_credentials(self, out: Path) -> None:
        """ak.pub.pem, ak.crt.pem and ca.crt.pem for a verifier."""
        if self.ak_cert is None or self.ak_public_pem is None:
            raise RuntimeError("the AK is not enrolled: the monitor has not launched on this boot")
        (out / "ak.pub.pem").write_bytes(self.ak_public_pem)
        (out / "ak.crt.pem").write_bytes(self.ak_cert.public_bytes(serialization.Encoding.PEM))
        (out / "ca.crt.pem").write_bytes((self.ca_dir / CA_CERT_FILE).read_bytes())

    # ------------------------------------------------------------------ host mediation
    def mediate(self, command: bytes, log: Callable[[str], None]) -> bytes | None:
        """The TPM's error response if the host may not send `command`, else None (forward)."""
        refused = refusal(command)
        if refused is None:
            return None
        rc, reason = refused
        log(f"refused a host TPM command: {reason} (rc=0x{rc:x})")
        return error_response(rc)
