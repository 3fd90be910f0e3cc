"""The scenario API: a running machine driven through its shell, with timeouts and typed errors."""

from __future__ import annotations

import pytest

from hyperenclave.machine import MachineTimeout
from hyperenclave.session import GuestStopped, ProgramFailed, Session

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    with Session.start(name="session", state_dir=tmp_path_factory.mktemp("session"),
                       rc=["/bin/hello"]) as s:
        yield s


def test_a_host_program_runs_to_completion_and_its_output_is_returned(session) -> None:
    result = session.sh("/bin/hello")
    assert result.status == 0
    assert "Hello from user space" in result.output


def test_a_failing_program_raises_with_its_status_and_output(session) -> None:
    with pytest.raises(ProgramFailed, match="killed by signal 11") as info:
        session.sh("/bin/segv")
    assert info.value.result.signal == 11
    assert session.sh("/bin/segv", check=False).signal == 11


def test_the_monitor_is_enabled_and_disabled_and_its_exits_are_counted(session) -> None:
    session.enable_monitor()
    session.sh("/bin/cpuid")
    assert session.exits()["CPUID"] >= 1
    session.disable_monitor()
    assert not session.monitor.enabled
    assert any(e.pcr == 12 for e in session.eventlog())
    assert session.pcrs()[12] != bytes(32)


def test_waiting_for_output_that_never_comes_times_out_with_the_last_lines(session) -> None:
    with pytest.raises(MachineTimeout, match=r"no console output matching 'never printed'.*"
                                             r"last console lines"):
        session.wait_for("never printed", timeout=0.3)


def test_waiting_on_a_guest_that_powered_off_says_so(tmp_path) -> None:
    s = Session.start(name="off", state_dir=tmp_path, rc=[])
    try:
        assert s.poweroff().state == "poweroff"
        with pytest.raises(GuestStopped, match="poweroff while waiting"):
            s.sh("/bin/hello", timeout=5)
    finally:
        s.stop()


def test_reboot_keeps_the_machines_tpm_state(tmp_path) -> None:
    s = Session.start(name="again", state_dir=tmp_path, rc=[])
    try:
        s.enable_monitor()
        pcr12 = s.pcrs()[12]
        s.reboot()
        assert s.pcrs()[12] == bytes(32), "PCRs reset with the platform"
        s.enable_monitor()
        assert s.pcrs()[12] == pcr12, "the same monitor image measures the same"
    finally:
        s.stop()
