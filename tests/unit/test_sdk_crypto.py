"""The trusted runtime's AES-NI code (sdk/trts/crypto.c) against the standards' vectors: the C
file enclaves link, built for the host as a shared library (once with the enclave's own flags,
-mno-sse included, once with the compiler's defaults) and called through ctypes."""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hyperenclave.sdk.build import ENCLAVE_CFLAGS, INCLUDE_DIRS, TRTS_DIR
from hyperenclave.vmm.keys import aes_cmac

KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
# SP 800-38A F.1-F.5 and RFC 4493 section 4 share this key and message
MESSAGE = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
                        "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
# the enclave's flags minus what a shared library cannot have
ENCLAVE_FLAGS = [f for f in ENCLAVE_CFLAGS if f not in ("-fPIE", "-fvisibility=hidden")]


def has_aes_ni() -> bool:
    try:
        return " aes " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not has_aes_ni(), reason="the host CPU has no AES-NI")


@pytest.fixture(scope="module", params=["enclave-flags", "host-defaults"])
def lib(request, tmp_path_factory) -> ctypes.CDLL:
    out = tmp_path_factory.mktemp("crypto") / f"crypto-{request.param}.so"
    flags = ENCLAVE_FLAGS if request.param == "enclave-flags" else ["-O2"]
    subprocess.run([os.environ.get("CC", "gcc"), *flags, "-fPIC", "-shared",
                    *(f"-I{d}" for d in INCLUDE_DIRS), str(TRTS_DIR / "crypto.c"), "-o", str(out)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(out))


def encrypt(lib: ctypes.CDLL, key: bytes, block: bytes) -> bytes:
    out = ctypes.create_string_buffer(16)
    lib.he_aes128_encrypt(key, block, out)
    return out.raw


def ctr(lib: ctypes.CDLL, key: bytes, counter: bytes, data: bytes) -> bytes:
    out = ctypes.create_string_buffer(len(data))
    lib.he_aes128_ctr(key, counter, data, out, ctypes.c_size_t(len(data)))
    return out.raw


def cmac(lib: ctypes.CDLL, key: bytes, data: bytes) -> bytes:
    out = ctypes.create_string_buffer(16)
    lib.he_aes128_cmac(key, data, ctypes.c_size_t(len(data)), out)
    return out.raw


@pytest.mark.parametrize("key, plaintext, ciphertext", [
    ("000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff",
     "69c4e0d86a7b0430d8cdb78070b4c55a"),                                     # FIPS-197 C.1
    ("2b7e151628aed2a6abf7158809cf4f3c", "3243f6a8885a308d313198a2e0370734",
     "3925841d02dc09fbdc118597196a0b32"),                                     # FIPS-197 B
])
def test_aes128_matches_fips_197(lib, key: str, plaintext: str, ciphertext: str) -> None:
    assert encrypt(lib, bytes.fromhex(key), bytes.fromhex(plaintext)).hex() == ciphertext


def test_ctr_mode_matches_sp800_38a_f5(lib) -> None:
    counter = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    expected = ("874d6191b620e3261bef6864990db6ce" "9806f66b7970fdff8617187bb9fffdff"
                "5ae4df3edbd5d35e5b4f09020db03eab" "1e031dda2fbe03d1792170a0f3009cee")
    assert ctr(lib, KEY, counter, MESSAGE).hex() == expected
    assert ctr(lib, KEY, counter, bytes.fromhex(expected)) == MESSAGE, "CTR decrypts itself"


@pytest.mark.parametrize("n", [1, 15, 17, 37])
def test_ctr_handles_partial_blocks_and_carries_across_the_whole_counter(lib, n: int) -> None:
    counter = bytes.fromhex("00ffffffffffffffffffffffffffffff")     # the carry reaches byte 0
    data = bytes(range(n))
    reference = Cipher(algorithms.AES(KEY), modes.CTR(counter)).encryptor().update(data)
    assert ctr(lib, KEY, counter, data) == reference


@pytest.mark.parametrize("n, mac", [
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
])
def test_cmac_matches_rfc_4493(lib, n: int, mac: str) -> None:
    assert cmac(lib, KEY, MESSAGE[:n]).hex() == mac


@pytest.mark.parametrize("n", [1, 15, 31, 32, 33, 100])
def test_cmac_agrees_with_the_monitors_key_derivation(lib, n: int) -> None:
    data = bytes((7 * i + 3) & 0xFF for i in range(n))
    assert cmac(lib, KEY, data) == aes_cmac(KEY, data)


def test_equal_ct_compares_every_byte(lib) -> None:
    assert lib.he_equal_ct(b"abcdef", b"abcdef", ctypes.c_size_t(6)) == 1
    assert lib.he_equal_ct(b"abcdef", b"abcdeF", ctypes.c_size_t(6)) == 0
    assert lib.he_equal_ct(b"Xbcdef", b"abcdef", ctypes.c_size_t(6)) == 0
    assert lib.he_equal_ct(b"x", b"y", ctypes.c_size_t(0)) == 1
