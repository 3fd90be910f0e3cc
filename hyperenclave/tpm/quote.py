"""TPM2_Quote by the monitor's AK, and the evidence files tpm2-tools reads.

File formats (../shared/reference/attestation-formats.md, section 2): `quote.msg` is the
TPMS_ATTEST without its size prefix, `quote.sig` a marshalled TPMT_SIGNATURE, `pcrs.ser` the
tpm2-tools "serialized" PCR file (a raw x86-64 dump of TPML_PCR_SELECTION, a u32 list count
and that many TPML_DIGEST of at most 8 digests), byte-identical to `tpm2_quote -o`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tpm2_pytss import ESAPI, TPM2_ST, TPMS_ATTEST

from .client import TpmClient, TpmError, read_pcr_values
from .objects import MONITOR_AK_HANDLE, MONITOR_LOCALITY, pcr_selection, policy_session

#: Boot chain, monitor image, monitor key, enclaves (docs/tpm-attestation.md).
QUOTE_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14)
TPM_GENERATED_VALUE = 0xFF544347
MAX_NONCE = 64           # TPM2B_DATA holds a TPMT_HA
TPM_ALG_SHA256 = 0x000B
_SELECTIONS, _DIGESTS_PER_LIST, _DIGEST_BUFFER = 16, 8, 64


def serialize_pcrs(pcrs: dict[int, bytes]) -> bytes:
    """tpm2-tools' serialized PCR file for a sha256 selection of `pcrs` (values in index order)."""
    indices = sorted(pcrs)
    bitmap = bytearray(3)
    for i in indices:
        if not 0 <= i < 24 or len(pcrs[i]) != 32:
            raise ValueError(f"PCR {i}: need an index 0..23 and a 32-byte sha256 value")
        bitmap[i // 8] |= 1 << (i % 8)
    selection = struct.pack("<I", 1) + struct.pack("<HB4sx", TPM_ALG_SHA256, 3, bytes(bitmap))
    selection += bytes(8 * (_SELECTIONS - 1))
    lists = [indices[i:i + _DIGESTS_PER_LIST] for i in range(0, len(indices), _DIGESTS_PER_LIST)]
    out = selection + struct.pack("<I", len(lists))
    for chunk in lists:
        out += struct.pack("<I", len(chunk))
        for slot in range(_DIGESTS_PER_LIST):
            value = pcrs[chunk[slot]] if slot < len(chunk) else b""
            out += struct.pack("<H", len(value)) + value.ljust(_DIGEST_BUFFER, b"\0")
    return out


@dataclass(frozen=True)
class Quote:
    """A quote and the PCR values it covers, read in the same locked TPM sequence."""

    nonce: bytes
    attest: bytes                 # TPMS_ATTEST, no size prefix
    signature: bytes              # marshalled TPMT_SIGNATURE
    pcrs: dict[int, bytes]        # quoted sha256 values by index

    def write(self, out: Path) -> None:
        """quote.msg, quote.sig, pcrs.ser and nonce.bin in `out`."""
        (out / "quote.msg").write_bytes(self.attest)
        (out / "quote.sig").write_bytes(self.signature)
        (out / "pcrs.ser").write_bytes(serialize_pcrs(self.pcrs))
        (out / "nonce.bin").write_bytes(self.nonce)


def quote(tpm: TpmClient, nonce: bytes, pcrs: Iterable[int] = QUOTE_PCRS) -> Quote:
    """TPM2_Quote by the AK over the sha256 `pcrs` with qualifying data `nonce`."""
    if not 1 <= len(nonce) <= MAX_NONCE:
        raise ValueError(f"quote nonce must be 1..{MAX_NONCE} bytes, got {len(nonce)}")
    indices = sorted(set(pcrs))
    selection = pcr_selection(indices)

    def run(esapi: ESAPI) -> tuple[bytes, bytes, dict[int, bytes]]:
        ak = esapi.tr_from_tpmpublic(MONITOR_AK_HANDLE)
        try:
            session = policy_session(esapi)
            try:
                attest, signature = esapi.quote(ak, selection, nonce, session1=session)
            finally:
                esapi.flush_context(session)
        finally:
            esapi.tr_close(ak)
        return bytes(attest), signature.marshal(), read_pcr_values(esapi, indices)

    attest, signature, values = tpm.run("quote", run, locality=MONITOR_LOCALITY)
    parsed, _ = TPMS_ATTEST.unmarshal(attest)
    composite = hashlib.sha256(b"".join(values[i] for i in indices)).digest()
    if parsed.magic != TPM_GENERATED_VALUE or parsed.type != TPM2_ST.ATTEST_QUOTE \
            or bytes(parsed.attested.quote.pcrDigest) != composite:
        raise TpmError("quote", "the TPM's quote does not cover the PCR values read with it")
    return Quote(bytes(nonce), attest, signature, values)
