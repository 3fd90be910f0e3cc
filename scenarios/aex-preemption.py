"""A long enclave loop is preempted by the host's timer (AEX into the SSA, ERESUME at the AEP)
while the host keeps scheduling other programs; the result equals an uninterrupted run."""

from __future__ import annotations

import re

from hyperenclave.scenario import ScenarioContext

ITERATIONS = 30_000_000


def run(ctx: ScenarioContext) -> None:
    s = ctx.start(rc=["/bin/sysctl -w dev.hyper_enclave.enabled=1"])
    spin = f"/bin/spinner_app {ITERATIONS} &"
    s.sh(spin)
    hello = s.sh("/bin/hello")                  # runs while the enclave spins in the background
    s.sh("wait")
    m = s.wait_for(r"spinner_app: (\d+) iterations: checksum (0x[0-9a-f]+) in the enclave after "
                   r"(\d+) AEX, (0x[0-9a-f]+) outside: (\w+)")
    ctx.check("the enclave's result equals the loop run outside it", m.group(5) == "equal",
              m.group(0))
    aex = int(m.group(3))
    ctx.check("the timer preempted the enclave (AEX, ERESUME)", aex > 0, f"{aex} AEX")
    text = s.serial()
    ctx.check("the host ran another program while the enclave spun",
              "Hello from user space" in hello.output
              and text.index("Hello from user space", text.index(spin))
              < text.index(m.group(0)))
    ctx.check("the spinner exited with status 0",
              bool(re.search(r"/bin/spinner_app\[\d+\] exited with status 0", text)))
    ctx.note(f"{ITERATIONS} iterations, {aex} AEX, checksum {m.group(2)}")
