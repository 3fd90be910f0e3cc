"""The machine boots once as deployed, then with a modified monitor image file (same code digest,
so the CPU still enters it): PCR 12 changes, the monitor cannot unseal its root secret, and
remote attestation against the deployer's reference measurements is refused."""

from __future__ import annotations

from hyperenclave.guest.build import MONITOR_PATH
from hyperenclave.scenario import ScenarioContext
from hyperenclave.sdk.samples import sign_sample
from hyperenclave.session import boot_images
from hyperenclave.vmm.image import build_monitor_image

ENABLE = ["/bin/sysctl -w dev.hyper_enclave.enabled=1"]


def failed_checks(verdict: dict) -> dict[str, str]:
    return {c["name"]: c.get("reason", "") for c in verdict["checks"] if not c["ok"]}


def tamper(image: bytes) -> bytes:
    """One byte of the image's code manifest changed: the file (and PCR 12) differ, the header's
    code digest, which the CPU checks at VMXON, does not."""
    at = image.index(b"  hyperenclave/") + 2
    return image[:at] + b"H" + image[at + 1:]


def run(ctx: ScenarioContext) -> None:
    genuine = boot_images(rc=ENABLE)
    hello = sign_sample("hello")
    s = ctx.start(images=genuine, evidence="genuine")
    verdict = s.attest("/bin/hello_app", expect=hello, out=ctx.out / "genuine")
    ctx.check("the deployed boot attests", verdict["ok"], str(failed_checks(verdict)))
    deployed_pcr12 = s.pcrs()[12]
    s.stop()

    t = ctx.start(files={MONITOR_PATH: tamper(build_monitor_image())}, rc=ENABLE,
                  evidence="tampered")
    ctx.check("the tampered monitor launched (its code digest is unchanged)", t.monitor.enabled)
    ctx.check("PCR 12 differs from the deployed boot's", t.pcrs()[12] != deployed_pcr12)
    unseal = [line for line in t.monitor.log_lines if "root secret unseal failed" in line]
    ctx.check("the monitor cannot unseal its root secret and says so", bool(unseal))
    verdict = t.attest("/bin/hello_app", expect=hello, out=ctx.out / "tampered",
                       reference=genuine)
    failed = failed_checks(verdict)
    ctx.check("remote attestation is refused", not verdict["ok"])
    ctx.check("the verifier names the changed monitor measurement (PCR 12)",
              "boot_measurements" in failed and "PCR 12 " in failed["boot_measurements"],
              str(failed))
    ctx.note(f"refused by: {', '.join(failed)}")
