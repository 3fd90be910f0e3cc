"""A DMA-capable device driven by the host reads and writes host RAM (allowed), then EPC and
monitor memory (blocked by the IOMMU, logged with VT-d fault reasons), also while an enclave
holds a secret there."""

from __future__ import annotations

from hyperenclave.platform.firmware.bootparam import LOADER_ADDR
from hyperenclave.scenario import ScenarioContext

SECRET = "dma-me-if-you-can"


def run(ctx: ScenarioContext) -> None:
    s = ctx.start(rc=["/bin/sysctl -w dev.hyper_enclave.enabled=1"])
    # control: the boot loader's page of ordinary host RAM holds known bytes
    ok = s.sh(f"/bin/attack dma_read {LOADER_ADDR:#x} 64").output
    ctx.check("DMA reads host RAM (the boot loader's first bytes)",
              "status DONE" in ok and s.machine.images.loader[:64].hex() in ok, ok.strip())
    layout = s.monitor.layout
    epc, hv = (layout.epc_start, layout.epc_size), (layout.hv_start, layout.hv_size)
    s.sh(f"/bin/secret_keeper_app {SECRET} --hold 8 {SECRET} &")
    where = s.wait_for(r"the secret lives at (0x[0-9a-f]+)")
    ctx.note(f"secret keeper holds its secret at {where.group(1)}; EPC at {epc[0]:#x}, "
             f"monitor memory at {hv[0]:#x}")
    faults_before = len(s.monitor.dma_faults)
    attempts = {
        "DMA read of all EPC pages in use": [f"/bin/attack dma_read {epc[0] + off:#x} 4096"
                                             for off in range(0, 0x10000, 0x1000)],
        "DMA write into EPC": [f"/bin/attack dma_write {epc[0]:#x} 0x4141414141414141"],
        "DMA read of monitor memory": [f"/bin/attack dma_read {hv[0] + 0x800000:#x} 64"],
        "DMA write into monitor memory": [f"/bin/attack dma_write {hv[0] + 0x800000:#x} 7"],
    }
    for what, commands in attempts.items():
        outs = [s.sh(c, check=False).output for c in commands]
        blocked = all("status FAULT" in o for o in outs)
        leaked = any(SECRET.encode().hex() in o or SECRET in o for o in outs)
        ctx.check(f"{what}: blocked by the IOMMU, nothing leaked", blocked and not leaked,
                  outs[-1].strip())
    last_attack = len(s.serial())
    s.sh("wait", timeout=60)
    ctx.check("the enclave was alive during every transfer (its guess came after them)",
              s.serial().find('guess "', last_attack) > 0)
    ctx.check("every blocked transfer is in the monitor's fault log",
              len(s.monitor.dma_faults) - faults_before == 19)
    ctx.check("the enclave's secret is intact", f'guess "{SECRET}": right' in s.serial())
