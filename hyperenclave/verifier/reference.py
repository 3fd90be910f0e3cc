"""Reference values a deployer derives from what it built, for the verifier's policy.

The verifier trusts measurements only as far as the deployer knows them: the loader, command
line, kernel and initramfs it booted (PCRs 4, 8, 9, as the firmware measures them) and the monitor
image it shipped (PCR 12, as the host driver measures it), the attestation CA it runs, and the
enclaves it signed. A tampered kernel or monitor then fails `boot_measurements`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hyperenclave.platform.firmware.measured_boot import BootImages
from hyperenclave.tpm.quote import QUOTE_PCRS

from .policy import Policy

#: EV_SEPARATOR's data, which the firmware also extends into PCRs 0-7.
SEPARATOR_DIGEST = hashlib.sha256(b"\0\0\0\0").digest()


def reference_digests(images: BootImages, cmdline: str, monitor_image: bytes) -> dict[int, list[bytes]]:
    """Every digest the genuine boot extends into PCRs 4, 8, 9 and 12 (firmware and driver)."""
    sha = lambda data: hashlib.sha256(data).digest()  # noqa: E731
    return {4: [sha(images.loader), SEPARATOR_DIGEST],
            8: [sha(cmdline.encode())],
            9: [sha(images.kernel), sha(images.initramfs)],
            12: [sha(monitor_image)]}


def ca_fingerprint(ca_cert_pem: Path) -> bytes:
    return x509.load_pem_x509_certificate(ca_cert_pem.read_bytes()).fingerprint(hashes.SHA256())


def reference_policy(*, nonce: bytes, ca_cert: Path, mr_enclave: list[bytes] | None = None,
                     mr_signer: list[bytes] | None = None,
                     digests: dict[int, list[bytes]] | None = None,
                     allow_debug: bool = False, **enclave: Any) -> dict[str, Any]:
    """The policy (JSON, for Policy.from_json and policy.json) for one challenge: this CA, this
    nonce, the quoted enclave by MRENCLAVE and/or MRSIGNER (plus `isv_prod_id`/`min_isv_svn` if
    given) and the boot's reference digests."""
    doc: dict[str, Any] = {
        "trusted_ca_sha256": ca_fingerprint(ca_cert).hex(),
        "nonce": nonce.hex(),
        "pcr_selection": {"sha256": list(QUOTE_PCRS)},
        "enclave": {"mr_enclave": [m.hex() for m in mr_enclave or []],
                    "mr_signer": [m.hex() for m in mr_signer or []],
                    "allow_debug": allow_debug, **enclave},
    }
    if digests:
        doc["reference_digests"] = {str(pcr): [d.hex() for d in ds] for pcr, ds in digests.items()}
    Policy.from_json(doc)          # refuse to hand out a policy the verifier would not take
    return doc
