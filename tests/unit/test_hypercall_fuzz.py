"""Hypercall fuzzing (bounded, for CI): Hypothesis writes tables of random and structurally
valid but hostile hypercalls; bare-metal guest code executes them with real VMCALL and ENCLU
from CPL 0 and CPL 3 under the launched monitor (tests/support/hcfuzz.py), and after every
call the victim enclave's memory and measurement, the host's view of EPC and monitor memory
(the zero page) and, at every fault, the host's registers are checked. `bench/fuzz` runs the
same fuzzer for 100,000 calls."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from hyperenclave.vmm.hypercall import HypercallCode
from tests.support.hcfuzz import (B_BASE, B_SECS_EPC, BASE, ENCLU_EENTER, ENCLU_ERESUME, FAULT,
                                  SECS_EPC, SHARED_RANGES, USER, Call, HypercallFuzzer,
                                  InvariantBroken, build_b, hostile_calls)
from tests.unit.test_enclave_lifecycle import key, monitor_image  # noqa: F401  (fixtures)

UD = FAULT | 6
EFAULT, EINVAL = (-14) % (1 << 64), (-22) % (1 << 64)


@pytest.fixture(scope="module")
def fuzzer_args(monitor_image, key):  # noqa: F811
    return monitor_image, key


@pytest.mark.attack(name="random and structurally valid but hostile hypercalls (Hypothesis)",
                     route="VMCALL and ENCLU from CPL 0 and CPL 3",
                     defence="every call checked: enclave memory, MRENCLAVE, zero page, AEX scrub")
@settings(max_examples=5, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=hostile_calls(80))
def test_no_hostile_call_sequence_breaks_an_invariant(fuzzer_args, calls: list[Call]) -> None:
    fuzzer = HypercallFuzzer(*fuzzer_args)
    results = fuzzer.run(calls)          # raises MonitorCrashed / InvariantBroken
    assert len(results) == len(calls)
    assert fuzzer.checker.calls_checked == len(calls), "every call was checked"


def test_the_fuzzers_machine_answers_like_the_monitor(fuzzer_args) -> None:
    """The harness itself: legitimate steps succeed, privilege mismatches are #UD, an entry
    into B is an AEX whose registers the host never sees, and destroy scrubs the victim."""
    fuzzer = HypercallFuzzer(*fuzzer_args)
    calls = build_b() + [
        Call(2, ENCLU_EENTER, rbx=B_BASE, rcx=USER),          # B faults inside: AEX, #UD at AEP
        Call(2, ENCLU_ERESUME, rbx=B_BASE, rcx=USER),         # and again
        Call(2, ENCLU_EENTER, rbx=BASE, rcx=USER),            # the victim EEXITs at once
        Call(1, HypercallCode.ENCLAVE_ENTER, rbx=BASE, rcx=USER),
        Call(1, HypercallCode.ENCLAVE_CREATE),                # supervisor call from CPL 3
        Call(0, HypercallCode.ENCLAVE_ENTER),                 # user call from CPL 0
        Call(0, HypercallCode.SHARED_MEMORY_ADD, SHARED_RANGES),        # ordinary RAM: fine
        Call(0, HypercallCode.SHARED_MEMORY_ADD, SHARED_RANGES + 24),   # EPC: refused
        Call(0, HypercallCode.SHARED_MEMORY_ADD, SHARED_RANGES + 72),   # monitor memory
        Call(0, HypercallCode.ENCLAVE_PREPARE_DESTROY, B_SECS_EPC),
        Call(0, HypercallCode.ENCLAVE_FINISH_DESTROY, B_SECS_EPC),
        Call(0, HypercallCode.ENCLAVE_PREPARE_DESTROY, SECS_EPC),
        Call(0, HypercallCode.ENCLAVE_FINISH_DESTROY, SECS_EPC),
    ]
    r = fuzzer.run(calls)
    n = len(build_b())
    assert r[:n] == [0] * n
    assert r[n:n + 2] == [UD, UD]
    assert r[n + 4:n + 6] == [UD, UD]
    assert r[n + 6] == 0
    assert r[n + 7] in (EFAULT, EINVAL) and r[n + 8] in (EFAULT, EINVAL)
    assert r[n + 9:] == [0, 0, 0, 0]
    assert fuzzer.checker.faults_seen == 4 and fuzzer.monitor.runner.aex_count == 2
    assert not fuzzer.monitor.enclaves.enclaves


def test_the_checker_catches_a_leak(fuzzer_args) -> None:
    """The invariants are live: a victim page changed behind the monitor's back is caught."""
    fuzzer = HypercallFuzzer(*fuzzer_args)
    page = next(iter(fuzzer.checker.victim))
    fuzzer.bm.memory.write(page, b"tampered")
    with pytest.raises(InvariantBroken, match="victim page"):
        fuzzer.run([Call(0, 0x999)])
