"""An enclave runs on a real machine: a host program EENTERs it with the real ENCLU
instruction, the enclave computes and EEXITs; a long enclave loop is preempted by the host's
timer (AEX, the interrupt handled by the host kernel, ERESUME at the AEP) and still finishes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.sdk import EnclaveLayout, sign
from hyperenclave.vmm.sigstruct import generate_signing_key
from tests.support.asm import assemble

pytestmark = pytest.mark.integration

LOOPS = 30_000_000          # about 90 M instructions: several 10 ms timer ticks
ENCLAVE = f"""
    mov %rdi, %rdx               # RDI = the app's argument
    mov ${LOOPS}, %r8
1:  inc %rdx
    dec %r8
    jnz 1b
    mov %rcx, %rbx               # EEXIT to the address after the app's ENCLU
    mov $4, %eax
    enclu
"""


# ECALL: RDI = the shared buffer. First entry: ask the app for OCALL 1 with input + 7; after
# the OCALL returns (buf[2] == 2, ORET), answer with what the app computed, plus one.
MARSHALLING = """
    cmpq $2, 16(%rdi)
    je 1f
    mov (%rdi), %rax
    add $7, %rax
    mov %rax, 24(%rdi)
    movq $1, 16(%rdi)
    jmp 2f
1:  mov 32(%rdi), %rax
    inc %rax
    mov %rax, 8(%rdi)
    movq $0, 16(%rdi)
2:  mov %rcx, %rbx
    mov $4, %eax
    enclu
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[str, object]:
    key = generate_signing_key()
    bundle = sign(EnclaveLayout.simple(assemble(ENCLAVE, 0)), key).to_bytes()
    marshalling = sign(EnclaveLayout.simple(assemble(MARSHALLING, 0)), key).to_bytes()
    rc = ("/bin/sysctl -w dev.hyper_enclave.enabled=1\n"
          "/bin/enclave_load /enclave.bin --enter 5\n"
          "/bin/enclave_load /ecall.bin --ecall 35\n"
          "/bin/hello\n")
    images = default_boot_images(extra_files={"/etc/rc": rc.encode(), "/enclave.bin": bundle,
                                              "/ecall.bin": marshalling})
    tmp: Path = tmp_path_factory.mktemp("run")
    with Machine(MachineConfig(name="run", state_dir=tmp / "state"), images) as m:
        m.boot()
        result = m.run(timeout=120)
        assert result.state == "poweroff", result.reason
        return m.serial_text(), m.monitor


def test_the_enclave_computes_on_the_apps_argument_and_eexits(run) -> None:
    log, _ = run
    m = re.search(r"enclave_load: EENTER\(0x5\) returned (0x[0-9a-f]+) after (\d+) AEX", log)
    assert m, log[-2000:]
    assert int(m.group(1), 16) == 5 + LOOPS


def test_timer_interrupts_preempt_the_enclave_and_eresume_continues_it(run) -> None:
    log, monitor = run
    aex = int(re.search(r"after (\d+) AEX", log).group(1))
    assert aex >= 1, "the loop outlived a timer tick"
    base = int(re.search(r"enclave at (0x[0-9a-f]+)", log).group(1), 16)
    tcs = base + 0x1000                            # one code page, then the TCS
    interrupts = [line for line in monitor.log_lines
                  if f"(TCS {tcs:#x})" in line and line.endswith("(interrupt)")]
    assert len(interrupts) == aex, "each AEX the app saw was a timer interrupt the monitor took"


def test_the_host_keeps_running_afterwards(run) -> None:
    log, _ = run
    assert log.index("Hello from user space") > log.index("EENTER(0x5)")
    assert re.search(r"/bin/enclave_load\[\d+\] exited with status 0", log)


def test_ecall_and_ocall_through_the_shared_marshalling_buffer(run) -> None:
    log, monitor = run
    assert "enclave_load: OCALL 1(42) from the enclave" in log, log[-2000:]
    assert "enclave_load: ECALL(35) = 85" in log          # (35 + 7) * 2 + 1
    assert any("shared [" in line and "with the app" in line for line in monitor.log_lines)
