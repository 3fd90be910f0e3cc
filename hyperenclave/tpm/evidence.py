"""TPM evidence formats as tpm2-tools writes and reads them (../shared/reference/
attestation-formats.md section 2): TPMS_ATTEST (quote.msg), TPMT_SIGNATURE (quote.sig) and the
"serialized" PCR file (pcrs.ser; written by `quote.serialize_pcrs`). Parsing is strict (sizes, trailing bytes, algorithms) and
never trusts what it parses: that is the verifier's job.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .quote import TPM_ALG_SHA256

TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_RSASSA, TPM_ALG_ECDSA = 0x0014, 0x0018
# pcrs.ser: x86-64 C structs TPML_PCR_SELECTION (u32 count, 16 x {u16 hash, u8 sizeofSelect,
# u8 select[4], pad}) and TPML_DIGEST (u32 count, 8 x {u16 size, u8 buffer[64]})
_SELECTION_SLOTS, _DIGEST_SLOTS = 16, 8
_PCRS_SELECTION = struct.Struct("<I" + "HB4sx" * _SELECTION_SLOTS)
_PCRS_DIGESTS = struct.Struct("<I" + "H64s" * _DIGEST_SLOTS)
assert _PCRS_SELECTION.size == 132 and _PCRS_DIGESTS.size == 532


class EvidenceFormatError(ValueError):
    """Bytes that are not the named TPM structure or file."""


PcrSelection = tuple[tuple[int, tuple[int, ...]], ...]   # ((hash alg, (PCR indices...)), ...)


def selection_of(pcrs: list[int] | tuple[int, ...], alg: int = TPM_ALG_SHA256) -> PcrSelection:
    return ((alg, tuple(sorted(pcrs))),)


def describe_selection(selection: PcrSelection) -> str:
    names = {TPM_ALG_SHA256: "sha256"}
    return "+".join(f"{names.get(alg, hex(alg))}:{','.join(map(str, pcrs))}"
                    for alg, pcrs in selection)


class _Reader:
    """Big-endian TPM marshalling."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.off, self.what = data, 0, what

    def take(self, n: int, field: str) -> bytes:
        if self.off + n > len(self.data):
            raise EvidenceFormatError(f"{self.what}: truncated in {field} at byte {self.off}")
        out = self.data[self.off:self.off + n]
        self.off += n
        return out

    def u(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def tpm2b(self, field: str) -> bytes:
        return self.take(self.u(2, field + " size"), field)

    def end(self) -> None:
        if self.off != len(self.data):
            raise EvidenceFormatError(f"{self.what}: {len(self.data) - self.off} trailing bytes")


def _bitmap_pcrs(bitmap: bytes) -> tuple[int, ...]:
    return tuple(8 * i + bit for i, byte in enumerate(bitmap) for bit in range(8) if byte >> bit & 1)


@dataclass(frozen=True)
class Attest:
    """TPMS_ATTEST of a quote (what tpm2_quote -m writes: no size prefix)."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    firmware_version: int
    pcr_select: PcrSelection
    pcr_digest: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Attest:
        r = _Reader(raw, "TPMS_ATTEST")
        magic, typ = r.u(4, "magic"), r.u(2, "type")
        signer, extra = r.tpm2b("qualifiedSigner"), r.tpm2b("extraData")
        clock = r.u(8, "clock")
        r.take(9, "clockInfo")                       # resetCount, restartCount, safe
        firmware = r.u(8, "firmwareVersion")
        if typ != TPM_ST_ATTEST_QUOTE:               # the rest is a TPMS_QUOTE_INFO only then
            return cls(magic, typ, signer, extra, clock, firmware, (), b"")
        selection = []
        for i in range(r.u(4, "pcrSelect count")):
            alg = r.u(2, f"pcrSelect[{i}].hash")
            selection.append((alg, _bitmap_pcrs(r.take(r.u(1, "sizeofSelect"),
                                                       f"pcrSelect[{i}]"))))
        digest = r.tpm2b("pcrDigest")
        r.end()
        return cls(magic, typ, signer, extra, clock, firmware, tuple(selection), digest)


@dataclass(frozen=True)
class Signature:
    """TPMT_SIGNATURE: ECDSA (r, s) or RSASSA (sig)."""

    sig_alg: int
    hash_alg: int
    parts: tuple[bytes, ...]

    @classmethod
    def parse(cls, raw: bytes) -> Signature:
        r = _Reader(raw, "TPMT_SIGNATURE")
        alg, hash_alg = r.u(2, "sigAlg"), r.u(2, "hash")
        if alg == TPM_ALG_ECDSA:
            parts = (r.tpm2b("signatureR"), r.tpm2b("signatureS"))
        elif alg == TPM_ALG_RSASSA:
            parts = (r.tpm2b("sig"),)
        else:
            raise EvidenceFormatError(f"TPMT_SIGNATURE: algorithm {alg:#x} is neither ECDSA "
                                      "nor RSASSA")
        r.end()
        return cls(alg, hash_alg, parts)


def pcr_digest(values: list[bytes]) -> bytes:
    """TPMS_QUOTE_INFO.pcrDigest: SHA-256 of the selected PCR values in selection order."""
    return hashlib.sha256(b"".join(values)).digest()


def read_pcrs_ser(raw: bytes) -> tuple[PcrSelection, list[tuple[int, bytes]]]:
    """The selection and the (PCR, value) list of a serialized PCR file, in selection order."""
    if len(raw) < _PCRS_SELECTION.size + 4:
        raise EvidenceFormatError(f"pcrs.ser: {len(raw)} bytes is shorter than its header")
    fields = _PCRS_SELECTION.unpack_from(raw)
    count = fields[0]
    if count > _SELECTION_SLOTS:
        raise EvidenceFormatError(f"pcrs.ser: {count} selections (at most {_SELECTION_SLOTS})")
    selection = []
    for i in range(count):
        alg, size, bitmap = fields[1 + 3 * i:4 + 3 * i]
        if size > 4:
            raise EvidenceFormatError(f"pcrs.ser: sizeofSelect {size} in selection {i}")
        selection.append((alg, _bitmap_pcrs(bitmap[:size])))
    (n_lists,) = struct.unpack_from("<I", raw, _PCRS_SELECTION.size)
    expected = _PCRS_SELECTION.size + 4 + n_lists * _PCRS_DIGESTS.size
    if len(raw) != expected:
        raise EvidenceFormatError(f"pcrs.ser: {len(raw)} bytes, {n_lists} digest lists make "
                                  f"{expected}")
    digests = []
    for n in range(n_lists):
        slots = _PCRS_DIGESTS.unpack_from(raw, _PCRS_SELECTION.size + 4 + n * _PCRS_DIGESTS.size)
        if slots[0] > _DIGEST_SLOTS:
            raise EvidenceFormatError(f"pcrs.ser: digest list {n} claims {slots[0]} digests")
        for i in range(slots[0]):
            size, buf = slots[1 + 2 * i], slots[2 + 2 * i]
            if size > 64:
                raise EvidenceFormatError(f"pcrs.ser: digest of {size} bytes")
            digests.append(buf[:size])
    order = [pcr for _, pcrs in selection for pcr in pcrs]
    if len(order) != len(digests):
        raise EvidenceFormatError(f"pcrs.ser: {len(order)} PCRs selected, {len(digests)} values")
    return tuple(selection), list(zip(order, digests))
