"""A local attestation CA (a "privacy CA", as Keylime's registrar): it certifies an AK only
after proving, with TPM2_MakeCredential against a manufacturer-certified EK, that the AK lives
in the same TPM as that EK.

    ca = AttestationCa.open(state / "attestation-ca", [manufacturer_ca_cert])
    challenge = ca.challenge(ek_public, ek_cert, ak_public)   # -> the TPM's ActivateCredential
    ak_cert = ca.issue(ak_public, recovered_secret)

It never touches the TPM: what it knows comes from the EK certificate and public areas.
"""

from __future__ import annotations

import datetime
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID, ObjectIdentifier
from tpm2_pytss import TPM2_ALG, TPM2_ECC, TPM2B_PUBLIC, TPMA_OBJECT
from tpm2_pytss.utils import make_credential

from .objects import AK_ATTRIBUTES, EK_ATTRIBUTES, EK_POLICY

#: TCG EK Credential Profile: tcg-kp-AIKCertificate, the EKU of an attestation key certificate.
TCG_KP_AIK_CERTIFICATE = ObjectIdentifier("2.23.133.8.3")
CA_KEY_FILE, CA_CERT_FILE = "ca.key.pem", "ca.crt.pem"
_SECRET_SIZE = 32
_VALIDITY = datetime.timedelta(days=3650)


class EnrollmentError(RuntimeError):
    """The CA refused: the message names the check that failed."""


@dataclass(frozen=True)
class CredentialChallenge:
    """What TPM2_ActivateCredential needs: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET."""

    credential_blob: bytes
    encrypted_secret: bytes


def spki(key: PublicKeyTypes) -> bytes:
    """SubjectPublicKeyInfo (DER) of a public key: what TPM2B_PUBLIC.to_der() gives for a TPM key."""
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hyperenclave"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class AttestationCa:
    """CA key and certificate in a directory; pending challenges in memory."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
                 manufacturer_certs: Sequence[x509.Certificate]) -> None:
        self.key = key
        self.cert = cert
        self.manufacturer_certs = list(manufacturer_certs)
        self._pending: dict[bytes, bytes] = {}      # AK name -> expected secret

    @classmethod
    def open(cls, directory: Path, manufacturer_certs: Sequence[x509.Certificate]) -> AttestationCa:
        """Load the CA from `directory`, creating a new key and self-signed cert the first time."""
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if key_path.exists() and cert_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), None)
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except ValueError as err:
                raise EnrollmentError(f"the CA in {directory} is damaged: {err}") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise EnrollmentError(f"{key_path} is not an EC private key")
            if spki(cert.public_key()) != spki(key.public_key()):
                raise EnrollmentError(f"{cert_path} does not certify the key in {key_path}")
            return cls(key, cert, manufacturer_certs)
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = _name("HyperEnclave local attestation CA")
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + _VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                             False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        tmp = key_path.with_suffix(".tmp")
        tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        tmp.chmod(0o600)
        os.replace(tmp, key_path)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, manufacturer_certs)

    # ------------------------------------------------------------------ the two steps
    def challenge(self, ek_public: TPM2B_PUBLIC, ek_cert: x509.Certificate,
                  ak_public: TPM2B_PUBLIC) -> CredentialChallenge:
        """Check the EK and AK, then encrypt a fresh secret to the EK bound to the AK's name."""
        self._check_ek(ek_public, ek_cert)
        self._check_ak(ak_public)
        secret = os.urandom(_SECRET_SIZE)
        name = ak_public.get_name()
        blob, encrypted = make_credential(ek_public, secret, name)
        self._pending[bytes(name.marshal())] = secret
        return CredentialChallenge(blob.marshal(), encrypted.marshal())

    def issue(self, ak_public: TPM2B_PUBLIC, answer: bytes, subject: str) -> x509.Certificate:
        """The AK certificate, if `answer` is the secret the TPM released for this AK."""
        expected = self._pending.pop(bytes(ak_public.get_name().marshal()), None)
        if expected is None:
            raise EnrollmentError("no pending credential challenge for this AK")
        if not hmac.compare_digest(expected, answer):
            raise EnrollmentError("ActivateCredential returned the wrong secret: the AK is not "
                                  "in the TPM that holds the certified EK")
        public_key = serialization.load_pem_public_key(ak_public.to_pem())
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (x509.CertificateBuilder().subject_name(_name(subject))
                .issuer_name(self.cert.subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + _VALIDITY)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                             False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                               critical=False)
                .sign(self.key, hashes.SHA256()))

    # ------------------------------------------------------------------ checks
    def _check_ek(self, ek_public: TPM2B_PUBLIC, ek_cert: x509.Certificate) -> None:
        for issuer in self.manufacturer_certs:
            try:
                ek_cert.verify_directly_issued_by(issuer)
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
        else:
            raise EnrollmentError(f"EK certificate (issuer {ek_cert.issuer.rfc4514_string()}) "
                                  "is not signed by a known TPM manufacturer CA")
        now = datetime.datetime.now(datetime.timezone.utc)
        if not ek_cert.not_valid_before_utc <= now <= ek_cert.not_valid_after_utc:
            raise EnrollmentError("EK certificate is outside its validity period")
        area = ek_public.publicArea
        if spki(ek_cert.public_key()) != ek_public.to_der():
            raise EnrollmentError("the EK public key is not the one its certificate names")
        if area.objectAttributes != EK_ATTRIBUTES or bytes(area.authPolicy) != EK_POLICY:
            raise EnrollmentError(f"the EK is not a standard EK (attributes "
                                  f"{area.objectAttributes}, policy {bytes(area.authPolicy).hex()})")

    @staticmethod
    def _check_ak(ak_public: TPM2B_PUBLIC) -> None:
        area = ak_public.publicArea
        attrs = area.objectAttributes
        if attrs & AK_ATTRIBUTES != AK_ATTRIBUTES or attrs & TPMA_OBJECT.DECRYPT:
            raise EnrollmentError(f"the AK is not a restricted, TPM-generated, fixed signing key "
                                  f"(attributes {attrs})")
        if area.type != TPM2_ALG.ECC or area.parameters.eccDetail.curveID != TPM2_ECC.NIST_P256:
            raise EnrollmentError("the AK is not an ECC NIST P-256 key")
        if area.nameAlg != TPM2_ALG.SHA256:
            raise EnrollmentError("the AK's name algorithm is not sha256")
