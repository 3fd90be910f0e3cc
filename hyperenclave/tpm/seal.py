"""Data sealed in the TPM to the monitor's locality and a set of PCR values.

The sealed object is a keyedhash data object under the SRK whose authPolicy is
PolicyLocality(2) + PolicyPCR(current values of the chosen PCRs); it is saved as the two
files tpm2_create writes (`NAME.pub` = TPM2B_PUBLIC, `NAME.priv` = TPM2B_PRIVATE), which are
useless without this TPM, its locality 2 and the same PCR values.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tpm2_pytss import (
    ESAPI,
    TPM2_ALG,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMA_OBJECT,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    TSS2_Exception,
)

from .client import TpmClient, TpmError
from .objects import MONITOR_LOCALITY, policy_digest, policy_session, storage_primary

MAX_SEALED_SIZE = 128  # TPM2B_SENSITIVE_DATA's limit in swtpm
_RC_FMT1 = 0x080
_RC_POLICY_FAIL = 0x01D


class SealError(RuntimeError):
    """Sealing or unsealing failed; the message says which file or which check."""


class UnsealPolicyError(SealError):
    """The TPM refused to unseal: the PCR values (or the locality) differ from sealing time."""


class CorruptSealedBlob(SealError):
    """The saved blob cannot be parsed or loaded (truncated, edited, or from another TPM)."""


@dataclass(frozen=True)
class SealedBlob:
    """A sealed object as tpm2-tools saves it: marshalled TPM2B_PUBLIC and TPM2B_PRIVATE."""

    public: bytes
    private: bytes

    def save(self, directory: Path, name: str) -> None:
        """Write NAME.pub and NAME.priv atomically (a crash leaves the old pair or none)."""
        directory.mkdir(parents=True, exist_ok=True)
        for suffix, data in ((".pub", self.public), (".priv", self.private)):
            tmp = directory / f".{name}{suffix}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, directory / f"{name}{suffix}")

    @classmethod
    def load(cls, directory: Path, name: str) -> SealedBlob | None:
        """The saved pair, or None if neither file exists (never sealed)."""
        pub, priv = directory / f"{name}.pub", directory / f"{name}.priv"
        if not pub.exists() and not priv.exists():
            return None
        if not (pub.exists() and priv.exists()):
            missing = priv if pub.exists() else pub
            raise CorruptSealedBlob(f"sealed blob {missing} is missing (its other half exists)")
        return cls(pub.read_bytes(), priv.read_bytes())

    def parse(self) -> tuple[TPM2B_PUBLIC, TPM2B_PRIVATE]:
        """The TPM structures; CorruptSealedBlob if a file is truncated or has trailing bytes."""
        try:
            public, used_pub = TPM2B_PUBLIC.unmarshal(self.public)
            private, used_priv = TPM2B_PRIVATE.unmarshal(self.private)
        except Exception as exc:
            raise CorruptSealedBlob(f"sealed blob does not parse: {exc}") from None
        if used_pub != len(self.public) or used_priv != len(self.private):
            raise CorruptSealedBlob("sealed blob has trailing bytes")
        return public, private


class _LoadFailed(Exception):
    """The TPM refused TPM2_Load of the blob (carries the cause out of the locked sequence)."""


def _sealed_template(policy: bytes) -> TPM2B_PUBLIC:
    """A data object: no userWithAuth, so only the policy can release it."""
    template = TPM2B_PUBLIC(TPMT_PUBLIC(
        type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256, authPolicy=policy,
        objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.NODA))
    template.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
    return template


def seal(tpm: TpmClient, data: bytes, pcrs: Iterable[int]) -> SealedBlob:
    """Seal `data` to locality 2 and the current values of `pcrs`."""
    if not 0 < len(data) <= MAX_SEALED_SIZE:
        raise ValueError(f"sealed data must be 1..{MAX_SEALED_SIZE} bytes, got {len(data)}")
    pcrs = tuple(pcrs)

    def run(esapi: ESAPI) -> SealedBlob:
        srk = storage_primary(esapi)
        try:
            sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(data)))
            private, public, *_ = esapi.create(srk, sensitive, _sealed_template(policy_digest(esapi, pcrs)))
        finally:
            esapi.flush_context(srk)
        return SealedBlob(public.marshal(), private.marshal())

    return tpm.run("seal", run, locality=MONITOR_LOCALITY)


def unseal(tpm: TpmClient, blob: SealedBlob, pcrs: Iterable[int]) -> bytes:
    """The sealed data if the PCRs still hold their sealing-time values.

    UnsealPolicyError when they do not; CorruptSealedBlob when the blob is not a sealed object
    of this TPM's SRK.
    """
    public, private = blob.parse()
    pcrs = tuple(pcrs)

    def run(esapi: ESAPI) -> bytes:
        srk = storage_primary(esapi)
        try:
            try:
                obj = esapi.load(srk, private, public)
            except TSS2_Exception as exc:
                if exc.rc >> 16:              # not a TPM response code: transport trouble
                    raise
                raise _LoadFailed(exc) from exc
            try:
                session = policy_session(esapi, pcrs)
                try:
                    return bytes(esapi.unseal(obj, session1=session))
                finally:
                    esapi.flush_context(session)
            finally:
                esapi.flush_context(obj)
        finally:
            esapi.flush_context(srk)

    try:
        return tpm.run("unseal", run, locality=MONITOR_LOCALITY)
    except _LoadFailed as failed:
        raise CorruptSealedBlob(f"the TPM would not load the sealed blob: {failed.__cause__}") from None
    except TpmError as err:
        if err.rc is not None and err.rc & _RC_FMT1 and err.rc & 0x3F == _RC_POLICY_FAIL:
            raise UnsealPolicyError(
                f"the TPM refused to unseal: PCRs {', '.join(map(str, sorted(pcrs)))} differ "
                f"from their values at sealing time (rc=0x{err.rc:x})") from None
        raise
