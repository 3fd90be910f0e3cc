"""Run control while the guest runs: the console stays usable, `stop` holds the guest at a
slice boundary with its clock frozen (a guest that sleeps does not see the pause), and
`until serial` stops at a console line."""

from __future__ import annotations

import re
import time

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from tests.support.console import ConsoleSession

pytestmark = pytest.mark.integration

SLEEP_MS = 1500
PAUSE_S = 1.0


def test_stop_freezes_the_guest_clock_and_the_console_works_while_it_runs(tmp_path) -> None:
    images = default_boot_images(extra_files={"/etc/rc": f"/bin/sleep {SLEEP_MS}\n".encode()})
    with Machine(MachineConfig(name="runctl", state_dir=tmp_path / "state"), images) as machine:
        machine.boot()
        s = ConsoleSession(machine)
        try:
            assert "stopped: serial at rip" in s.run("until serial 'Run /bin/sleep'")
            assert machine.last_line().endswith("Run /bin/sleep as init process")
            assert s.run("cont") == "running\n"
            time.sleep(0.2)
            assert "VM status: running" in s.run("info status")
            assert "RIP=" in s.run("info registers"), "a look while running"
            assert "VM status: running" in s.run("info status"), "and it goes on"
            assert re.match(r"stopped: stop at rip 0x[0-9a-f]+: stopped by the console",
                            s.run("stop"))
            time.sleep(PAUSE_S)
            assert s.run("cont") == "running\n"
            live = s.run("serial -f")              # follows the console until the guest stops
            assert re.search(r"^sleep: slept \d+ ms", live, re.M)
            assert live.rstrip().endswith("(guest finished: poweroff: requested by the guest)")
        finally:
            s.close()
        slept = re.search(r"sleep: slept (\d+) ms", machine.serial_text())
    assert slept, "the guest finished its sleep"
    assert SLEEP_MS <= int(slept.group(1)) < SLEEP_MS + 1000 * PAUSE_S - 200, \
        "the second the console held the guest did not pass for it"
