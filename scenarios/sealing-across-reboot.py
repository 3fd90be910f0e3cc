"""Seal a secret in an enclave, reboot: it unseals equal; boot another kernel command line: the TPM
keeps the monitor's root secret, so the sealed blob no longer opens."""

from __future__ import annotations

from hyperenclave.machine import DEFAULT_CMDLINE
from hyperenclave.scenario import ScenarioContext
from hyperenclave.session import CommandResult, Session

ENABLE = "/bin/sysctl -w dev.hyper_enclave.enabled=1"
SECRET = "the-launch-code-is-0000"


def unseal(s: Session, blob: str) -> CommandResult:
    return s.sh(f"/bin/sealer_app unseal {blob}", check=False)


def run(ctx: ScenarioContext) -> None:
    # one machine (name and TPM state) across the three boots
    options = {"name": ctx.config.name, "state_dir": ctx.config.state_dir, "rc": [ENABLE]}
    with ctx.start(evidence="first-boot", **options) as s:
        out = s.sh(f"/bin/sealer_app seal {SECRET}").output
        blob = out.split("sealer_app: sealed ")[1].split()[0]
        ctx.note(f"sealed blob ({len(blob) // 2} bytes): {blob}")
        ctx.check("unsealed in the same boot", f'unsealed "{SECRET}"' in unseal(s, blob).output)
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
    ctx.note(f"changed command line: {cmdline!r} (default {DEFAULT_CMDLINE!r})")
