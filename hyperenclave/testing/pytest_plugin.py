"""The pytest plugin shipped with hyperenclave (entry point `pytest11`): machines in users' tests.

Installing the package is enough; in a test file:

    import pytest

    def test_the_host_says_hello(machine):
        machine.run(timeout=60)
        assert "Hello from user space" in machine.serial_text()

    @pytest.mark.machine(memory="2G", rc=["/bin/sysctl -w dev.hyper_enclave.enabled=1"])
    def test_the_monitor_launches(machine):
        machine.run(timeout=60)
        assert machine.monitor.launches == 1

Fixtures
    machine          a booted Machine (not yet running), options from `@pytest.mark.machine(...)`
                     or from indirect parametrisation (`@pytest.mark.parametrize("machine",
                     [{"memory": "2G"}], indirect=True)`); shut down after the test.
    machine_factory  `machine_factory(**options)` -> an unbooted Machine; for several machines or
                     reboots of the same one (same `name` in one test = same TPM state).
    tpm              a TpmClient on a fresh swtpm of its own.
Options: every MachineConfig field (`memory` also as "2G"), plus `rc` (lines of /etc/rc, or a
string), `files` ({guest path: bytes}) and `programs` ({name: C/asm sources} built into /bin).

Every machine gets its own state directory under the test's tmp_path and its own swtpm port, so
tests run in parallel (pytest-xdist) without sharing anything. When a test fails, the report
carries each machine's serial log tail, its decoded event log and its VM-exit counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported when a fixture is used: loading the plugin must stay cheap
    from hyperenclave.machine import Machine
    from hyperenclave.tpm.client import TpmClient

SERIAL_TAIL_LINES = 60
_MACHINES = pytest.StashKey["list[Machine]"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "machine(**options): options of the `machine` fixture (MachineConfig fields, "
                   "rc=, files=, programs=)")
    config.addinivalue_line(
        "markers", "integration: boots a machine or starts swtpm (real Unicorn, swtpm, toolchain)")


class MachineFactory:
    """Builds Machines whose state lives under one test's tmp_path; shuts them all down."""

    def __init__(self, tmp_path: Path, machines: list[Machine]) -> None:
        self._tmp = tmp_path
        self._machines = machines

    def __call__(self, *, rc: str | list[str] | None = None, files: dict[str, bytes] | None = None,
                 programs: dict[str, object] | None = None, **options: Any) -> Machine:
        from hyperenclave.machine import Machine, MachineConfig
        from hyperenclave.platform.memory import parse_size
        from hyperenclave.session import boot_images
        unknown = set(options) - {f.name for f in fields(MachineConfig)}
        if unknown:
            raise TypeError(f"unknown machine option(s) {', '.join(sorted(unknown))}; "
                            f"expected MachineConfig fields, rc, files or programs")
        if isinstance(options.get("memory"), str):
            options["memory"] = parse_size(options["memory"])
        options.setdefault("name", f"m{len(self._machines)}")
        options.setdefault("state_dir", self._tmp / "state" / options["name"])
        machine = Machine(MachineConfig(**options),
                          boot_images(rc=rc, files=files, programs=programs))
        self._machines.append(machine)
        return machine


@pytest.fixture
def machine_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MachineFactory]:
    machines = request.node.stash.setdefault(_MACHINES, [])
    yield MachineFactory(tmp_path, machines)
    for m in machines:
        m.shutdown()


@pytest.fixture
def machine(request: pytest.FixtureRequest, machine_factory: MachineFactory) -> Machine:
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("machine"))):
        options.update(marker.kwargs)
    options.update(getattr(request, "param", None) or {})
    return machine_factory(**options).boot()


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[TpmClient]:
    from hyperenclave.tpm.client import TpmClient
    from hyperenclave.tpm.swtpm import Swtpm
    swtpm = Swtpm(tmp_path / "swtpm").start()
    try:
        with TpmClient.connect(swtpm) as client:
            yield client
    finally:
        swtpm.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for m in item.stash.get(_MACHINES, []):
        for title, text in _diagnostics(m):
            report.sections.append((f"hyperenclave {m.config.name}: {title}", text))


def _diagnostics(m: Machine) -> list[tuple[str, str]]:
    """What a person debugging a failed test looks at first, each part independent of the rest."""
    from hyperenclave.tpm.eventlog import EVENT_TYPE_NAMES, parse_eventlog
    out: list[tuple[str, str]] = []
    if getattr(m, "uart", None) is not None:
        lines = m.serial_text().splitlines()[-SERIAL_TAIL_LINES:]
        out.append((f"serial log (last {len(lines)} lines)", "\n".join(lines)))
    if m.boot_params is not None:
        try:
            events = parse_eventlog(m.eventlog_bytes())
            out.append(("event log", "\n".join(
                f"PCR{e.pcr:<2} {EVENT_TYPE_NAMES.get(e.event_type, hex(e.event_type)):<28} "
                f"{e.digest.hex()}" for e in events)))
        except Exception as e:  # a broken log is itself the finding
            out.append(("event log", f"unreadable: {e}"))
    monitor = getattr(m, "monitor", None)
    if monitor is not None:
        counts = ", ".join(f"{r.name} {n}" for r, n in sorted(monitor.exit_counts.items()))
        out.append(("VM exits", counts or "none"))
    return out
