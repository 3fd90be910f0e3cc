"""Sealing to PCRs and locality 2, AK enrollment with the local attestation CA, and quotes,
against a real manufactured swtpm (EK certificate by swtpm_localca)."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import ESYS_TR, TPMS_ATTEST, TPMT_SIGNATURE

from hyperenclave.tpm import Swtpm, TpmClient, TpmError
from hyperenclave.tpm.ak import certifies, enroll_ak, read_ak_public
from hyperenclave.tpm.attestation_ca import (TCG_KP_AIK_CERTIFICATE, AttestationCa,
                                             EnrollmentError)
from hyperenclave.tpm.objects import read_ek, storage_primary
from hyperenclave.tpm.quote import QUOTE_PCRS, quote
from hyperenclave.tpm.seal import (CorruptSealedBlob, SealedBlob, UnsealPolicyError, seal,
                                   unseal)

pytestmark = pytest.mark.integration

PCRS = (0, 8, 12)


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tpm-state")


@pytest.fixture(scope="module")
def tpm(state: Path) -> Iterator[TpmClient]:
    swtpm = Swtpm(state / "tpm")
    swtpm.manufacture(state / "swtpm-localca")
    with swtpm, TpmClient.connect(swtpm) as client:
        yield client


@pytest.fixture(scope="module")
def ca(state: Path) -> AttestationCa:
    manufacturer = x509.load_pem_x509_certificate((state / "swtpm-localca/issuercert.pem").read_bytes())
    return AttestationCa.open(state / "attestation-ca", [manufacturer])


# ------------------------------------------------------------------ sealing
def test_sealed_data_comes_back_while_the_pcrs_are_unchanged(tpm: TpmClient, tmp_path) -> None:
    secret = os.urandom(32)
    seal(tpm, secret, PCRS).save(tmp_path, "s")
    assert {p.name for p in tmp_path.iterdir()} == {"s.pub", "s.priv"}
    assert secret not in (tmp_path / "s.priv").read_bytes()
    assert unseal(tpm, SealedBlob.load(tmp_path, "s"), PCRS) == secret
    assert unseal(tpm, SealedBlob.load(tmp_path, "s"), PCRS) == secret


def test_an_extended_pcr_makes_the_tpm_refuse_to_unseal(tpm: TpmClient) -> None:
    blob = seal(tpm, b"k" * 32, PCRS)
    tpm.pcr_extend(8, hashlib.sha256(b"another command line").digest())
    with pytest.raises(UnsealPolicyError, match=r"PCRs 0, 8, 12 differ .* \(rc=0x99d\)"):
        unseal(tpm, blob, PCRS)


def test_pcrs_outside_the_policy_do_not_matter(tpm: TpmClient) -> None:
    blob = seal(tpm, b"k" * 32, PCRS)
    tpm.pcr_extend(10, bytes(32))
    assert unseal(tpm, blob, PCRS) == b"k" * 32


def test_the_host_cannot_unseal_a_copy_of_the_blob_at_locality_0(tpm: TpmClient) -> None:
    blob = seal(tpm, b"k" * 32, PCRS)
    public, private = blob.parse()

    def at_locality_0(esapi):
        srk = storage_primary(esapi)
        obj = esapi.load(srk, private, public)
        try:
            return esapi.unseal(obj, session1=ESYS_TR.PASSWORD)      # no policy at all
        finally:
            esapi.flush_context(obj)
            esapi.flush_context(srk)

    with pytest.raises(TpmError, match="unseal"):
        tpm.run("unseal", at_locality_0)


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing"])
def test_a_damaged_blob_is_reported_as_corrupt(tpm: TpmClient, tmp_path, damage: str) -> None:
    seal(tpm, b"k" * 32, PCRS).save(tmp_path, "s")
    priv = tmp_path / "s.priv"
    data = priv.read_bytes()
    if damage == "truncate":
        priv.write_bytes(data[:40])
    elif damage == "flip":
        priv.write_bytes(data[:60] + bytes([data[60] ^ 1]) + data[61:])
    else:
        priv.unlink()
    with pytest.raises(CorruptSealedBlob):
        unseal(tpm, SealedBlob.load(tmp_path, "s"), PCRS)


def test_seal_refuses_bad_sizes(tpm: TpmClient) -> None:
    with pytest.raises(ValueError, match="1..128 bytes"):
        seal(tpm, b"", PCRS)


# ------------------------------------------------------------------ AK and quote
@pytest.fixture(scope="module")
def enrolled(tpm: TpmClient, ca: AttestationCa):
    return enroll_ak(tpm, ca, "HyperEnclave AK (test)")


def test_the_ca_certifies_the_ak_after_credential_activation(enrolled, ca, tpm) -> None:
    ak_public, cert = enrolled
    cert.verify_directly_issued_by(ca.cert)
    assert certifies(cert, ak_public)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE])
    assert cert.subject.rfc4514_string() == "CN=HyperEnclave AK (test),O=hyperenclave"
    assert read_ak_public(tpm).marshal() == ak_public.marshal()      # persistent


def test_the_ca_reopens_with_the_same_key(state: Path, ca: AttestationCa) -> None:
    again = AttestationCa.open(state / "attestation-ca", ca.manufacturer_certs)
    assert again.cert == ca.cert


def test_the_ca_refuses_an_ek_certificate_from_an_unknown_manufacturer(tpm, state) -> None:
    stranger = AttestationCa.open(state / "other-ca", [])
    ek_public, ek_cert = tpm.run("read EK", read_ek)
    with pytest.raises(EnrollmentError, match="not signed by a known TPM manufacturer CA"):
        stranger.challenge(ek_public, ek_cert, read_ak_public(tpm))


def test_the_ca_refuses_a_wrong_activation_answer(tpm, ca) -> None:
    ek_public, ek_cert = tpm.run("read EK", read_ek)
    ak_public = read_ak_public(tpm)
    ca.challenge(ek_public, ek_cert, ak_public)
    with pytest.raises(EnrollmentError, match="wrong secret"):
        ca.issue(ak_public, bytes(32), "x")
    with pytest.raises(EnrollmentError, match="no pending credential challenge"):
        ca.issue(ak_public, bytes(32), "x")


def test_the_ca_refuses_an_ek_that_is_not_the_certified_one(tpm, ca, enrolled) -> None:
    ek_public, ek_cert = tpm.run("read EK", read_ek)
    ak_public, _ = enrolled
    with pytest.raises(EnrollmentError, match="not the one its certificate names"):
        ca.challenge(ak_public, ek_cert, ak_public)


def test_a_quote_covers_the_pcrs_and_the_nonce_and_verifies_with_the_certified_key(
        tpm, enrolled) -> None:
    ak_public, cert = enrolled
    nonce = os.urandom(32)
    q = quote(tpm, nonce)
    assert sorted(q.pcrs) == sorted(QUOTE_PCRS)
    attest, _ = TPMS_ATTEST.unmarshal(q.attest)
    assert bytes(attest.extraData) == nonce
    composite = hashlib.sha256(b"".join(q.pcrs[i] for i in sorted(QUOTE_PCRS))).digest()
    assert bytes(attest.attested.quote.pcrDigest) == composite
    sig, _ = TPMT_SIGNATURE.unmarshal(q.signature)
    der = encode_dss_signature(int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big"),
                               int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big"))
    key = cert.public_key()
    key.verify(der, q.attest, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.verify(der, q.attest[:-1] + b"\x00", ec.ECDSA(hashes.SHA256()))


def test_the_ak_is_usable_only_at_the_monitors_locality(tpm, enrolled) -> None:
    def host_quote(esapi):
        ak = esapi.tr_from_tpmpublic(0x8100_0101)
        try:
            return esapi.quote(ak, "sha256:0", b"n", session1=ESYS_TR.PASSWORD)
        finally:
            esapi.tr_close(ak)

    with pytest.raises(TpmError, match="quote"):
        tpm.run("quote", host_quote)


def test_quote_refuses_bad_nonces(tpm, enrolled) -> None:
    with pytest.raises(ValueError, match="1..64 bytes"):
        quote(tpm, b"")
    with pytest.raises(ValueError, match="1..64 bytes"):
        quote(tpm, bytes(65))


def test_enrolling_again_replaces_the_persistent_ak(tpm, ca, enrolled) -> None:
    old_public, old_cert = enrolled
    new_public, new_cert = enroll_ak(tpm, ca, "HyperEnclave AK (test)")
    assert new_public.marshal() != old_public.marshal()
    assert read_ak_public(tpm).marshal() == new_public.marshal()
    assert not certifies(old_cert, read_ak_public(tpm))
    assert serialization.load_pem_public_key(new_public.to_pem())
