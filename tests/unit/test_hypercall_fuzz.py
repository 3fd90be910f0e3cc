"""Hypercall fuzzing (bounded, for CI): Hypothesis writes tables of random and structurally
valid but hostile hypercalls; bare-metal guest code executes them with real VMCALL and ENCLU
from CPL 0 and CPL 3 under the launched monitor (tests/support/hcfuzz.py), and after every
call the victim enclave's memory and measurement, the host's view of EPC and monitor memory
(the zero page) and, at every fault, the host's registers are checked. A state machine drives
a second enclave's lifecycle in any order between hostile calls. `bench/fuzz` runs the same
fuzzer for 100,000 calls."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from hyperenclave.vmm.hypercall import HypercallCode
from tests.support.hcfuzz import (B_BASE, B_EPC, B_PAGEINFOS, B_SECS_EPC, BASE, ENCLU_EENTER,
                                  ENCLU_ERESUME, FAULT, SECS_EPC, SHARED_RANGES, USER, Call,
                                  HypercallFuzzer, InvariantBroken, b_pages, build_b,
                                  hostile_call, hostile_calls)
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


class EnclaveLifecycle(RuleBasedStateMachine):
    """Stateful fuzzing: B's create/add/init/enter/destroy steps in any order, interleaved with
    hostile calls. Each step must succeed exactly when the enclave's state (as the monitor
    holds it before the step) allows it, and fail otherwise; the invariants hold throughout."""

    fuzzer_args: tuple = ()

    def __init__(self) -> None:
        super().__init__()
        self.fuzzer = HypercallFuzzer(*self.fuzzer_args)

    @property
    def b(self):
        return self.fuzzer.monitor.enclaves.enclaves.get(B_SECS_EPC)

    def call(self, call: Call) -> int:
        return self.fuzzer.run([call])[0]

    @rule()
    def create(self) -> None:
        existed = self.b is not None
        assert (self.call(build_b()[0]) == 0) != existed

    @rule(page=st.integers(0, len(build_b()) - 3))
    def add(self, page: int) -> None:
        step = build_b()[1 + page]
        addable = self.b is not None and not self.b.initialized and \
            step.rdi not in self.added_pageinfos()
        result = self.call(step)
        assert (result == 0) == addable, (page, hex(result))

    def added_pageinfos(self) -> set[int]:
        offsets = {la - B_BASE for la in self.b.pages}
        return {B_PAGEINFOS + 32 * (1 + off // 0x1000) for off in offsets}

    @rule()
    def init(self) -> None:
        complete = self.b is not None and not self.b.initialized and \
            len(self.b.pages) == len(build_b()) - 2
        assert (self.call(build_b()[-1]) == 0) == complete

    @rule(enclu=st.booleans(), resume=st.booleans())
    def enter(self, enclu: bool, resume: bool) -> None:
        leaf = ENCLU_ERESUME if resume else ENCLU_EENTER
        code = leaf if enclu else (HypercallCode.ENCLAVE_RESUME if resume
                                   else HypercallCode.ENCLAVE_ENTER)
        result = self.call(Call(2 if enclu else 1, code, rbx=B_BASE, rcx=USER))
        assert result & FAULT, "B never EEXITs: an AEX (#UD at the AEP) or a refused entry"

    @rule()
    def destroy(self) -> None:
        existed = self.b is not None
        prepare = self.call(Call(0, HypercallCode.ENCLAVE_PREPARE_DESTROY, B_SECS_EPC))
        finish = self.call(Call(0, HypercallCode.ENCLAVE_FINISH_DESTROY, B_SECS_EPC))
        assert (prepare == 0 and finish == 0) == existed
        assert self.b is None

    @rule(call=hostile_call())
    def hostile(self, call: Call) -> None:
        self.call(call)

    @invariant()
    def an_initialized_b_keeps_its_code_and_secret(self) -> None:
        if self.b is not None and self.b.initialized:
            memory = self.fuzzer.bm.memory
            for offset, _, _, data in b_pages()[1:3]:
                assert memory.read(B_EPC + offset, 4096) == data


def test_enclave_lifecycle_steps_in_any_order(fuzzer_args) -> None:
    EnclaveLifecycle.fuzzer_args = fuzzer_args
    run_state_machine_as_test(EnclaveLifecycle, settings=settings(
        max_examples=3, stateful_step_count=20, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow]))
