"""The monitor demotes the running host: booted end to end with the real driver and image.

One boot runs a script of host programs under the monitor (the attacks are host code: user
programs and the /dev/he_attack kernel test module); the assertions read its console, the
monitor's log and exit counters, the event log and the TPM.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig, default_boot_images
from hyperenclave.tpm.eventlog import parse_eventlog, replay
from hyperenclave.vmm.image import build_monitor_image
from hyperenclave.vmm.vmcs import ExitReason

pytestmark = pytest.mark.integration

HV = 0x30000000                  # monitor memory: the start of memmap=256M$0x30000000
EPC = 0x31000000                 # after 16 MiB of monitor memory
SECRET = b"EPC-SECRET-0123456789abcdef"
MONITOR_SECRET = b"MONITOR-SECRET-fedcba9876543210"

ATTACKS = f"""/bin/sysctl -w dev.hyper_enclave.enabled=1
/bin/hello
/bin/cpuid
/bin/memattack read {EPC:#x}
/bin/memattack read {HV + 0x800000:#x}
/bin/memattack write {EPC:#x} 0x41
/bin/memattack exec {EPC:#x}
/bin/memattack remap-read {EPC:#x}
/bin/memattack remap-write {HV + 0x800000:#x} 0x42
/bin/attack read {EPC:#x} 64
/bin/attack alias_read {HV + 0x800000:#x}
/bin/attack write {EPC:#x} 5
/bin/attack alias_write {HV + 0x800000:#x} 6
/bin/attack exec {HV + 0x800000:#x}
/bin/attack dma_read {EPC:#x} 64
/bin/attack dma_write {HV + 0x800000:#x} 7
/bin/attack hypercall 0x200 {0xffff888000000000 + EPC:#x} 1
/bin/attack hypercall 0x999 0 0
/bin/hcall 0 1 0
/bin/attack hypercall 0x80000000 0 0
/bin/sleep 20
/bin/hello
"""


class Run:
    def __init__(self, machine: Machine, log: str, out: Path) -> None:
        self.machine = machine
        self.monitor = machine.monitor
        self.log = log
        self.out = out
        self.monitor_log = "\n".join(machine.monitor.log_lines)

    def after(self, command: str) -> str:
        """Console output of the program started by `command` (up to the next one)."""
        start = self.log.index(f"Run {command.split()[0]} as init process",
                               self.log.index(command.split()[0]))
        return self.log[start:]


def boot(tmp: Path, guest_images_with, rc: str, plant: bool = False) -> Run:
    images = guest_images_with(rc)
    m = Machine(MachineConfig(name="mon", state_dir=tmp / "state"), images)

    seen: dict[str, bytes] = {}

    def on_line(line: str) -> None:
        # The moment the monitor runs, give it something worth stealing in EPC and its memory;
        # look at it again once the last program ran (power-off scrubs it).
        if plant and "The hypervisor has been enabled" in line:
            m.memory.write(EPC, SECRET)
            m.memory.write(HV + 0x800000, MONITOR_SECRET)
        if "Hello from user space" in line:
            seen["secrets"] = (m.memory.read(EPC, len(SECRET)),
                               m.memory.read(HV + 0x800000, len(MONITOR_SECRET)))
    m.line_listeners.append(on_line)
    try:
        m.boot()
        result = m.run(timeout=120)
        assert result.state == "poweroff", result.reason
        out = m.export_evidence(tmp / "out")
        run = Run(m, m.serial_text(), out)
        run.pcrs = m.pcrs()
        run.result = result
        run.secrets_before_poweroff = seen.get("secrets")
        run.secrets_after_poweroff = (m.memory.read(EPC, len(SECRET)),
                                      m.memory.read(HV + 0x800000, len(MONITOR_SECRET)))
    finally:
        m.shutdown()
    return run


@pytest.fixture(scope="module")
def guest_images_with():
    def make(rc: str):
        return default_boot_images(extra_files={"/etc/rc": rc.encode()})
    return make


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, guest_images_with) -> Run:
    return boot(tmp_path_factory.mktemp("attacked"), guest_images_with, ATTACKS, plant=True)


def programs(run: Run, name: str) -> list[str]:
    return re.findall(rf"/bin/{name}\[\d+\] (exited with status \d+|killed by signal \d+ \(\w+\))",
                      run.log)


# ---------------------------------------------------------------- launch


def test_the_host_is_demoted_and_keeps_running_programs(attacked: Run) -> None:
    log = attacked.log
    assert "hyper_enclave: The hypervisor has been enabled" in log
    assert "dev.hyper_enclave.enabled = 1" in log
    assert log.count("Hello from user space") == 2, "before and after the attacks"
    assert "reboot: Power down" in log
    assert "HyperEnclave monitor v1 launched on CPU 0" in attacked.monitor_log
    assert attacked.monitor.enabled


def test_cpuid_from_the_host_shows_the_monitor_and_hides_vmx(attacked: Run) -> None:
    assert 'cpuid: hypervisor signature "HyperEnclave"' in attacked.log
    assert "cpuid: vmx supported 0" in attacked.log
    assert "cpuid: hypervisor present bit 1" in attacked.log


def test_pcr12_holds_the_image_measurement_and_the_log_replays(attacked: Run) -> None:
    image = build_monitor_image()
    digest = hashlib.sha256(image).digest()
    assert f"sha256={digest.hex()}" in attacked.log
    expected = hashlib.sha256(bytes(32) + digest).digest()
    assert attacked.pcrs[12] == expected
    events = parse_eventlog((attacked.out / "eventlog.bin").read_bytes())
    assert replay(events)[12] == expected


def test_tpm2_eventlog_agrees_on_pcr12(attacked: Run) -> None:
    proc = subprocess.run(["tpm2_eventlog", str(attacked.out / "eventlog.bin")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    replayed = dict(re.findall(r"^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]{64})",
                               proc.stdout.split("\npcrs:")[1], re.M))
    assert bytes.fromhex(replayed["12"]) == attacked.pcrs[12]


def test_monitor_log_is_exported_with_the_evidence(attacked: Run) -> None:
    text = (attacked.out / "monitor.log").read_text()
    assert "launched on CPU 0" in text and "EPT violation" in text


# ---------------------------------------------------------------- isolation


@pytest.mark.attack(name='read EPC and monitor memory',
                    route='user /dev/mem, kernel direct map, new kernel alias, remapped user PTE',
                    defence='root EPT maps them to a read-only zero page')
def test_reads_of_epc_and_monitor_memory_return_only_zeros(attacked: Run) -> None:
    reads = re.findall(r"memattack: read (0x[0-9a-f]+) -> ([0-9a-f]+) (all zero|NONZERO)", attacked.log)
    assert {(addr, verdict) for addr, _, verdict in reads} >= {
        (f"{EPC:#x}", "all zero"), (f"{HV + 0x800000:#x}", "all zero")}
    for line in re.findall(r"he_attack: (?:alias_)?read .*", attacked.log):
        assert line.endswith("all zero"), line


def test_no_secret_byte_reaches_the_host(attacked: Run) -> None:
    for secret in (SECRET, MONITOR_SECRET):
        assert secret.hex() not in attacked.log and secret.decode() not in attacked.log
    assert attacked.secrets_before_poweroff == (SECRET, MONITOR_SECRET), "nothing was overwritten"


def test_power_off_scrubs_epc_and_monitor_memory_first(attacked: Run) -> None:
    assert attacked.secrets_after_poweroff == (bytes(len(SECRET)), bytes(len(MONITOR_SECRET)))
    assert "host asked for poweroff (port 0x604); scrubbing" in attacked.monitor_log


@pytest.mark.attack(name='write or execute EPC and monitor memory from user mode',
                    route='/dev/mem mapping and a remapped user PTE',
                    defence='EPT violation, #GP injected, SIGSEGV')
def test_user_writes_and_executes_are_ept_violations_that_kill_the_process(attacked: Run) -> None:
    assert programs(attacked, "memattack").count("killed by signal 11 (SIGSEGV)") == 3
    assert re.search(r"traps: memattack\[\d+\] general protection fault ip:[0-9a-f]+ .* error:0",
                     attacked.log)


@pytest.mark.attack(name='write or execute EPC and monitor memory from the kernel',
                    route='direct map and a new alias mapping (/dev/he_attack)',
                    defence='EPT violation, #GP injected, oops kills only the process')
def test_kernel_writes_and_executes_oops_and_only_the_process_dies(attacked: Run) -> None:
    assert attacked.log.count("general protection fault: 0000 [#") == 3
    # the three #GP oopses, and the #UD oops of the user-level hypercall from CPL 0
    assert programs(attacked, "attack").count("killed by signal 11 (SIGSEGV)") == 4
    assert attacked.log.rindex("Hello from user space") > attacked.log.rindex("end trace")


def test_each_violation_is_logged_with_its_exit_qualification(attacked: Run) -> None:
    v = list(attacked.monitor.violations)
    kinds = sorted((r.access, r.cpl, r.gpa) for r in v)
    assert kinds == sorted([
        ("write", 3, EPC), ("fetch", 3, EPC), ("write", 3, HV + 0x800000),
        ("write", 0, EPC), ("write", 0, HV + 0x800000), ("fetch", 0, HV + 0x800000)]), \
        attacked.monitor_log
    for r in v:
        assert r.qualification & 0b111 == {"read": 1, "write": 2, "fetch": 4}[r.access]
        assert (r.qualification >> 3) & 0b111 == 0b001, "the zero page is read-only"
        assert r.qualification & 0x180 == 0x180, "guest-linear address valid, translated access"
    assert attacked.monitor.exit_counts[ExitReason.EPT_VIOLATION] == len(v)
    assert re.search(r"EPT violation: write of GPA 0x31000000, linear 0x[0-9a-f]+ at rip 0x[0-9a-f]+ "
                     r"\(CPL 3\), qualification 0x18a \[write", attacked.monitor_log)


@pytest.mark.attack(name='DMA from or to EPC and monitor memory',
                    route='the platform DMA engine programmed by the host kernel',
                    defence='IOMMU domain without EPC or monitor memory')
def test_dma_into_epc_and_monitor_memory_is_blocked_and_logged(attacked: Run) -> None:
    assert re.search(rf"dma_read {EPC:#x} len 64: status FAULT at {EPC:#x} reason 0x6 .*buffer unchanged",
                     attacked.log)
    assert re.search(rf"dma_write {HV + 0x800000:#x} .*status FAULT at {HV + 0x800000:#x} reason 0x5",
                     attacked.log)
    assert len(attacked.monitor.dma_faults) == 2
    assert "IOMMU blocked DMA" in attacked.monitor_log


# ---------------------------------------------------------------- hypercalls


@pytest.mark.attack(name='hypercall with a pointer into the EPC',
                    route='VMCALL INIT_CMRM from the host kernel',
                    defence='pointer walked and checked: -EFAULT')
def test_a_pointer_into_the_epc_is_refused(attacked: Run) -> None:
    assert re.search(r"he_attack: hypercall 0x200\(.*\) = -14", attacked.log), attacked.log[-3000:]
    assert "INIT_CMRM regions at GPA 0x31000000 is in the EPC" in attacked.monitor_log


def test_unknown_supervisor_hypercall_is_enosys(attacked: Run) -> None:
    assert re.search(r"he_attack: hypercall 0x999\(.*\) = -38", attacked.log)


@pytest.mark.attack(name='supervisor hypercall from user mode',
                    route='VMCALL HYPERVISOR_DISABLE at CPL 3',
                    defence='#UD')
def test_supervisor_hypercall_from_user_mode_is_ud_and_the_monitor_stays(attacked: Run) -> None:
    assert re.search(r"traps: hcall\[\d+\] trap invalid opcode", attacked.log)
    assert programs(attacked, "hcall") == ["killed by signal 4 (SIGILL)"]
    assert "supervisor-level hypercall HYPERVISOR_DISABLE from CPL 3: #UD" in attacked.monitor_log


@pytest.mark.attack(name='user-level hypercall from the kernel',
                    route='VMCALL ENCLAVE_ENTER at CPL 0',
                    defence='#UD')
def test_user_hypercall_from_kernel_mode_is_ud(attacked: Run) -> None:
    assert "user-level hypercall ENCLAVE_ENTER from CPL 0: #UD" in attacked.monitor_log
    assert re.search(r"invalid opcode: 0000 \[#\d+\]", attacked.log)


def test_exit_counters_match_what_the_host_did(attacked: Run) -> None:
    counts = attacked.monitor.exit_counts
    assert counts[ExitReason.CPUID] == 3, "the three CPUIDs of /bin/cpuid"
    # INIT_CMRM + DONE by the driver, the two attack hypercalls, and the two refused ones
    assert counts[ExitReason.VMCALL] == 6
    assert counts[ExitReason.IO_INSTRUCTION] == 1, "the power-off write"
    assert counts[ExitReason.HLT] >= 1, "the idle loop while /bin/sleep waits"
    assert counts[ExitReason.EXCEPTION_NMI] == counts[ExitReason.EXTERNAL_INTERRUPT] == 0, \
        "the host's exceptions and interrupts are not intercepted"
    assert attacked.result.stats["exits"]["CPUID"] == 3


# ---------------------------------------------------------------- disable / enable


@pytest.fixture(scope="module")
def cycled(tmp_path_factory, guest_images_with) -> Run:
    rc = f"""/bin/sysctl -w dev.hyper_enclave.enabled=1
/bin/cpuidloop 1000
/bin/sysctl -w dev.hyper_enclave.enabled=0
/bin/cpuid
/bin/memattack read {HV + 0x800000:#x}
/bin/memattack write {EPC:#x} 0x77
/bin/sysctl -w dev.hyper_enclave.enabled=1
/bin/sysctl dev.hyper_enclave.enabled
/bin/memattack read {EPC:#x}
"""
    return boot(tmp_path_factory.mktemp("cycled"), guest_images_with, rc, plant=True)


def test_cpuid_exits_count_exactly(cycled: Run) -> None:
    assert cycled.monitor.exit_counts[ExitReason.CPUID] == 1000


def test_disabled_host_runs_natively_and_monitor_memory_was_scrubbed(cycled: Run) -> None:
    log = cycled.log
    assert "hyper_enclave: The hypervisor has been disabled" in log
    assert "cpuid: hypervisor signature none" in log and "cpuid: vmx supported 1" in log
    assert re.search(rf"memattack: read {HV + 0x800000:#x} -> 0+ all zero", log), "scrubbed"
    assert re.search(rf"memattack: wrote 0x77 to {EPC:#x} \(reads back 0x77\)", log), "plain RAM"


def test_re_enabling_launches_again_and_measures_again(cycled: Run) -> None:
    assert cycled.log.count("The hypervisor has been enabled") == 2
    assert cycled.monitor.launches == 2 and cycled.monitor.enabled
    digest = hashlib.sha256(build_monitor_image()).digest()
    once = hashlib.sha256(bytes(32) + digest).digest()
    assert cycled.pcrs[12] == hashlib.sha256(once + digest).digest()
    assert re.search(rf"memattack: read {EPC:#x} -> 0+ all zero", cycled.log), "hidden again"
