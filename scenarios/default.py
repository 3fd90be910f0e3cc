"""Measured boot of the mock Linux host, which demotes itself under the monitor (the
hyper_enclave driver, `sysctl -w dev.hyper_enclave.enabled=1`) and keeps running its programs
as a guest; power off, export evidence."""

from __future__ import annotations

from pathlib import Path

from hyperenclave.machine import Machine, MachineConfig


def run(config: MachineConfig, out: Path, timeout: float) -> bool:
    with Machine(config) as machine:
        machine.boot()
        result = machine.run(timeout=timeout)
        machine.export_evidence(out)
        pcrs = machine.pcrs()
        monitor = machine.monitor
    print()
    print(f"== guest {result.state} after {result.seconds:.2f} s"
          + (f": {result.reason}" if result.state != "poweroff" else ""))
    state = f"launched {monitor.launches}x, " + ("running" if monitor.enabled else "not running")
    exits = ", ".join(f"{r.name} {n}" for r, n in sorted(monitor.exit_counts.items()))
    print(f"   monitor: {state}; VM exits: {exits or 'none'}")
    for i in (0, 4, 8, 9, 12):
        print(f"   PCR{i:<2} {pcrs[i].hex()}")
    print(f"   evidence: {out}/serial.log eventlog.bin pcrs.json monitor.log")
    return result.state == "poweroff" and monitor.launches > 0
