"""Remote attestation from the verifier's side of a machine: a challenge for a host program that
runs an enclave, and the appraisal of what came back (the Session API and the console use it).

The host program (e.g. `/bin/hello_app --quote NONCE`, built on the SDK's `he_quote`) prints the
monitor's quote bundle as `WHO: quote <hex>` lines; the evidence directory gets the bundle's
files, the host's event log and PCRs; the open verifier appraises them against a policy
trusting the machine's attestation CA, the expected enclave and the deployer's reference
digests.
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .machine import Machine
    from .platform.firmware.measured_boot import BootImages

_QUOTE_LINE = re.compile(r"^\S+: quote ([0-9a-f]+)$", re.M)


class AttestationError(RuntimeError):
    """No evidence could be collected (the verdict on evidence is the verifier's, not this)."""


def new_nonce() -> str:
    """A fresh challenge, printable so it can travel on a command line."""
    return secrets.token_hex(16)


def appraise(machine: Machine, program_output: str, nonce: str, *,
             mr_enclave: list[bytes] | None = None, mr_signer: list[bytes] | None = None,
             out: str | Path | None = None,
             reference: BootImages | None = None) -> tuple[dict[str, Any], Path]:
    """The verdict on the quote in `program_output` for `nonce`, and the evidence directory
    (`out` or a new temporary one) holding the evidence, policy.json and verdict.json."""
    from .tpm.attestation_ca import CA_CERT_FILE
    from .verifier import Policy, verify
    from .verifier.reference import reference_digests, reference_policy
    from .vmm.image import build_monitor_image
    from .vmm.quote import QuoteBundle, QuoteFormatError
    hexdata = "".join(_QUOTE_LINE.findall(program_output))
    if not hexdata:
        raise AttestationError(f"no quote in the program's output:\n{program_output}")
    try:
        bundle = QuoteBundle.from_bytes(bytes.fromhex(hexdata))
    except (QuoteFormatError, ValueError) as e:
        raise AttestationError(f"a malformed quote bundle: {e}") from None
    if machine.monitor.tpm is None:
        raise AttestationError("the monitor has no TPM anchor (not launched?)")
    where = Path(out) if out else Path(tempfile.mkdtemp(prefix="hyperenclave-evidence-"))
    where.mkdir(parents=True, exist_ok=True)
    bundle.write(where)
    (where / "eventlog.bin").write_bytes(machine.eventlog_bytes())
    pcrs = {"sha256": {str(i): v.hex() for i, v in machine.pcrs().items()}}
    (where / "pcrs.json").write_text(json.dumps(pcrs, indent=2) + "\n")
    policy = reference_policy(
        nonce=nonce.encode(), ca_cert=machine.monitor.tpm.ca_dir / CA_CERT_FILE,
        mr_enclave=mr_enclave, mr_signer=mr_signer,
        digests=reference_digests(reference or machine.images, machine.config.cmdline,
                                  build_monitor_image()))
    (where / "policy.json").write_text(json.dumps(policy, indent=2) + "\n")
    return verify(where, Policy.from_json(policy)), where
