"""The enclave quote and the monitor's TPM measurements: one definition for the monitor (quote
hypercall 0x8000_000d, PCR 13/14 extends) and the verifier (hyperenclave/verifier).

HyperEnclave turns a REPORT into a quote signed by the monitor's attestation key, whose public
key the monitor measured into PCR 13 at launch; a TPM2_Quote over the boot chain and PCRs 12-14
vouches for the monitor and that key, and PCR 14 records every enclave launched since boot.

enclave-quote.bin (little-endian, packed):

    magic "HEQUOTE1" | version u16 (1) | sign_type u16 (1 = ECDSA P-256 with SHA-256) |
    REPORT.BODY (384) | monitor key length u16 | monitor key (SubjectPublicKeyInfo, DER) |
    signature length u16 | signature (DER ECDSA-Sig-Value over the 384-byte body)

Challenge-response binding: the verifier's nonce (at most 64 bytes) is the enclave's REPORTDATA,
zero-padded (`report_data_for`); the TPM2_Quote's qualifying data is SHA-256(REPORTDATA)
(`qualifying_data_for`, HyperEnclave's H(report_data)), so one nonce makes both fresh.

The monitor key is the one measured into PCR 13 and enclave launches go into PCR 14, with the
event formats of `tpm_anchor` (EV_EVENT_TAG "HEAK" with the key's SubjectPublicKeyInfo; "HENI"
with the 84-byte enclave identity; digest = SHA-256 of the data).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (Encoding, PublicFormat,
                                                          load_der_public_key)

from .sgx import AttributeFlags, Attributes, ReportBody, SgxStructureError, TargetInfo

QUOTE_MAGIC = b"HEQUOTE1"
QUOTE_VERSION = 1
SIGN_TYPE_ECDSA_P256_SHA256 = 1
_HEAD = struct.Struct("<8sHH")
_LEN = struct.Struct("<H")
REPORT_DATA_SIZE = 64
#: HyperEnclave has no quoting enclave: the REPORT given to the quote hypercall must be MACed for
#: this fixed pseudo-QE target (MRENCLAVE 0xEE x 32, ATTRIBUTES INIT, XFRM x87|SSE).
QUOTING_TARGET = TargetInfo(mr_enclave=b"\xee" * 32, attributes=Attributes(1, 3))
BUNDLE_MAGIC = b"HEQBND01"
#: The evidence files a quote bundle carries (the event log comes from the host's copy).
BUNDLE_FILES = ("enclave-quote.bin", "quote.msg", "quote.sig", "pcrs.ser", "nonce.bin",
                "ak.pub.pem", "ak.crt.pem", "ca.crt.pem")


class QuoteFormatError(ValueError):
    """Bytes or JSON that are not a well-formed enclave quote or measurement event."""


def report_data_for(nonce: bytes) -> bytes:
    """REPORTDATA carrying the verifier's nonce."""
    if not 0 < len(nonce) <= REPORT_DATA_SIZE:
        raise ValueError(f"a nonce is 1 to {REPORT_DATA_SIZE} bytes, not {len(nonce)}")
    return nonce.ljust(REPORT_DATA_SIZE, b"\0")


def qualifying_data_for(report_data: bytes) -> bytes:
    """The TPM2_Quote qualifying data that binds the TPM quote to one REPORTDATA."""
    return hashlib.sha256(report_data).digest()


def identity_json(mr_enclave: bytes, mr_signer: bytes, flags: int, xfrm: int, isv_prod_id: int,
                  isv_svn: int) -> dict[str, Any]:
    """An enclave's identity, readable (report bodies, PCR 14 launch events)."""
    return {"mr_enclave": mr_enclave.hex(), "mr_signer": mr_signer.hex(),
            "attributes": {"flags": f"{flags:#x}", "xfrm": f"{xfrm:#x}"},
            "debug": bool(flags & AttributeFlags.DEBUG), "isv_prod_id": isv_prod_id,
            "isv_svn": isv_svn}


def monitor_key_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """The monitor attestation key as measured into PCR 13 and quoted: SubjectPublicKeyInfo."""
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def load_monitor_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = load_der_public_key(raw)
    except ValueError as err:
        raise QuoteFormatError(f"monitor key is not a SubjectPublicKeyInfo: {err}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise QuoteFormatError("monitor key is not an ECDSA P-256 key")
    return key


@dataclass(frozen=True)
class EnclaveQuote:
    """A REPORT.BODY signed by the monitor's attestation key."""

    body: ReportBody
    monitor_key: bytes                    # SubjectPublicKeyInfo (DER) of a P-256 key
    signature: bytes                      # DER ECDSA-Sig-Value over body.pack()
    version: int = QUOTE_VERSION
    sign_type: int = SIGN_TYPE_ECDSA_P256_SHA256

    @classmethod
    def sign(cls, body: ReportBody, key: ec.EllipticCurvePrivateKey) -> EnclaveQuote:
        signature = key.sign(body.pack(), ec.ECDSA(hashes.SHA256()))
        return cls(body, monitor_key_bytes(key.public_key()), signature)

    def verify(self) -> None:
        """Raises cryptography's InvalidSignature unless the monitor key signed the body."""
        load_monitor_key(self.monitor_key).verify(self.signature, self.body.pack(),
                                                  ec.ECDSA(hashes.SHA256()))

    def to_bytes(self) -> bytes:
        return (_HEAD.pack(QUOTE_MAGIC, self.version, self.sign_type) + self.body.pack()
                + _LEN.pack(len(self.monitor_key)) + self.monitor_key
                + _LEN.pack(len(self.signature)) + self.signature)

    @classmethod
    def from_bytes(cls, raw: bytes) -> EnclaveQuote:
        if len(raw) < _HEAD.size + ReportBody.SIZE + 2 * _LEN.size:
            raise QuoteFormatError(f"an enclave quote of {len(raw)} bytes is too short")
        magic, version, sign_type = _HEAD.unpack_from(raw)
        if magic != QUOTE_MAGIC:
            raise QuoteFormatError(f"magic {magic!r}, expected {QUOTE_MAGIC!r}")
        if version != QUOTE_VERSION or sign_type != SIGN_TYPE_ECDSA_P256_SHA256:
            raise QuoteFormatError(f"version {version} / sign_type {sign_type}, expected "
                                   f"{QUOTE_VERSION} / {SIGN_TYPE_ECDSA_P256_SHA256}")
        off = _HEAD.size
        try:
            body = ReportBody.unpack(raw[off:off + ReportBody.SIZE])
        except SgxStructureError as err:
            raise QuoteFormatError(str(err)) from None
        off += ReportBody.SIZE
        parts = []
        for what in ("monitor key", "signature"):
            if len(raw) < off + _LEN.size:
                raise QuoteFormatError(f"quote ends before the {what} length")
            (n,) = _LEN.unpack_from(raw, off)
            off += _LEN.size
            if len(raw) < off + n:
                raise QuoteFormatError(f"quote ends inside the {n}-byte {what}")
            parts.append(raw[off:off + n])
            off += n
        if off != len(raw):
            raise QuoteFormatError(f"{len(raw) - off} trailing bytes after the signature")
        load_monitor_key(parts[0])
        return cls(body, parts[0], parts[1], version, sign_type)

    def to_json(self) -> dict[str, Any]:
        b = self.body
        return {"version": self.version, "sign_type": "ecdsa-p256-sha256",
                "report_body": {
                    "cpu_svn": b.cpu_svn.hex(), "misc_select": b.misc_select,
                    **identity_json(b.mr_enclave, b.mr_signer, b.attributes.flags,
                                    b.attributes.xfrm, b.isv_prod_id, b.isv_svn),
                    "report_data": b.report_data.hex()},
                "monitor_key": self.monitor_key.hex(), "signature": self.signature.hex(),
                "raw": self.to_bytes().hex()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EnclaveQuote:
        """From the readable form: `raw` is authoritative; the decoded fields must agree."""
        try:
            quote = cls.from_bytes(bytes.fromhex(doc["raw"]))
        except (KeyError, TypeError, ValueError) as err:
            raise QuoteFormatError(f"enclave-quote JSON: {err}") from None
        if quote.to_json() != doc:
            raise QuoteFormatError("enclave-quote JSON fields disagree with its raw bytes")
        return quote


@dataclass(frozen=True)
class QuoteBundle:
    """What the quote hypercall (0x8000_000d) returns: the enclave quote and the TPM evidence
    that vouches for the monitor key, as named evidence files.

    Bytes: magic "HEQBND01" | u32 count | count x (u16 name length | name | u32 size | data),
    names from BUNDLE_FILES, each once, in that order."""

    files: dict[str, bytes]

    def __post_init__(self) -> None:
        if tuple(self.files) != BUNDLE_FILES:
            raise QuoteFormatError(f"a quote bundle holds {', '.join(BUNDLE_FILES)} in that "
                                   f"order, not {', '.join(self.files)}")

    def to_bytes(self) -> bytes:
        out = BUNDLE_MAGIC + struct.pack("<I", len(self.files))
        for name, data in self.files.items():
            out += struct.pack("<H", len(name)) + name.encode() + struct.pack("<I", len(data))
            out += data
        return out

    @classmethod
    def from_bytes(cls, raw: bytes) -> QuoteBundle:
        if raw[:8] != BUNDLE_MAGIC or len(raw) < 12:
            raise QuoteFormatError(f"not a quote bundle (no {BUNDLE_MAGIC.decode()} header)")
        (count,) = struct.unpack_from("<I", raw, 8)
        off, files = 12, {}
        for i in range(count):
            if off + 2 > len(raw):
                raise QuoteFormatError(f"quote bundle ends before file {i}")
            (n,) = struct.unpack_from("<H", raw, off)
            name = raw[off + 2:off + 2 + n].decode(errors="replace")
            off += 2 + n
            if off + 4 > len(raw):
                raise QuoteFormatError(f"quote bundle ends inside the entry of {name!r}")
            (size,) = struct.unpack_from("<I", raw, off)
            off += 4
            if off + size > len(raw):
                raise QuoteFormatError(f"quote bundle ends inside {name!r}")
            files[name] = raw[off:off + size]
            off += size
        if off != len(raw):
            raise QuoteFormatError(f"{len(raw) - off} trailing bytes after the quote bundle")
        return cls(files)

    def write(self, out: Path) -> None:
        """The files into the evidence directory `out`, plus enclave-quote.json."""
        for name, data in self.files.items():
            (out / name).write_bytes(data)
        quote = EnclaveQuote.from_bytes(self.files["enclave-quote.bin"])
        (out / "enclave-quote.json").write_text(json.dumps(quote.to_json(), indent=2) + "\n")

