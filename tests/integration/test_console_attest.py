"""The console drives the host through its shell like a person at its console: `sh` runs a
program, `attest` challenges the hello enclave and shows the verifier's checks, `seal` and
`unseal` round-trip through the sealer enclave; without a shell or while stopped they say why."""

from __future__ import annotations

import re

import pytest

from hyperenclave.machine import DEFAULT_CMDLINE, Machine, MachineConfig
from tests.support.console import ConsoleSession

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    state = tmp_path_factory.mktemp("console-attest")
    with Machine(MachineConfig(name="console-attest", state_dir=state,
                               cmdline=f"{DEFAULT_CMDLINE} shell")) as machine:
        session = ConsoleSession(machine.boot())
        assert "stopped" in session.run("until serial 'hyperenclave shell'")
        session.run("cont")
        try:
            yield session
        finally:
            session.close()


def test_sh_runs_a_host_program_and_prints_its_output(console) -> None:
    out = console.run("sh /bin/hello")
    assert "Hello from user space" in out
    assert re.search(r"/bin/hello\[\d+\] exited with status 0", out)


def test_attest_shows_every_verifier_check_passing(console) -> None:
    out = console.run("attest")
    for name in ("ak_certificate", "quote_signature", "attest_structure", "nonce",
                 "eventlog_replay", "boot_measurements", "monitor_key", "enclave_launches",
                 "report_policy"):
        assert f"ok   {name}" in out, out
    assert "verdict: pass" in out


def test_attest_against_another_enclave_fails_the_report_policy(console) -> None:
    out = console.run("attest --enclave spinner")
    assert "FAIL report_policy" in out and "verdict: fail" in out


def test_seal_then_unseal_round_trips(console) -> None:
    sealed = console.run("seal hello sealed world")
    blob = re.search(r"sealed ([0-9a-f]+)", sealed).group(1)
    assert 'unsealed "hello sealed world"' in console.run(f"unseal {blob}")
    tampered = blob[:-2] + ("00" if blob[-2:] != "00" else "11")
    assert "MAC_MISMATCH" in console.run(f"unseal {tampered}")


def test_bad_arguments_and_a_stopped_guest_are_explained(console) -> None:
    assert "no SDK sample 'nope'" in console.run("attest --enclave nope")
    assert "not a hex blob" in console.run("unseal xyz")
    console.run("stop")
    try:
        assert "the guest is paused: `cont` first" in console.run("sh /bin/hello")
    finally:
        console.run("cont")
