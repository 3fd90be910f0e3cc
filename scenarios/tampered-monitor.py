"""The machine boots once as deployed, then with a modified monitor image file (same code digest,
so the CPU still enters it): PCR 12 changes, the monitor cannot unseal its root secret, and
remote attestation against the deployer's reference measurements is refused."""

from __future__ import annotations

from hyperenclave.guest.build import MONITOR_PATH
from hyperenclave.scenario import ScenarioContext, attest_tampered_boot
from hyperenclave.session import boot_images
from hyperenclave.vmm.image import build_monitor_image

ENABLE = ["/bin/sysctl -w dev.hyper_enclave.enabled=1"]


def tamper(image: bytes) -> bytes:
    """One byte of the image's code manifest changed: the file (and PCR 12) differ, the header's
    code digest, which the CPU checks at VMXON, does not."""
    at = image.index(b"  hyperenclave/") + 2
    return image[:at] + b"H" + image[at + 1:]


def run(ctx: ScenarioContext) -> None:
    tampered = {"files": {MONITOR_PATH: tamper(build_monitor_image())}, "rc": ENABLE}
    t = attest_tampered_boot(ctx, boot_images(rc=ENABLE), tampered, pcr=12, what="monitor")
    ctx.check("the tampered monitor launched (its code digest is unchanged)", t.monitor.enabled)
