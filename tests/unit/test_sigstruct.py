"""SIGSTRUCT signing and EINIT-style verification (SDM Vol. 3D SIGSTRUCT / EINIT)."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hyperenclave.vmm.sgx import (
    SIGSTRUCT_VENDOR_INTEL,
    AttributeFlags,
    Attributes,
    SgxErrorCode,
    SigStruct,
)
from hyperenclave.vmm.sigstruct import (
    SigStructError,
    generate_signing_key,
    load_signing_key,
    mrsigner,
    save_signing_key,
    sign_sigstruct,
    signed_data,
    sigstruct_date,
    verify_sigstruct,
)

INVALID_SIG_STRUCT = SgxErrorCode.SGX_INVALID_SIG_STRUCT
INVALID_SIGNATURE = SgxErrorCode.SGX_INVALID_SIGNATURE


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def template() -> SigStruct:
    return SigStruct(
        date=sigstruct_date(datetime.date(2025, 1, 31)),
        swdefined=0x1234,
        misc_select=1, misc_mask=0xFFFF_FFFF,
        attributes=Attributes(AttributeFlags.INIT | AttributeFlags.MODE64BIT, 3),
        attribute_mask=Attributes(0xFFFF_FFFF_FFFF_FFFD, 0xFFFF_FFFF_FFFF_FFFB),
        enclave_hash=hashlib.sha256(b"an enclave").digest(),
        isv_prod_id=7, isv_svn=3)


@pytest.fixture(scope="module")
def signed(key: rsa.RSAPrivateKey, template: SigStruct) -> SigStruct:
    return sign_sigstruct(template, key)


def refused(sig: SigStruct | bytes) -> SgxErrorCode:
    with pytest.raises(SigStructError) as err:
        verify_sigstruct(sig)
    assert err.value.code is not None
    return err.value.code


def test_signed_sigstruct_verifies(signed: SigStruct) -> None:
    verify_sigstruct(signed)
    verify_sigstruct(signed.pack())
    raw = signed.pack()
    assert len(raw) == 1808
    assert raw[512:516] == (3).to_bytes(4, "little")


def test_modulus_and_signature_are_little_endian(key: rsa.RSAPrivateKey,
                                                 signed: SigStruct) -> None:
    raw = signed.pack()
    n = key.public_key().public_numbers().n
    assert raw[128:512] == n.to_bytes(384, "little")
    pkcs1 = key.sign(signed_data(signed), padding.PKCS1v15(), hashes.SHA256())  # big-endian
    assert raw[516:900] == pkcs1[::-1]


def test_signature_covers_exactly_the_two_sdm_regions(signed: SigStruct) -> None:
    raw = signed.pack()
    assert signed_data(signed) == raw[0:128] + raw[900:1028]
    assert len(signed_data(signed)) == 256


def test_signature_checks_with_an_independent_pkcs1_verifier(signed: SigStruct) -> None:
    """cryptography's own RSA verification, with the public key rebuilt from the struct bytes."""
    raw = signed.pack()
    public = rsa.RSAPublicNumbers(int.from_bytes(raw[512:516], "little"),
                                  int.from_bytes(raw[128:512], "little")).public_key()
    public.verify(int.from_bytes(raw[516:900], "little").to_bytes(384, "big"),
                  raw[0:128] + raw[900:1028], padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public.verify(int.from_bytes(raw[516:900], "little").to_bytes(384, "big"),
                      raw[0:128] + raw[900:1027] + b"\x01", padding.PKCS1v15(), hashes.SHA256())


def test_q1_q2_are_the_sdm_quotients(signed: SigStruct) -> None:
    s, n = signed.signature, signed.modulus
    assert signed.q1 == s ** 2 // n
    assert signed.q2 == (s ** 3 - signed.q1 * s * n) // n
    assert signed.q2 == (s * s % n) * s // n     # the equivalent form in the reference notes
    assert signed.q1 < 1 << 3072 and signed.q2 < 1 << 3072


def test_mrsigner_is_sha256_of_the_little_endian_modulus(key: rsa.RSAPrivateKey,
                                                         signed: SigStruct) -> None:
    n = key.public_key().public_numbers().n
    assert mrsigner(signed) == hashlib.sha256(signed.pack()[128:512]).digest()
    assert mrsigner(signed) == hashlib.sha256(n.to_bytes(384, "little")).digest()
    assert mrsigner(signed) != hashlib.sha256(n.to_bytes(384, "big")).digest()


@pytest.mark.parametrize("change", [
    {"swdefined": 0x1235}, {"date": 0x20250201}, {"enclave_hash": bytes(32)}, {"isv_svn": 4},
    {"isv_prod_id": 8}, {"misc_select": 0}, {"attributes": Attributes(AttributeFlags.DEBUG, 3)},
    {"isv_family_id": b"\x01" * 16}, {"vendor": SIGSTRUCT_VENDOR_INTEL},
])
def test_changing_a_signed_field_breaks_the_signature(signed: SigStruct, change: dict) -> None:
    assert refused(dataclasses.replace(signed, **change)) == INVALID_SIGNATURE


def test_tampered_signature_modulus_q1_q2_are_refused(signed: SigStruct) -> None:
    assert refused(dataclasses.replace(signed, signature=signed.signature + 1)) == INVALID_SIGNATURE
    assert refused(dataclasses.replace(signed, modulus=signed.modulus - 2)) == INVALID_SIGNATURE
    assert refused(dataclasses.replace(signed, modulus=signed.modulus >> 1)) == INVALID_SIGNATURE
    assert refused(dataclasses.replace(signed, q1=signed.q1 + 1)) == INVALID_SIGNATURE
    assert refused(dataclasses.replace(signed, q1=signed.q1 - 1)) == INVALID_SIGNATURE
    assert refused(dataclasses.replace(signed, q2=signed.q2 + 1)) == INVALID_SIGNATURE
    assert refused(dataclasses.replace(signed, q2=0)) == INVALID_SIGNATURE
    assert refused(dataclasses.replace(signed, signature=0, q1=0, q2=0)) == INVALID_SIGNATURE


def test_a_signature_by_another_key_is_refused(signed: SigStruct) -> None:
    other = sign_sigstruct(signed, generate_signing_key())
    verify_sigstruct(other)
    swapped = dataclasses.replace(signed, signature=other.signature, q1=other.q1, q2=other.q2)
    assert refused(swapped) == INVALID_SIGNATURE
    assert mrsigner(other) != mrsigner(signed)


def test_bad_fixed_fields_are_an_invalid_sigstruct(key: rsa.RSAPrivateKey,
                                                   template: SigStruct) -> None:
    """Signed anyway, so only the fixed-field check can refuse them."""
    for change in ({"header": bytes(16)}, {"header2": b"\x02" + bytes(15)}, {"vendor": 1},
                   {"vendor": 0x8087}):
        assert refused(sign_sigstruct(dataclasses.replace(template, **change), key)) \
            == INVALID_SIG_STRUCT
    good = sign_sigstruct(template, key)
    assert refused(dataclasses.replace(good, exponent=65537)) == INVALID_SIG_STRUCT
    # The fixed-field check comes first, as in EINIT.
    assert refused(dataclasses.replace(good, header=bytes(16), q1=0)) == INVALID_SIG_STRUCT


def test_raw_bytes_with_reserved_or_wrong_size_are_an_invalid_sigstruct(
        signed: SigStruct) -> None:
    raw = bytearray(signed.pack())
    for pos in (44, 127, 908, 1000, 1028, 1039):
        bad = bytearray(raw)
        bad[pos] = 1
        assert refused(bytes(bad)) == INVALID_SIG_STRUCT
    assert refused(bytes(raw[:-1])) == INVALID_SIG_STRUCT


def test_every_single_byte_change_is_refused(signed: SigStruct) -> None:
    """Each of the 1808 bytes is fixed, reserved, signed or part of the RSA numbers."""
    raw = signed.pack()
    codes: dict[int, SgxErrorCode] = {}
    for pos in range(len(raw)):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        codes[pos] = refused(bytes(bad))
    fixed_or_reserved = [*range(0, 20), *range(24, 40), *range(44, 128), *range(512, 516),
                         *range(908, 912), *range(992, 1008), *range(1028, 1040)]
    assert {codes[p] for p in fixed_or_reserved} == {INVALID_SIG_STRUCT}
    assert {codes[p] for p in set(codes) - set(fixed_or_reserved)} == {INVALID_SIGNATURE}
    assert codes[20] == codes[40] == codes[128] == codes[1040] == codes[1807] == INVALID_SIGNATURE


def test_signing_key_helpers(tmp_path, key: rsa.RSAPrivateKey, template: SigStruct) -> None:
    assert key.key_size == 3072
    assert key.public_key().public_numbers().e == 3
    path = tmp_path / "enclave-key.pem"
    save_signing_key(key, path)
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_signing_key(path)
    assert loaded.private_numbers() == key.private_numbers()
    assert sign_sigstruct(template, loaded) == sign_sigstruct(template, key)


def test_keys_that_sgx_cannot_use_are_refused(tmp_path, template: SigStruct) -> None:
    for wrong in (rsa.generate_private_key(public_exponent=65537, key_size=3072),
                  rsa.generate_private_key(public_exponent=3, key_size=2048)):
        with pytest.raises(ValueError, match="RSA-3072 with e=3"):
            sign_sigstruct(template, wrong)
        with pytest.raises(ValueError, match="RSA-3072 with e=3"):
            save_signing_key(wrong, tmp_path / "x.pem")
        path = tmp_path / "wrong.pem"
        path.write_bytes(wrong.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        with pytest.raises(ValueError, match="RSA-3072 with e=3"):
            load_signing_key(path)


def test_date_is_hex_bcd() -> None:
    assert sigstruct_date(datetime.date(2025, 1, 31)) == 0x20250131
    assert sigstruct_date(datetime.date(1999, 12, 1)) == 0x19991201
