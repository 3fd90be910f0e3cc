"""The pytest plugin works for an outside project: installing the package is all it takes to get
booted machines and TPMs as fixtures, in parallel, with diagnostics on failure."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

pytest_plugins = ["pytester"]


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An outside project that shares this user's guest build cache (pytester moves HOME)."""
    from hyperenclave.guest.build import default_cache_root
    monkeypatch.setenv("HYPERENCLAVE_CACHE", str(default_cache_root().parent))
    return pytester

OUTSIDE_PROJECT_TESTS = '''
import pytest

def test_a_fresh_machine_boots_and_runs_its_rc(machine):
    result = machine.run(timeout=60)
    assert result.state == "poweroff"
    assert "Hello from user space" in machine.serial_text()

@pytest.mark.machine(rc=["/bin/sysctl -w dev.hyper_enclave.enabled=1", "/bin/cpuid"])
def test_marker_options_reach_the_machine(machine):
    machine.run(timeout=60)
    assert machine.monitor.launches == 1
    assert machine.monitor.exit_counts

@pytest.mark.parametrize("machine", [{"memory": "1G"}, {"memory": "2G"}], indirect=True)
def test_parametrised_machines(machine):
    assert machine.memory.size in (1 << 30, 2 << 30)

def test_two_boots_of_one_machine_name_share_tpm_state(machine_factory):
    first = machine_factory(name="same", rc=["/bin/hello"]).boot()
    first.run(timeout=60)
    first.shutdown()
    second = machine_factory(name="same", rc=["/bin/hello"]).boot()
    assert second.config.state_dir == first.config.state_dir

def test_tpm_fixture(tpm):
    assert len(tpm.get_random(16)) == 16
    assert tpm.pcr_read([23])[23] == bytes(32)

def test_that_fails_on_purpose(machine):
    machine.run(timeout=60)
    assert "no such line" in machine.serial_text()
'''


def test_an_outside_project_gets_machines_and_a_tpm_and_diagnostics_on_failure(pytester) -> None:
    pytester.makepyfile(test_outside=OUTSIDE_PROJECT_TESTS)
    # a subprocess, as in the user's CI: the plugin is found through its pytest11 entry point
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, failed=1)
    out = result.stdout.str()
    assert "hyperenclave m0: serial log" in out
    assert "hyperenclave m0: event log" in out and "EV_S_CRTM_VERSION" in out
    assert "hyperenclave m0: VM exits" in out


def test_unknown_machine_options_are_named(pytester) -> None:
    pytester.makepyfile(test_typo='''
import pytest

@pytest.mark.machine(memroy="2G")
def test_typo(machine):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown machine option(s) memroy*"])
