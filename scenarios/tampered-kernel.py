"""The machine boots once as deployed, then with one byte of its kernel changed: the monitor
cannot unseal its root secret, and remote attestation against the deployer's reference
measurements is refused (boot_measurements: PCR 9)."""

from __future__ import annotations

import dataclasses

from hyperenclave.scenario import ScenarioContext, attest_tampered_boot
from hyperenclave.session import boot_images

#: a string of the kernel's shell: the tampered kernel still boots and behaves
GENUINE, TAMPERED = b"type a program path", b"Type a program path"


def run(ctx: ScenarioContext) -> None:
    genuine = boot_images(rc=["/bin/sysctl -w dev.hyper_enclave.enabled=1"])
    assert genuine.kernel.count(GENUINE) == 1
    tampered = dataclasses.replace(genuine, kernel=genuine.kernel.replace(GENUINE, TAMPERED))
    t = attest_tampered_boot(ctx, genuine, {"images": tampered}, pcr=9, what="kernel")
    ctx.check("the tampered host still runs programs", "Hello" in t.sh("/bin/hello").output)
