"""The machine boots once as deployed, then with one byte of its kernel changed: the monitor
cannot unseal its root secret, and remote attestation against the deployer's reference
measurements is refused (boot_measurements: PCR 9)."""

from __future__ import annotations

import dataclasses

from hyperenclave.scenario import ScenarioContext
from hyperenclave.sdk.samples import sign_sample
from hyperenclave.session import boot_images

ENABLE = ["/bin/sysctl -w dev.hyper_enclave.enabled=1"]
#: a string of the kernel's shell: the tampered kernel still boots and behaves
GENUINE, TAMPERED = b"type a program path", b"Type a program path"


def failed_checks(verdict: dict) -> dict[str, str]:
    return {c["name"]: c.get("reason", "") for c in verdict["checks"] if not c["ok"]}


def run(ctx: ScenarioContext) -> None:
    genuine = boot_images(rc=ENABLE)
    hello = sign_sample("hello")
    s = ctx.start(images=genuine, evidence="genuine")
    verdict = s.attest("/bin/hello_app", expect=hello, out=ctx.out / "genuine")
    ctx.check("the deployed boot attests", verdict["ok"], str(failed_checks(verdict)))
    s.stop()

    assert genuine.kernel.count(GENUINE) == 1
    tampered = dataclasses.replace(genuine, kernel=genuine.kernel.replace(GENUINE, TAMPERED))
    t = ctx.start(images=tampered, evidence="tampered")
    unseal = [line for line in t.monitor.log_lines if "root secret unseal failed" in line]
    ctx.check("the monitor cannot unseal its root secret and says so", bool(unseal))
    ctx.check("the tampered host still runs programs", "Hello" in t.sh("/bin/hello").output)
    verdict = t.attest("/bin/hello_app", expect=hello, out=ctx.out / "tampered",
                       reference=genuine)
    failed = failed_checks(verdict)
    ctx.check("remote attestation is refused", not verdict["ok"])
    ctx.check("the verifier names the changed kernel measurement (PCR 9)",
              "boot_measurements" in failed and "PCR 9 " in failed["boot_measurements"],
              str(failed))
    ctx.note(f"refused by: {', '.join(failed)}")
