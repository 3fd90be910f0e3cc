"""A hostile host, as host code on a booted machine: the attacks the other suites do not
already make (/bin/hostile and /bin/tpm_probe from tests/support/guest/, /bin/attack). One
boot; for each attack: nothing leaked (the enclave's secret never appears in any output, EPC
reads as zeros), the monitor is intact (no Python exception, its image and the zero page
unchanged, a later enclave still runs) and the host survived (it powers off cleanly)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.sdk import EnclaveLayout, sign
from hyperenclave.vmm.image import build_monitor_image
from hyperenclave.vmm.sigstruct import generate_signing_key
from tests.support.asm import assemble

pytestmark = pytest.mark.integration

GUEST = Path(__file__).resolve().parents[1] / "support" / "guest"
HV, EPC = 0x30000000, 0x31000000
SECRET = 0x5EC2E7AE_C5EC2E75
LOOPS = 3_000_000
# RDI iterations with the secret (the data page's first qword) in every GPR but RSP, then
# scrub them all and EEXIT to the return address EENTER gave in RCX (kept in the data page).
AEX_ENCLAVE = """
start:
    lea start(%rip), %rax
    mov %rcx, 0x1008(%rax)
    mov %rdi, 0x1010(%rax)
1:  lea start(%rip), %rax
    mov 0x1000(%rax), %rbx
""" + "".join(f"    mov %rbx, %{r}\n" for r in
              ("rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
               "r15")) + """
    decq 0x1010(%rax)
    mov %rbx, %rax
    jnz 1b
""" + "".join(f"    xor %{r}, %{r}\n" for r in
              ("rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
               "r15")) + """
    lea start(%rip), %rax
    mov 0x1008(%rax), %rbx
    xor %ecx, %ecx
    mov $4, %eax
    enclu
"""
MONITOR_HANDLES = (0x81000100, 0x81000101)
EK_HANDLE = 0x81010001
RC = f"""/bin/sysctl -w dev.hyper_enclave.enabled=1
/bin/hostile aex /aex.bin {LOOPS} {EPC:#x} 64
/bin/hostile tcs-alias /aex.bin
/bin/hostile eadd-modify /aex.bin {EPC:#x}
/bin/hostile share {EPC:#x} /aex.bin
/bin/hostile share {HV + 0x800000:#x} /aex.bin
/bin/attack hypercall 0x200 {0xffff888000000000 + HV + 0x800000:#x} 1
/bin/tpm_probe ReadPublic {MONITOR_HANDLES[0]:#x} {MONITOR_HANDLES[1]:#x} {EK_HANDLE:#x}
/bin/tpm_probe Unseal {MONITOR_HANDLES[0]:#x}
/bin/tpm_probe EvictControl {MONITOR_HANDLES[1]:#x}
/bin/tpm_probe Clear
/bin/hello_app 19 23
/bin/hello
"""


@dataclass
class Run:
    log: str
    monitor_log: str
    monitor_image_at_launch: bytes
    monitor_image_at_end: bytes
    zero_page_at_end: bytes
    aex_count: int


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    bundle = sign(EnclaveLayout.simple(assemble(AEX_ENCLAVE, 0), struct.pack("<Q", SECRET)),
                  generate_signing_key()).to_bytes()
    images = default_boot_images(
        extra_files={"/etc/rc": RC.encode(), "/aex.bin": bundle},
        extra_programs={"hostile": [GUEST / "hostile.c"], "tpm_probe": [GUEST / "tpm_probe.c"]})
    tmp: Path = tmp_path_factory.mktemp("hostile")
    image_size = len(build_monitor_image())
    seen: dict[str, bytes] = {}
    with Machine(MachineConfig(name="hostile", state_dir=tmp / "state"), images) as m:
        def on_line(line: str) -> None:
            if "The hypervisor has been enabled" in line:
                seen["launch"] = m.memory.read(HV, image_size)
            if "Hello from user space" in line:
                seen["end"] = m.memory.read(HV, image_size)
                seen["zero"] = m.memory.read(m.monitor.layout.zero_page, 4096)
        m.line_listeners.append(on_line)
        m.boot()
        result = m.run(timeout=240)
        assert result.state == "poweroff", result.reason
        return Run(m.serial_text(), "\n".join(m.monitor.log_lines), seen["launch"], seen["end"],
                   seen["zero"], m.monitor.runner.aex_count if m.monitor.runner else 0)


def lines(run: Run, prefix: str) -> list[str]:
    return [line for line in run.log.splitlines() if line.startswith(prefix)]


def exits(run: Run, program: str) -> list[str]:
    return re.findall(rf"/bin/{program}\[\d+\] (exited with status \d+|killed by signal .*)",
                      run.log)


@pytest.mark.attack(name="read the registers the host sees at the AEP after an AEX",
                    route="timer interrupt inside the enclave, AEP handler dumps every GPR",
                    defence="AEX saves state in the SSA and scrubs: RAX=ERESUME, RBX=TCS, "
                            "RCX=AEP, the rest synthetic")
def test_registers_after_an_aex_are_scrubbed_and_synthetic(run: Run) -> None:
    done = re.search(r"hostile: aex: returned after (\d+) AEX; TCS (0x[0-9a-f]+), AEP "
                     r"(0x[0-9a-f]+)", run.log)
    assert done and int(done.group(1)) >= 1, run.log[-3000:]
    regs = {name: int(value, 16) for name, value in
            re.findall(r"hostile: aex: at the AEP (\w+)=(0x[0-9a-f]+)", run.log)}
    assert len(regs) == 16
    assert regs["rax"] == 3, "ERESUME's leaf, as SGX's AEX sets it"
    assert (regs["rbx"], regs["rcx"]) == (int(done.group(2), 16), int(done.group(3), 16))
    assert SECRET not in regs.values()
    assert all(v == 0 for k, v in regs.items() if k not in ("rax", "rbx", "rcx", "rsp")), regs
    assert 0x7F0000000000 <= regs["rsp"] < 0x800000000000, "the app's own stack (URSP)"


@pytest.mark.attack(name="read the zero page (EPC through /dev/mem) after enclave writes",
                    route="user mmap of /dev/mem over the EPC, enclave alive",
                    defence="root EPT maps EPC to one read-only zero page")
def test_epc_reads_as_zeros_while_the_enclave_holds_its_secret(run: Run) -> None:
    assert "hostile: aex: 64 pages of EPC from 0x31000000 read with the enclave alive: 0 " \
           "nonzero bytes" in run.log
    assert run.zero_page_at_end == bytes(4096)


@pytest.mark.attack(name="map a TCS twice and EENTER through the second mapping",
                    route="/dev/he_attack alias of the TCS page in the host page table",
                    defence="EENTER takes the TCS by its linear address in the enclave's EPCM")
def test_a_second_mapping_of_a_tcs_is_not_a_tcs(run: Run) -> None:
    assert re.search(r"hostile: tcs-alias: remap 0x[0-9a-f]+ -> 0x[0-9a-f]+ .*\(0\)", run.log)
    assert "hostile: tcs-alias: EENTER through the TCS's own address returned" in run.log
    assert "hostile: tcs-alias: EENTER through the second mapping returned" not in run.log
    assert exits(run, "hostile")[1] == "killed by signal 11 (SIGSEGV)", "the fault at ENCLU"
    assert re.search(r"hostile\[\d+\]: segfault at [0-9a-f]+ .* error 8001", run.log), \
        "#PF(P | SGX), as SGX's EPCM check gives"
    assert re.search(r"ENCLU at 0x[0-9a-f]+: #PF\(0x8001\) at 0x[0-9a-f]+: .* is not a TCS of an "
                     r"enclave", run.monitor_log)


@pytest.mark.attack(name="modify the pages between EADD and EINIT",
                    route="overwrite every source page, DMA into the EPC, then EINIT",
                    defence="EADD copied and measured; IOMMU blocks DMA to EPC")
def test_changes_between_eadd_and_einit_do_not_reach_the_enclave(run: Run) -> None:
    assert "hostile: eadd-modify: ECREATE and EADD of" in run.log
    dma = [line for line in lines(run, "hostile: eadd-modify: dma_write")]
    assert len(dma) == 8 and all("status FAULT" in line and "reason 0x5" in line for line in dma)
    assert "hostile: eadd-modify: EINIT after the changes: 0" in run.log, "measured as signed"
    assert "hostile: eadd-modify: the enclave ran and returned" in run.log


@pytest.mark.attack(name="confused deputy: marshalling buffer backed by EPC or monitor memory",
                    route="ADD_SHARED_MEMORY of a user page the host kernel pointed there",
                    defence="HC 0x101 walks the app's page table and takes ordinary RAM only")
@pytest.mark.parametrize("pa, where", [(EPC, "the EPC"), (HV + 0x800000, "monitor memory")])
def test_a_shared_buffer_backed_by_protected_memory_is_refused(run: Run, pa: int,
                                                               where: str) -> None:
    assert f"hostile: share: ADD_SHARED_MEMORY of a page pointed at {pa:#x}: -EFAULT" in run.log
    assert re.search(rf"SHARED_MEMORY_ADD failed: shared page 0x[0-9a-f]+ at GPA {pa:#x} is in "
                     rf"{where}", run.monitor_log)


@pytest.mark.attack(name="hypercall with a pointer into monitor memory",
                    route="VMCALL INIT_CMRM from the host kernel (/dev/he_attack)",
                    defence="every pointer is walked and checked (gaccess.py)")
def test_a_pointer_into_monitor_memory_is_refused(run: Run) -> None:
    assert re.search(r"he_attack: hypercall 0x200\(.*\) = -14", run.log)


@pytest.mark.attack(name="read or unseal the monitor's TPM objects, or clear the TPM",
                    route="raw TPM2 commands through the host's /dev/tpm0 (CRB)",
                    defence="the monitor mediates the CRB: its handles and TPM2_Clear refused")
def test_the_monitors_tpm_objects_are_out_of_reach(run: Run) -> None:
    rc = dict(re.findall(r"tpm_probe: (\w+(?: 0x[0-9a-f]+)?) rc=(0x[0-9a-f]+|-?\d+)", run.log))
    for handle in MONITOR_HANDLES:
        assert int(rc[f"ReadPublic {handle:#x}"], 16) & 0xBF == 0x8B, "TPM_RC_HANDLE"
    assert int(rc[f"Unseal {MONITOR_HANDLES[0]:#x}"], 16) & 0xBF == 0x8B
    assert int(rc[f"EvictControl {MONITOR_HANDLES[1]:#x}"], 16) & 0xBF == 0x8B
    assert rc["Clear"] == "0x907", "TPM_RC_LOCALITY: Clear would destroy the monitor's keys"
    assert int(rc[f"ReadPublic {EK_HANDLE:#x}"], 16) == 0, "the host still uses the TPM"
    assert "refused a host TPM command" in run.monitor_log, run.log[-2000:]


def test_nothing_leaked_the_monitor_is_intact_and_the_host_survived(run: Run) -> None:
    for text in (run.log, run.monitor_log):
        assert f"{SECRET:x}" not in text and f"{SECRET:#x}" not in text
        assert struct.pack("<Q", SECRET).hex() not in text
    assert run.monitor_image_at_end == run.monitor_image_at_launch
    assert "hello_app: ECALL add(19, 23) = 42" in run.log, "a later enclave still works"
    assert run.log.rindex("Hello from user space") > run.log.rindex("tpm_probe:")
    assert "reboot: Power down" in run.log
