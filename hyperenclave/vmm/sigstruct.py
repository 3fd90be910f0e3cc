"""Signing and checking SIGSTRUCTs the way SGX defines them (SDM Vol. 3D, SIGSTRUCT and EINIT).

The signature is RSASSA-PKCS1-v1_5 with SHA-256 over HEADER..RESERVED (bytes 0..128) followed
by MISCSELECT..ISVSVN (bytes 900..1028), with a 3072-bit modulus and exponent 3. The hardware
checks it without dividing, using the two helper numbers the signer supplies:

    Q1 = floor(S^2 / N)            Q2 = floor((S^3 - Q1*S*N) / N)

so S^2 - Q1*N = S^2 mod N and S*(S^2 mod N) - Q2*N = S^3 mod N, which must equal the encoded
message; wrong Q1/Q2 make that fail like a wrong signature. MRSIGNER is SHA-256 of the 384-byte
little-endian MODULUS. HyperEnclave's monitor does not check the signature at all (only the
MRENCLAVE); this module is what an SGX-faithful EINIT uses.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .sgx import (
    RSA3072_BYTES,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    SIGSTRUCT_VENDOR_INTEL,
    SgxError,
    SgxErrorCode,
    SgxStructureError,
    SigStruct,
)

SIGNED_RANGES = ((0, 128), (900, 1028))
RSA_KEY_BITS = 8 * RSA3072_BYTES
# DER DigestInfo prefix for SHA-256 (PKCS#1 v2.1 / RFC 3447, section 9.2 note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


class SigStructError(SgxError):
    """EINIT's verdict on a SIGSTRUCT: SGX_INVALID_SIG_STRUCT or SGX_INVALID_SIGNATURE."""


def signed_data(sig: SigStruct) -> bytes:
    """The 256 bytes the signature covers."""
    raw = sig.pack()
    return b"".join(raw[start:end] for start, end in SIGNED_RANGES)


def mrsigner(sig: SigStruct) -> bytes:
    """SHA-256 of the little-endian 384-byte MODULUS, as EINIT stores it in SECS.MRSIGNER."""
    return hashlib.sha256(sig.modulus.to_bytes(RSA3072_BYTES, "little")).digest()


def sigstruct_date(day: datetime.date) -> int:
    """DATE as SGX writes it: yyyymmdd in hex digits (2025-01-31 -> 0x20250131)."""
    return int(day.strftime("%Y%m%d"), 16)


def _check_key(key: rsa.RSAPrivateKey) -> None:
    if key.key_size != RSA_KEY_BITS or key.public_key().public_numbers().e != SIGSTRUCT_EXPONENT:
        raise ValueError(f"SGX signing keys are RSA-{RSA_KEY_BITS} with e={SIGSTRUCT_EXPONENT}, "
                         f"not RSA-{key.key_size} e={key.public_key().public_numbers().e}")


def sign_sigstruct(template: SigStruct, key: rsa.RSAPrivateKey) -> SigStruct:
    """Sign the body and header fields of `template`: returns a copy with MODULUS, EXPONENT,
    SIGNATURE, Q1 and Q2 filled in (whatever the template had there is ignored)."""
    _check_key(key)
    n = key.public_key().public_numbers().n
    unsigned = replace(template, modulus=n, exponent=SIGSTRUCT_EXPONENT, signature=0, q1=0, q2=0)
    s = int.from_bytes(key.sign(signed_data(unsigned), padding.PKCS1v15(), hashes.SHA256()),
                       "big")
    q1 = s * s // n
    q2 = (s * s * s - q1 * s * n) // n
    return replace(unsigned, signature=s, q1=q1, q2=q2)


def _encoded_message(sig: SigStruct) -> int:
    """EMSA-PKCS1-v1_5 (RFC 3447 9.2) of the signed data, as a 3072-bit integer."""
    t = _SHA256_DIGEST_INFO + hashlib.sha256(signed_data(sig)).digest()
    em = b"\x00\x01" + b"\xff" * (RSA3072_BYTES - 3 - len(t)) + b"\x00" + t
    return int.from_bytes(em, "big")


def verify_sigstruct(sig: SigStruct | bytes) -> None:
    """EINIT's SIGSTRUCT checks, in its order: the fixed fields and reserved bytes
    (SGX_INVALID_SIG_STRUCT), then the signature with Q1/Q2 (SGX_INVALID_SIGNATURE)."""
    if not isinstance(sig, SigStruct):
        try:
            sig = SigStruct.unpack(sig)
        except SgxStructureError as err:
            raise SigStructError(SgxErrorCode.SGX_INVALID_SIG_STRUCT, str(err)) from None
    problems = [what for what, bad in (
        ("HEADER", sig.header != SIGSTRUCT_HEADER),
        ("VENDOR", sig.vendor not in (0, SIGSTRUCT_VENDOR_INTEL)),
        ("HEADER2", sig.header2 != SIGSTRUCT_HEADER2),
        ("EXPONENT", sig.exponent != SIGSTRUCT_EXPONENT),
    ) if bad]
    if problems:
        raise SigStructError(SgxErrorCode.SGX_INVALID_SIG_STRUCT,
                             f"invalid {', '.join(problems)}")
    n, s = sig.modulus, sig.signature
    if n.bit_length() != RSA_KEY_BITS or not 0 < s < n:
        raise SigStructError(SgxErrorCode.SGX_INVALID_SIGNATURE,
                             "SIGNATURE/MODULUS are not a 3072-bit RSA pair")
    s2_mod_n = s * s - sig.q1 * n
    s3_mod_n = s * s2_mod_n - sig.q2 * n
    if not (0 <= s2_mod_n < n and 0 <= s3_mod_n < n):
        raise SigStructError(SgxErrorCode.SGX_INVALID_SIGNATURE, "Q1/Q2 do not match SIGNATURE")
    if s3_mod_n != _encoded_message(sig):
        raise SigStructError(SgxErrorCode.SGX_INVALID_SIGNATURE,
                             "signature does not verify with the enclosed MODULUS")


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A fresh enclave-signing key: RSA-3072, public exponent 3."""
    return rsa.generate_private_key(public_exponent=SIGSTRUCT_EXPONENT, key_size=RSA_KEY_BITS)


def save_signing_key(key: rsa.RSAPrivateKey, path: str | Path) -> None:
    """Write the key as unencrypted PKCS#8 PEM."""
    _check_key(key)
    Path(path).write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))


def load_signing_key(path: str | Path) -> rsa.RSAPrivateKey:
    """Read a PEM private key and check it is an SGX signing key."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA private key")
    _check_key(key)
    return key
