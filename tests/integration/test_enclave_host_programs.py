"""Enclave lifecycle loose ends, driven by host programs on a booted machine:

- /bin/enclave_errors provokes each SGX leaf error through /dev/hyper_enclave and ENCLU and
  prints what it got; each line is checked against what SGX (SDM Vol. 3D) and HyperEnclave's
  monitor give for that cause, and leaf faults against the driver's report of the #GP;
- /bin/enclave_threads runs two TCSs of one enclave interleaved: TCS1 (and TCS0 again) are
  entered while TCS0 is suspended after an AEX, and each finishes with its own state;
- /bin/enclave_shmem takes shared memory back: munmap (HC 0x103/0x104 from the driver's mmu
  notifier) and REMOVE_SHARED_MEMORY (HC 0x102).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.sdk import EnclaveLayout, sign
from hyperenclave.vmm.sigstruct import generate_signing_key
from tests.support.asm import assemble

pytestmark = pytest.mark.integration

# RDI = -1: EENTER its own TCS (RBX) from inside. Else RDX = RDI + RSI after RSI iterations,
# R9 = the CSSA EENTER gave in RAX; EEXIT to the return address.
LOOP_ENCLAVE = """
    cmp $-1, %rdi
    jne 1f
    mov $2, %eax
    enclu
1:  mov %rax, %r9
    mov %rdi, %rdx
    mov %rsi, %r8
    test %r8, %r8
    jz 3f
2:  inc %rdx
    dec %r8
    jnz 2b
3:  mov %rcx, %rbx
    mov $4, %eax
    enclu
"""
SHMEM_ENCLAVE = """
    mov (%rdi), %rax
    add $7, %rax
    mov %rax, 8(%rdi)
    mov %rcx, %rbx
    mov $4, %eax
    enclu
"""
LOOPS = 30_000_000
ENCLU_CASES = {   # case -> how the kernel reports the fault the app took at ENCLU
    "eresume_cssa_0": "general protection fault",
    "eenter_not_a_tcs": "error 8001",                    # EPCM-induced #PF(P | SGX)
    "eenter_tcs_not_aligned": "general protection fault",
    "eenter_from_inside": "general protection fault",   # AEX, then #GP at the AEP
    "eenter_all_ssa_frames_used": "general protection fault",
    "eenter_after_destroy": "segfault at",               # the TCS is no longer mapped: #PF
}
GP = "-EINVAL"              # the driver's answer when the leaf faulted with #GP
EXPECTED = {  # case -> (result line, the leaf fault the driver printed, or None)
    "ecreate_size_not_power_of_two": (GP, "ECREATE failed: #GP"),
    "ecreate_base_not_aligned_to_size": (GP, "ECREATE failed: #GP"),
    "ecreate_ssaframesize_too_small": (GP, "ECREATE failed: #GP"),
    "ecreate_reserved_attribute": (GP, "ECREATE failed: #GP"),
    "ecreate_init_attribute_set": (GP, "ECREATE failed: #GP"),
    "ecreate_not_64bit": (GP, "ECREATE failed: #GP"),
    "ecreate_xfrm_without_sse": (GP, "ECREATE failed: #GP"),
    "ecreate_ms_buf_size_0": (GP, "ECREATE failed: #GP"),
    "ecreate_elrange_overlaps_another_enclave": (GP, "ECREATE failed: #GP"),
    "eadd_not_page_aligned": (GP, "EADD failed: #GP"),
    "eadd_outside_elrange": (GP, "EADD failed: #GP"),
    "eadd_page_already_added": (GP, "EADD failed: #GP"),
    "eadd_tcs_with_rwx": (GP, "EADD failed: #GP"),
    "eadd_secs_page_type": (GP, "EADD failed: #GP"),
    "eadd_va_page_type": (GP, "EADD failed: #GP"),
    "eadd_write_without_read": (GP, "EADD failed: #GP"),
    "eadd_tcs_with_aep_set": (GP, "EADD failed: #GP"),
    "einit_bad_sigstruct_header": ("SGX_INVALID_SIG_STRUCT (1)", "EINIT failed: SGX_INVALID_SIG_STRUCT"),
    "einit_wrong_signature": ("SGX_INVALID_SIGNATURE (8)", "EINIT failed: SGX_INVALID_SIGNATURE"),
    "einit_wrong_attributes": ("SGX_INVALID_ATTRIBUTE (2)", "EINIT failed: SGX_INVALID_ATTRIBUTE"),
    "einit_wrong_measurement": ("SGX_INVALID_MEASUREMENT (4)", "EINIT failed: SGX_INVALID_MEASUREMENT"),
    "einit": ("0", None),
    "einit_twice": (GP, "EINIT failed: #GP"),
    "eadd_after_einit": (GP, "EADD failed: #GP"),
    "eextend_after_einit": (GP, "EADD failed: #GP"),
    "remove_shared_memory_never_added": ("-EINVAL", "REMOVE_SHARED_MEMORY"),
    "add_shared_memory_in_elrange": ("-EINVAL", "ADD_SHARED_MEMORY"),
    "add_shared_memory_unaligned": ("-EINVAL", "ADD_SHARED_MEMORY"),
    "add_shared_memory": ("0", None),
    "add_shared_memory_twice": ("-EBUSY", "ADD_SHARED_MEMORY"),
    "remove_shared_memory_part": ("-EINVAL", "REMOVE_SHARED_MEMORY"),
    "remove_shared_memory": ("0", None),
    "add_shared_memory_before_einit": ("-EINVAL", None),     # the driver's own check
}


def bundle(code: str, key, threads: int = 1, spare_pages: int = 0) -> bytes:
    layout = EnclaveLayout.simple(assemble(code, 0), threads=threads)
    layout.size *= 1 << spare_pages.bit_length()          # room for pages not in the bundle
    return sign(layout, key).to_bytes()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[list[str], object]:
    key = generate_signing_key()
    rc = "/bin/sysctl -w dev.hyper_enclave.enabled=1\n/bin/enclave_errors /errors.bin\n"
    rc += "".join(f"/bin/enclave_errors /errors.bin {case}\n" for case in ENCLU_CASES)
    rc += "/bin/enclave_threads /threads.bin\n/bin/enclave_shmem /shmem.bin\n/bin/hello\n"
    files = {"/etc/rc": rc.encode(),
             "/errors.bin": bundle(LOOP_ENCLAVE, key, spare_pages=1),
             "/threads.bin": bundle(LOOP_ENCLAVE, key, threads=2),
             "/shmem.bin": bundle(SHMEM_ENCLAVE, key)}
    tmp: Path = tmp_path_factory.mktemp("lifecycle")
    # the smallest EPC (2 MiB after the monitor's 16 MiB): out_of_epc fills it
    config = MachineConfig(name="lifecycle", state_dir=tmp / "state",
                           cmdline="console=ttyS0 memmap=18M$0x30000000")
    with Machine(config, default_boot_images(extra_files=files)) as m:
        m.boot()
        result = m.run(timeout=300)
        assert result.state == "poweroff", result.reason
        return m.serial_text().splitlines(), m.monitor


def result_of(lines: list[str], case: str) -> tuple[str, int]:
    prefix = f"enclave_errors: {case}: "
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            return line[len(prefix):], i
    raise AssertionError(f"no line for {case}")


@pytest.mark.attack(name="malformed or out-of-order construction: EADD/EEXTEND after EINIT, "
                         "overlapping ELRANGE, bad SECS, forged SIGSTRUCT, ...",
                    route='/dev/hyper_enclave ioctls -> ECREATE/EADD/EINIT hypercalls',
                    defence="SGX's error for each cause")
@pytest.mark.parametrize("case", EXPECTED)
def test_each_sgx_error_cause_gets_the_sgx_answer(run, case: str) -> None:
    lines, _ = run
    want, driver_says = EXPECTED[case]
    got, i = result_of(lines, case)
    assert got == want
    start = max((j for j in range(i) if lines[j].startswith("enclave_errors: ")), default=-1) + 1
    kernel = [line for line in lines[start:i] if "hyper_enclave: " in line]
    if driver_says:
        assert any(driver_says in line for line in kernel), f"{case}: the driver said {kernel}"
    else:
        assert not any("failed" in line for line in kernel), kernel


def test_running_out_of_epc_is_enomem(run) -> None:
    lines, monitor = run
    got, _ = result_of(lines, "out_of_epc")
    m = re.fullmatch(r"-ENOMEM after (\d+) pages", got)
    assert m, got
    epc_pages = monitor.layout.epc_size // 4096 if monitor.layout else 1024
    assert int(m.group(1)) == epc_pages - 1, "every EPC page but the SECS went to the enclave"
    assert any("out of EPC" in line for line in lines)


@pytest.mark.attack(name="ENCLU misuse: ERESUME with CSSA 0, EENTER of a non-TCS, from inside, "
                         "with every SSA frame in use (the busy TCS of one vCPU), after destroy",
                    route='ENCLU from the app',
                    defence="SGX's #GP/#PF in the app")
@pytest.mark.parametrize("case", ENCLU_CASES)
def test_enclu_errors_fault_in_the_app(run, case: str) -> None:
    lines, _ = run
    got, i = result_of(lines, case)
    assert got == "ENCLU"
    fault = next(line for line in lines[i + 1:] if "enclave_errors[" in line)
    assert ENCLU_CASES[case] in fault, fault
    assert not any(line.startswith(f"enclave_errors: {case}: returned") for line in lines)


def test_all_ssa_frames_used_took_two_aexs_first(run) -> None:
    _, monitor = run
    assert any("CSSA 2 >= NSSA 2" in line for line in monitor.log_lines)


def test_eenter_from_inside_is_an_aex_with_gp(run) -> None:
    _, monitor = run
    assert any("AEX from enclave" in line and "vector 0xd" in line for line in monitor.log_lines)


def test_tcs1_runs_while_tcs0_is_suspended_and_each_keeps_its_state(run) -> None:
    lines, monitor = run
    text = "\n".join(lines)
    tcs0, tcs1 = (int(x, 16) for x in re.search(r"TCS0 (0x[0-9a-f]+), TCS1 (0x[0-9a-f]+)",
                                                   text).groups())
    assert f"TCS1 EENTER(2000, {LOOPS}) while TCS0 was suspended: RDX {2000 + LOOPS}, entered " \
           "with CSSA 0" in text
    assert "TCS0 EENTER(3000, 0) while suspended: RDX 3000, entered with CSSA 1" in text, \
        "a suspended TCS is not busy: EENTER uses its next SSA frame"
    m = re.search(rf"TCS0 EENTER\(1000, {LOOPS}\): RDX (\d+), entered with CSSA 0, (\d+) AEX", text)
    assert m and int(m.group(1)) == 1000 + LOOPS, "TCS0 resumed with its own registers"
    aex = [line for line in monitor.log_lines if "AEX from enclave" in line]
    first0 = next(i for i, line in enumerate(aex) if f"(TCS {tcs0:#x})" in line)
    last0 = max(i for i, line in enumerate(aex) if f"(TCS {tcs0:#x})" in line)
    assert int(m.group(2)) >= 2 and last0 > first0
    assert any(f"(TCS {tcs1:#x})" in line for line in aex[first0:last0]), \
        "TCS1 was preempted too while TCS0 waited in its SSA"


def test_munmap_of_shared_memory_is_refetched_into_the_new_page(run) -> None:
    lines, monitor = run
    text = "\n".join(lines)
    assert "enclave_shmem: ECALL(35) = 42" in text
    m = re.search(r"after munmap and a new page: ECALL\(100\) = 107 after (\d+) AEX", text)
    assert m and int(m.group(1)) >= 1, text[-3000:]
    log = "\n".join(monitor.log_lines)
    assert "invalidated (1 in progress)" in log
    assert "mapped again (SHARED_MEM_FETCH)" in log


def test_after_remove_the_enclave_faults_instead_of_reaching_app_memory(run) -> None:
    lines, _ = run
    text = "\n".join(lines)
    assert "enclave_shmem: REMOVE_SHARED_MEMORY: 0" in text
    assert "enclave_shmem: REMOVE_SHARED_MEMORY again: -EINVAL" in text
    buf = int(re.search(r"ADD_SHARED_MEMORY (0x[0-9a-f]+): 0", text).group(1), 16)
    assert re.search(rf"enclave_shmem\[\d+\]: segfault at {buf:x} .* error 5", text), \
        "the enclave's access is #PF(P|U) at the buffer, delivered at the AEP"
    assert "still reached the app's page" not in text


def test_the_host_goes_on(run) -> None:
    lines, _ = run
    assert any("Hello from user space" in line for line in lines)
