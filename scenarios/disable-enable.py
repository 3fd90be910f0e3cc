"""Demote the host under the monitor, give the CPU back (HC_DISABLE, memory scrubbed), demote it
again: each launch measured into PCR 12, CPUID shows who owns the CPU."""

from __future__ import annotations

from hyperenclave.scenario import ScenarioContext

ENABLE = "/bin/sysctl -w dev.hyper_enclave.enabled=1"
DISABLE = "/bin/sysctl -w dev.hyper_enclave.enabled=0"


def hypervisor_bit(s) -> str:
    return s.sh("/bin/cpuid").output.split("hypervisor present bit ")[1][0]


def run(ctx: ScenarioContext) -> None:
    s = ctx.start(rc=[])
    ctx.check("native host: no hypervisor bit", hypervisor_bit(s) == "0")
    for launch in (1, 2):
        s.sh(ENABLE)
        ctx.check(f"launch {launch}: monitor running", s.monitor.enabled)
        ctx.check(f"launch {launch}: the host sees the hypervisor bit", hypervisor_bit(s) == "1")
        ctx.check(f"launch {launch}: CPUID exits counted", s.exits().get("CPUID", 0) > 0)
        s.sh(DISABLE)
        ctx.check(f"launch {launch}: disabled, the host runs natively again",
                  not s.monitor.enabled and hypervisor_bit(s) == "0")
    events = [e for e in s.eventlog() if e.pcr == 12]
    ctx.check("PCR 12 holds one event per launch", len(events) == 2, f"{len(events)} events")
    ctx.check("both launches measured the same monitor image", events[0].digest == events[1].digest)
    ctx.note(f"PCR12 {s.pcrs()[12].hex()}")
