"""The host tries every route it has to the secret keeper enclave's secret while the enclave is
alive (/dev/mem, the kernel's direct map, a new kernel alias, a remapped user page, DMA): each
read gets zeros or a fault, the secret never appears, and the enclave still answers afterwards."""

from __future__ import annotations

import re

from hyperenclave.platform.firmware.bootparam import LOADER_ADDR
from hyperenclave.scenario import ScenarioContext

SECRET = "S3cr3t-Value-4711"
HOLD_S = 8


def run(ctx: ScenarioContext) -> None:
    s = ctx.start(rc=["/bin/sysctl -w dev.hyper_enclave.enabled=1"])
    s.sh(f"/bin/secret_keeper_app {SECRET} --hold {HOLD_S} {SECRET} not-it &")
    where = s.wait_for(r"the secret lives at (0x[0-9a-f]+) \((\d+) bytes\)", timeout=30)
    linear = int(where.group(1), 16)
    # The attacker knows where the secret is: the EPC page that backs its linear page.
    epcm = s.monitor.enclaves.epcm
    pages = [pa for pa in range(epcm.start, epcm.start + epcm.size, 4096)
             if (entry := epcm.get(pa)) is not None and entry.linear_address == linear & ~0xFFF]
    ctx.check("the secret's EPC page is known to the attacker", len(pages) == 1, str(pages))
    pa = pages[0] + (linear & 0xFFF)
    routes = {
        "/dev/mem mapping (user)": "/bin/memattack read {:#x}",
        "remapped user PTE": "/bin/memattack remap-read {:#x}",
        "kernel direct map": "/bin/attack read {:#x} 64",
        "new kernel alias mapping": "/bin/attack alias_read {:#x} 64",
        "DMA by a device": "/bin/attack dma_read {:#x} 64",
    }
    secret_forms = (SECRET, SECRET.encode().hex())
    known = s.machine.images.loader[:32].hex()      # control: ordinary RAM with known bytes
    for route, command in routes.items():
        control = s.sh(command.format(LOADER_ADDR), check=False).output
        out = s.sh(command.format(pa), check=False).output
        leaked = any(form in out for form in secret_forms)
        ctx.check(f"{route}: reads ordinary RAM, but nothing of the secret",
                  known in control and not leaked,
                  f"control: {control.strip().splitlines()[-1:]}, secret: "
                  f"{out.strip().splitlines()[-1:]}")
    last_attack = len(s.serial())
    s.sh("wait", timeout=60)
    text = s.serial()
    ctx.check("the enclave was alive during every attack (its guesses came after them)",
              text.find('guess "', last_attack) > 0)
    ctx.check("the enclave still knows its secret after the attacks",
              f'guess "{SECRET}": right' in text and 'guess "not-it": wrong' in text)
    ctx.check("the host survived: the secret keeper exited normally",
              bool(re.search(r"/bin/secret_keeper_app\[\d+\] exited with status 0", text)))
    violations = sum(1 for line in s.monitor.log_lines if "EPT violation" in line)
    ctx.note(f"secret at linear {linear:#x} = EPC {pa:#x}; {len(s.monitor.dma_faults)} DMA "
             f"faults and {violations} EPT-violation log lines")
