"""EGETKEY's keys and EREPORT's MAC: SGX semantics, keyed from one per-platform root secret.

Key derivation follows the SGX SDK's model of the hardware (`sdk/simulation/tinst/deriv.h`,
../shared/reference/attestation-formats.md section 3): key = AES-128-CMAC(base key of the key
name, derivation data), the derivation data being `dd_seal_key_t` (176 bytes) or
`dd_report_key_t` (120 bytes) with their natural-alignment offsets. Where the SDK's simulation
uses constant base keys and a constant OWNEREPOCH, here both come from the platform's root
secret: base key = AES-CMAC(root[0:16], "HyperEnclave base key" || u16 key name), OWNEREPOCH =
root[16:32]. Whoever holds `PlatformKeys` holds every enclave key of the platform: only the
monitor creates one (the root secret is its to keep; issue 5 seals it in the TPM).

The leaf semantics (SDM Vol. 3D EGETKEY/EREPORT): REPORT keys bind the enclave's own MRENCLAVE
and ATTRIBUTES; SEAL keys bind MRENCLAVE and/or MRSIGNER as KEYPOLICY asks, always ISVPRODID and
the ISVSVN/CPUSVN the request names, which may not be newer than the enclave's/CPU's
(SGX_INVALID_ISVSVN, SGX_INVALID_CPUSVN), so an enclave can get the keys of its older versions
but not of newer ones.
"""

from __future__ import annotations

import hmac
import secrets
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from .sgx import (AttributeFlags, Attributes, KeyName, KeyPolicy, KeyRequest, Report, ReportBody,
                  Secs, SgxError, SgxErrorCode, SgxFault, TargetInfo)

ROOT_SECRET_SIZE = 32
KEY_SIZE = 16
#: The emulated CPU's security version (SDM: CPUSVN, 16 bytes of per-component SVNs). Requests
#: may name it or an older one component by component.
CPU_SVN = bytes([2, 2]) + bytes(14)
BASE_KEY_LABEL = b"HyperEnclave base key"

#: dd_seal_key_t: key_name, tmp_attr, attribute_mask, owner_epoch, cpu_svn, isv_svn,
#: isv_prod_id, mrenclave, mrsigner, key_id (natural alignment: 6 bytes after key_name, 4 at the end)
DD_SEAL_KEY = struct.Struct("<H6x16s16s16s16sHH32s32s32s4x")
#: dd_report_key_t: key_name, attributes, owner_epoch, mrenclave, cpu_svn, key_id
DD_REPORT_KEY = struct.Struct("<H6x16s16s32s16s32s")
assert DD_SEAL_KEY.size == 176 and DD_REPORT_KEY.size == 120


#: KEYREQUEST.KEYPOLICY bits this CPU offers (the KSS bits 2-5 it does not: #GP).
OFFERED_KEY_POLICY = KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-128-CMAC (NIST SP 800-38B, RFC 4493)."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def dd_report_key(attributes: Attributes, owner_epoch: bytes, mr_enclave: bytes, cpu_svn: bytes,
                  key_id: bytes) -> bytes:
    """The REPORT key's derivation data for the enclave (MRENCLAVE, ATTRIBUTES) it belongs to."""
    return DD_REPORT_KEY.pack(KeyName.REPORT_KEY, attributes.pack(), owner_epoch, mr_enclave,
                              cpu_svn, key_id)


def dd_seal_key(secs: Secs, request: KeyRequest, owner_epoch: bytes) -> bytes:
    """The SEAL key's derivation data: identity fields only where KEYPOLICY names them."""
    mask = request.attribute_mask
    tmp_attr = Attributes((mask.flags | AttributeFlags.INIT | AttributeFlags.DEBUG)
                          & secs.attributes.flags, mask.xfrm & secs.attributes.xfrm)
    policy = KeyPolicy(request.key_policy)
    return DD_SEAL_KEY.pack(
        KeyName.SEAL_KEY, tmp_attr.pack(), mask.pack(), owner_epoch, request.cpu_svn,
        request.isv_svn, secs.isv_prod_id,
        secs.mr_enclave if KeyPolicy.MRENCLAVE in policy else bytes(32),
        secs.mr_signer if KeyPolicy.MRSIGNER in policy else bytes(32), request.key_id)


def _svn_newer(requested: bytes, current: bytes) -> bool:
    """CPUSVN is compared component by component (one byte each)."""
    return any(r > c for r, c in zip(requested, current))


@dataclass(frozen=True)
class PlatformKeys:
    """The key hierarchy of one platform, rooted in `root_secret` (32 bytes).

    `report_key_id` is SGX's CR_REPORT_KEYID: random per power-on, copied into every REPORT.KEYID
    and fed to the REPORT key derivation, so a target derives the MAC key with the KEYID the
    REPORT carries."""

    root_secret: bytes = field(repr=False)
    cpu_svn: bytes = CPU_SVN
    report_key_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def __post_init__(self) -> None:
        if not isinstance(self.root_secret, bytes) or len(self.root_secret) != ROOT_SECRET_SIZE:
            raise ValueError(f"the platform root secret must be {ROOT_SECRET_SIZE} bytes")
        if len(self.cpu_svn) != 16 or len(self.report_key_id) != 32:
            raise ValueError("CPUSVN is 16 bytes and the report KEYID 32 bytes")

    @property
    def owner_epoch(self) -> bytes:
        return self.root_secret[16:]

    def base_key(self, name: KeyName) -> bytes:
        return aes_cmac(self.root_secret[:16], BASE_KEY_LABEL + struct.pack("<H", name))

    def report_key(self, mr_enclave: bytes, attributes: Attributes, key_id: bytes) -> bytes:
        """The REPORT key of the enclave (mr_enclave, attributes)."""
        return aes_cmac(self.base_key(KeyName.REPORT_KEY),
                        dd_report_key(attributes, self.owner_epoch, mr_enclave, self.cpu_svn,
                                      key_id))

    # ------------------------------------------------------------------ the leaves
    def egetkey(self, secs: Secs, request: KeyRequest) -> bytes:
        """EGETKEY for the enclave of `secs`. Raises SgxError (RAX code) or SgxFault (#GP)."""
        if request.key_policy & ~int(OFFERED_KEY_POLICY):
            raise SgxFault.gp(f"KEYREQUEST.KEYPOLICY {request.key_policy:#x} has bits this CPU "
                              "does not support")
        name = request.key_name
        if name == KeyName.REPORT_KEY:
            return self.report_key(secs.mr_enclave, secs.attributes, request.key_id)
        if name == KeyName.SEAL_KEY:
            if request.isv_svn > secs.isv_svn:
                raise SgxError(SgxErrorCode.SGX_INVALID_ISVSVN, f"KEYREQUEST.ISVSVN "
                               f"{request.isv_svn} is newer than the enclave's {secs.isv_svn}")
            if _svn_newer(request.cpu_svn, self.cpu_svn):
                raise SgxError(SgxErrorCode.SGX_INVALID_CPUSVN, f"KEYREQUEST.CPUSVN "
                               f"{request.cpu_svn.hex()} is newer than the CPU's "
                               f"{self.cpu_svn.hex()}")
            return aes_cmac(self.base_key(KeyName.SEAL_KEY),
                            dd_seal_key(secs, request, self.owner_epoch))
        wanted = {KeyName.EINITTOKEN_KEY: AttributeFlags.EINITTOKENKEY,
                  KeyName.PROVISION_KEY: AttributeFlags.PROVISIONKEY,
                  KeyName.PROVISION_SEAL_KEY: AttributeFlags.PROVISIONKEY}.get(name)
        if wanted is not None and not secs.attributes.flags & wanted:
            raise SgxError(SgxErrorCode.SGX_INVALID_ATTRIBUTE,
                           f"{KeyName(name).name} needs ATTRIBUTES.{wanted.name}")
        raise SgxError(SgxErrorCode.SGX_INVALID_KEYNAME,
                       f"KEYNAME {name} is not offered (HyperEnclave: REPORT and SEAL keys only)")

    def ereport(self, secs: Secs, target: TargetInfo, report_data: bytes) -> Report:
        """EREPORT: the enclave's identity from its SECS, MACed with the target's REPORT key."""
        body = ReportBody(cpu_svn=self.cpu_svn, misc_select=secs.misc_select,
                          attributes=secs.attributes, mr_enclave=secs.mr_enclave,
                          mr_signer=secs.mr_signer, config_id=secs.config_id,
                          isv_prod_id=secs.isv_prod_id, isv_svn=secs.isv_svn,
                          config_svn=secs.config_svn, report_data=bytes(report_data))
        key = self.report_key(target.mr_enclave, target.attributes, self.report_key_id)
        return Report(body, self.report_key_id, aes_cmac(key, body.pack()))

    def verify_report(self, secs: Secs, report: Report) -> bool:
        """HyperEnclave's VerifyReport: is `report` MACed for the enclave of `secs`?"""
        return self.verify_report_for(TargetInfo(secs.mr_enclave, secs.attributes), report)

    def verify_report_for(self, target: TargetInfo, report: Report) -> bool:
        """Is `report` MACed for `target` (the quote hypercall checks its pseudo-QE's)?"""
        key = self.report_key(target.mr_enclave, target.attributes, report.key_id)
        return hmac.compare_digest(aes_cmac(key, report.body.pack()), report.mac)
