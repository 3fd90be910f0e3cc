"""Measured boot of the mock Linux host, which demotes itself under the monitor and runs the SDK's
hello enclave (ECALL add with an OCALL print); then remote attestation of that enclave, appraised
by the open verifier (verdict.json); evidence to --out."""

from __future__ import annotations

from hyperenclave.scenario import ScenarioContext
from hyperenclave.sdk.samples import sign_sample
from hyperenclave.verifier import failures


def run(ctx: ScenarioContext) -> None:
    s = ctx.start()          # the image's /etc/rc: sysctl enable, hello_app 2 40, ... then a shell
    monitor = s.monitor
    ctx.check("the host was demoted under the monitor", monitor.enabled and monitor.launches == 1)
    hello = [line.split("hello_app: ", 1)[1] for line in s.serial().splitlines()
             if "hello_app: " in line]
    ctx.check("the hello enclave ran: ECALL add(2, 40) = 42 after its OCALL print",
              "ECALL add(2, 40) = 42" in hello and any("OCALL print" in h for h in hello),
              "; ".join(hello) or "no hello_app output")
    verdict = s.attest("/bin/hello_app", expect=sign_sample("hello"), out=ctx.out)
    ctx.check("remote attestation of the hello enclave verified", verdict["ok"],
              str(failures(verdict)))
    ctx.note(f"attested MRENCLAVE {verdict['enclave']['mr_enclave']}")
    ctx.note("VM exits: " + ", ".join(f"{r} {n}" for r, n in s.exits().items()))
    pcrs = s.pcrs()
    for i in (0, 4, 8, 9, 12, 13, 14):
        ctx.note(f"PCR{i:<2} {pcrs[i].hex()}")
