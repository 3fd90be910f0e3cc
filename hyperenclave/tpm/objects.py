"""The TPM objects the monitor uses and the policies that keep them the monitor's.

The host reaches the TPM through the CRB at locality 0; the monitor talks to it at
MONITOR_LOCALITY (as a late-launched environment would). Everything the monitor owns carries
PolicyLocality(2) without userWithAuth, so the host cannot use it even with a copy of a saved
blob, and the persistent handles in MONITOR_HANDLES are refused to the host after launch
(hyperenclave/tpm/mediation.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMA_LOCALITY,
    TPMA_OBJECT,
    TPML_PCR_SELECTION,
    TPMT_SYM_DEF,
)

MONITOR_LOCALITY = 2
#: Persistent handles reserved for the monitor (owner range); the host may not touch them.
MONITOR_HANDLES = range(0x8100_0100, 0x8100_0200)
MONITOR_AK_HANDLE = 0x8100_0101
#: The RSA-2048 EK (TCG EK Credential Profile template L-1) and its certificate, both made
#: by swtpm_setup. Its low-range template has the plain PolicySecret(endorsement) policy.
EK_HANDLE = 0x8101_0001
EK_CERT_INDEX = 0x01C0_0002
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
EK_ATTRIBUTES = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                 | TPMA_OBJECT.ADMINWITHPOLICY | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT)

#: TCG TPM v2.0 Provisioning Guidance: the ECC P-256 storage root key template.
SRK_ATTRIBUTES = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
                  | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                  | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.NODA)
#: Restricted signing key: signs only TPM-made structures (quotes), never outside data that
#: mimics them; no userWithAuth, so only its PolicyLocality(2) authorises it.
AK_ATTRIBUTES = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM
                 | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN)
_NO_SYMMETRIC = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)


def pcr_selection(pcrs: Iterable[int]) -> TPML_PCR_SELECTION:
    """A sha256 selection of `pcrs` (0-23)."""
    indices = sorted(set(pcrs))
    if not indices or indices[0] < 0 or indices[-1] > 23:
        raise ValueError(f"PCR selection {indices} must name PCRs in 0..23")
    return TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, indices)))


def storage_primary(esapi: ESAPI) -> ESYS_TR:
    """The owner hierarchy's SRK: derived from the owner seed, so the same on every boot."""
    template = TPM2B_PUBLIC.parse("ecc256:aes128cfb", SRK_ATTRIBUTES)
    handle, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)
    return handle


def _policy(esapi: ESAPI, session: ESYS_TR, pcrs: Iterable[int] | None) -> None:
    esapi.policy_locality(session, TPMA_LOCALITY.TWO)
    if pcrs is not None:
        esapi.policy_pcr(session, None, pcr_selection(pcrs))


def policy_digest(esapi: ESAPI, pcrs: Iterable[int] | None = None) -> bytes:
    """authPolicy of PolicyLocality(2) [+ PolicyPCR over the current values of `pcrs`]."""
    trial = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, _NO_SYMMETRIC,
                                     TPM2_ALG.SHA256)
    try:
        _policy(esapi, trial, pcrs)
        return bytes(esapi.policy_get_digest(trial))
    finally:
        esapi.flush_context(trial)


def policy_session(esapi: ESAPI, pcrs: Iterable[int] | None = None) -> ESYS_TR:
    """A policy session satisfying policy_digest(pcrs) now; the caller flushes it."""
    session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                       _NO_SYMMETRIC, TPM2_ALG.SHA256)
    try:
        _policy(esapi, session, pcrs)
    except BaseException:
        esapi.flush_context(session)
        raise
    return session


def ak_template(esapi: ESAPI) -> TPM2B_PUBLIC:
    """ECC P-256 ECDSA-SHA256 restricted signing key usable only at the monitor's locality."""
    template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null", AK_ATTRIBUTES)
    template.publicArea.authPolicy = policy_digest(esapi)
    return template


def read_nv(esapi: ESAPI, index: int) -> bytes:
    """All of an NV index, read with its own (empty) auth in chunks the TPM accepts."""
    handle = esapi.tr_from_tpmpublic(index)
    try:
        public, _ = esapi.nv_read_public(handle)
        size = public.nvPublic.dataSize
        data = b""
        while len(data) < size:
            data += bytes(esapi.nv_read(handle, min(1024, size - len(data)), len(data),
                                        auth_handle=handle))
        return data
    finally:
        esapi.tr_close(handle)


def read_ek(esapi: ESAPI) -> tuple[TPM2B_PUBLIC, x509.Certificate]:
    """The EK's public area and its manufacturer certificate from NV."""
    handle = esapi.tr_from_tpmpublic(EK_HANDLE)
    try:
        public, _, _ = esapi.read_public(handle)
    finally:
        esapi.tr_close(handle)
    return public, x509.load_der_x509_certificate(read_nv(esapi, EK_CERT_INDEX))
