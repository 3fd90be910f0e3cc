"""Measured boot of the mock Linux host, which demotes itself under the monitor and runs the SDK's
hello enclave (create, ECALL add(2, 40) with an OCALL print, destroy); evidence to --out."""

from __future__ import annotations

from hyperenclave.scenario import ScenarioContext


def run(ctx: ScenarioContext) -> None:
    s = ctx.start()          # the image's /etc/rc: sysctl enable, hello_app 2 40, ... then a shell
    monitor = s.monitor
    ctx.check("the host was demoted under the monitor", monitor.enabled and monitor.launches == 1)
    hello = [line.split("hello_app: ", 1)[1] for line in s.serial().splitlines()
             if "hello_app: " in line]
    ctx.check("the hello enclave ran (ECALL add, OCALL print)", bool(hello), "no hello_app output")
    ctx.note("hello enclave: " + "; ".join(hello))
    ctx.note("VM exits: " + ", ".join(f"{r} {n}" for r, n in s.exits().items()))
    pcrs = s.pcrs()
    for i in (0, 4, 8, 9, 12):
        ctx.note(f"PCR{i:<2} {pcrs[i].hex()}")
