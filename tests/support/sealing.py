"""The trusted runtime's sealed-blob format (sdk/include/he_trts.h), re-implemented in Python so
tests can open what an enclave sealed with the key the monitor's EGETKEY gives that enclave:
header | AES-128-CTR ciphertext | AES-CMAC tag over header and ciphertext."""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hyperenclave.sdk.signer import SignedEnclave
from hyperenclave.vmm.keys import KeyName, PlatformKeys, aes_cmac
from hyperenclave.vmm.sgx import AttributeFlags, Attributes, KeyRequest, Secs

MAGIC = 0x314C5348                               # "HSL1"
HEADER = struct.Struct("<IHH16s16sI")
TAG_SIZE = 16
OVERHEAD = HEADER.size + TAG_SIZE
FLAGS_MASK, MISC_MASK = 0xFF0000000000000B, 0xF0000000      # the SGX SDK's sealing defaults


@dataclass(frozen=True)
class SealedBlob:
    policy: int
    isv_svn: int
    cpu_svn: bytes
    key_id: bytes
    ciphertext: bytes
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> SealedBlob:
        if len(raw) < OVERHEAD:
            raise ValueError(f"a sealed blob has at least {OVERHEAD} bytes, not {len(raw)}")
        magic, policy, isv_svn, cpu_svn, key_id, size = HEADER.unpack_from(raw)
        if magic != MAGIC or size != len(raw) - OVERHEAD:
            raise ValueError("not a sealed blob (magic or payload size)")
        return cls(policy, isv_svn, cpu_svn, key_id, raw[HEADER.size:-TAG_SIZE], raw)

    def key_request(self) -> KeyRequest:
        """The KEYREQUEST the enclave makes for this blob."""
        return KeyRequest(key_name=KeyName.SEAL_KEY, key_policy=self.policy, isv_svn=self.isv_svn,
                          cpu_svn=self.cpu_svn, attribute_mask=Attributes(FLAGS_MASK, 0),
                          key_id=self.key_id + bytes(16), misc_mask=MISC_MASK)

    def open(self, seal_key: bytes) -> bytes:
        """The plaintext, if the tag verifies under `seal_key` (else ValueError)."""
        enc = aes_cmac(seal_key, b"HE seal v1 encryption key")
        mac = aes_cmac(seal_key, b"HE seal v1 MAC key")
        if not hmac.compare_digest(aes_cmac(mac, self.raw[:-TAG_SIZE]), self.raw[-TAG_SIZE:]):
            raise ValueError("the tag does not verify")
        return Cipher(algorithms.AES(enc), modes.CTR(bytes(16))).decryptor().update(self.ciphertext)


def enclave_secs(enclave: SignedEnclave) -> Secs:
    """The identity fields of the SECS EINIT gives this signed enclave (what EGETKEY reads)."""
    ss = enclave.sigstruct
    attributes = enclave.layout.attributes
    return Secs(attributes=Attributes(attributes.flags | AttributeFlags.INIT, attributes.xfrm),
                mr_enclave=enclave.mrenclave, mr_signer=enclave.mrsigner,
                isv_prod_id=ss.isv_prod_id, isv_svn=ss.isv_svn)


def open_blob(keys: PlatformKeys, enclave: SignedEnclave, raw: bytes) -> bytes:
    """Open a blob `enclave` sealed, with the platform's key hierarchy (the monitor's)."""
    blob = SealedBlob.parse(raw)
    return blob.open(keys.egetkey(enclave_secs(enclave), blob.key_request()))
