"""The monitor's TPM attestation key (AK): created once per machine, certified by the local
attestation CA after credential activation against the EK, kept as a persistent object.

A real deployment keeps the same things: the AK in the TPM (MONITOR_AK_HANDLE) and its
certificate on disk; later boots only check that the persistent AK is the certified one.
"""

from __future__ import annotations

from cryptography import x509
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMT_SYM_DEF,
)

from .attestation_ca import AttestationCa, spki
from .client import TpmClient
from .objects import (
    EK_HANDLE,
    MONITOR_AK_HANDLE,
    MONITOR_LOCALITY,
    ak_template,
    read_ek,
    storage_primary,
)


def _persistent_handles(esapi: ESAPI) -> set[int]:
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, 0x8100_0000, 256)
    return {int(h) for h in data.data.handles}


def read_ak_public(tpm: TpmClient) -> TPM2B_PUBLIC | None:
    """The persistent AK's public area, or None if MONITOR_AK_HANDLE is empty."""

    def run(esapi: ESAPI) -> TPM2B_PUBLIC | None:
        if MONITOR_AK_HANDLE not in _persistent_handles(esapi):
            return None
        handle = esapi.tr_from_tpmpublic(MONITOR_AK_HANDLE)
        try:
            public, _, _ = esapi.read_public(handle)
            return public
        finally:
            esapi.tr_close(handle)

    return tpm.run("read AK", run, locality=MONITOR_LOCALITY)


def certifies(cert: x509.Certificate, public: TPM2B_PUBLIC) -> bool:
    """True if `cert` names the key of the TPM object `public`."""
    return spki(cert.public_key()) == public.to_der()


def enroll_ak(tpm: TpmClient, ca: AttestationCa, subject: str) -> tuple[TPM2B_PUBLIC, x509.Certificate]:
    """Create a new AK (replacing any object at MONITOR_AK_HANDLE) and get it certified.

    The CA checks the EK certificate and the AK's attributes, encrypts a secret to the EK for
    the AK's name (MakeCredential); only this TPM's ActivateCredential recovers it.
    """

    def create(esapi: ESAPI) -> tuple[TPM2B_PUBLIC, x509.Certificate, TPM2B_PUBLIC]:
        ek_public, ek_cert = read_ek(esapi)
        srk = storage_primary(esapi)
        try:
            private, public, *_ = esapi.create(srk, TPM2B_SENSITIVE_CREATE(), ak_template(esapi))
            ak = esapi.load(srk, private, public)
        finally:
            esapi.flush_context(srk)
        try:
            if MONITOR_AK_HANDLE in _persistent_handles(esapi):
                old = esapi.tr_from_tpmpublic(MONITOR_AK_HANDLE)
                esapi.evict_control(ESYS_TR.OWNER, old, MONITOR_AK_HANDLE)
                esapi.tr_close(old)
            persistent = esapi.evict_control(ESYS_TR.OWNER, ak, MONITOR_AK_HANDLE)
            esapi.tr_close(persistent)
        finally:
            esapi.flush_context(ak)
        return ek_public, ek_cert, public

    ek_public, ek_cert, ak_public = tpm.run("create AK", create, locality=MONITOR_LOCALITY)
    challenge = ca.challenge(ek_public, ek_cert, ak_public)
    blob, _ = TPM2B_ID_OBJECT.unmarshal(challenge.credential_blob)
    secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(challenge.encrypted_secret)

    def activate(esapi: ESAPI) -> bytes:
        ak = esapi.tr_from_tpmpublic(MONITOR_AK_HANDLE)
        ek = esapi.tr_from_tpmpublic(EK_HANDLE)
        session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                           TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
        try:
            esapi.policy_secret(ESYS_TR.ENDORSEMENT, session)    # the EK's PolicyA
            return bytes(esapi.activate_credential(ak, ek, blob, secret,
                                                   session1=ESYS_TR.PASSWORD, session2=session))
        finally:
            esapi.flush_context(session)
            esapi.tr_close(ak)
            esapi.tr_close(ek)

    answer = tpm.run("activate credential", activate, locality=MONITOR_LOCALITY)
    return ak_public, ca.issue(ak_public, answer, subject)
