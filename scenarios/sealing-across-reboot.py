"""Seal a secret in an enclave; after a reboot it unseals equal, after a changed command line not.

The second boot unseals the monitor's root secret from the TPM, so EGETKEY gives the enclave the
same SEAL key; with another kernel command line (PCR 8) the TPM keeps the root secret and the
sealed blob no longer opens.

Runs on a new machine (fresh TPM state, removed at the end): a machine whose root secret was
sealed under an earlier build of the guest (PCR 9) or monitor (PCR 12) has no sealing keys to
show.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hyperenclave.scenario import ScenarioContext
from hyperenclave.session import CommandResult, Session

ENABLE = "/bin/sysctl -w dev.hyper_enclave.enabled=1"
SECRET = "the-launch-code-is-0000"


def unseal(s: Session, blob: str) -> CommandResult:
    return s.sh(f"/bin/sealer_app unseal {blob}", check=False)


def run(ctx: ScenarioContext) -> None:
    state = Path(tempfile.mkdtemp(prefix="hyperenclave-sealing-"))
    try:
        boots(ctx, {"name": f"{ctx.config.name}-sealing", "state_dir": state, "rc": [ENABLE]})
    finally:
        shutil.rmtree(state, ignore_errors=True)


def boots(ctx: ScenarioContext, options: dict[str, object]) -> None:
    """Three boots of one machine: seal, reboot, boot with another command line."""
    with ctx.start(evidence="first-boot", **options) as s:
        out = s.sh(f"/bin/sealer_app seal {SECRET}").output
        blob = out.split("sealer_app: sealed ")[1].split()[0]
        ctx.note(f"sealed blob ({len(blob) // 2} bytes): {blob}")
        result = unseal(s, blob)
        ctx.check("unsealed in the same boot", f'unsealed "{SECRET}"' in result.output,
                  result.output)
        s.reboot()
        ctx.check("the monitor unsealed its root secret from the TPM after the reboot",
                  any("root secret unsealed" in line for line in s.monitor.log_lines))
        result = unseal(s, blob)
        ctx.check("after the reboot the blob unseals to the same secret",
                  result.status == 0 and f'unsealed "{SECRET}"' in result.output, result.output)
    cmdline = f"{ctx.config.cmdline} sealing.changed=1"
    with ctx.start(evidence="changed-cmdline", cmdline=cmdline, **options) as s:
        ctx.check("with another command line the root secret stays sealed",
                  any("root secret unseal failed" in line for line in s.monitor.log_lines))
        result = unseal(s, blob)
        ctx.check("... and the blob is refused (SGX_ERROR_MAC_MISMATCH)",
                  result.status == 1 and "SGX_ERROR_MAC_MISMATCH" in result.output
                  and SECRET not in result.output, result.output)
    ctx.note(f"changed command line: {cmdline!r}")
