"""Measured boot of the mock Linux host: run its user programs, power off, export evidence."""

from __future__ import annotations

from pathlib import Path

from hyperenclave.machine import Machine, MachineConfig


def run(config: MachineConfig, out: Path, timeout: float) -> bool:
    with Machine(config) as machine:
        machine.boot()
        result = machine.run(timeout=timeout)
        machine.export_evidence(out)
        pcrs = machine.pcrs()
    print()
    print(f"== guest {result.state} after {result.seconds:.2f} s"
          + (f": {result.reason}" if result.state != "poweroff" else ""))
    for i in (0, 4, 8, 9):
        print(f"   PCR{i:<2} {pcrs[i].hex()}")
    print(f"   evidence: {out}/serial.log eventlog.bin pcrs.json")
    return result.state == "poweroff"
