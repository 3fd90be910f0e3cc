"""The host side of the hypervisor launch: the hyper_enclave driver, sysctl, the oops path,
/dev/mem, /dev/he_attack and the attack programs, on a real boot of the mock Linux host.

No monitor is needed: crafted images stop the launch at the checks, or at an entry stub that
refuses (`mov rax, -95; ret`) or returns 0 without launching anything.
"""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperenclave.guest.build import (DEFAULT_CMDLINE, GUEST_DIR, MONITOR_PATH, GuestImages,
                                      build_guest, build_initramfs)
from hyperenclave.machine import Machine, MachineConfig
from hyperenclave.platform.firmware.measured_boot import BootImages
from hyperenclave.tpm.eventlog import EV_EVENT_TAG, parse_eventlog, replay

pytestmark = pytest.mark.integration

# The contract, read from the C header so the test cannot drift from it.
HE = {name: int(value, 0) for name, value in re.findall(
    r"^#define\s+(HE_\w+|HC_\w+|DMA_\w+)\s+(0x[0-9A-Fa-f]+|\d+)u?\b",
    (GUEST_DIR / "include" / "hyperenclave.h").read_text(), re.M)}
RESERVED = (0x30000000, 256 << 20)           # DEFAULT_CMDLINE's memmap=256M$0x30000000
HV_SIZE = 2 << 20
REFUSE = bytes.fromhex("48C7C0A1FFFFFFC3")  # mov rax, -95 (EOPNOTSUPP); ret
ENTER = bytes.fromhex("31C0C3")             # xor eax, eax; ret: "running", but nothing is
EVENT_DATA = struct.pack("<II", 0x48454E43, 24) + b"hyperenclave-monitor.bin"
FREE_RAM = 0x20000000                       # usable RAM the kernel does not touch this early


def monitor_image(code: bytes = REFUSE, *, signature: bytes = b"HYPERENC",
                  version: int = HE["HE_VERSION"], size: int = 0x400) -> bytes:
    """A flat image as include/hyperenclave.h describes it, with `code` at the entry."""
    header = HE["HE_HEADER_SIZE"]
    body = bytearray(size)
    body[header:header + len(code)] = code
    struct.pack_into("<8sIIQQ", body, HE["HE_OFF_SIGNATURE"], signature, version, header, size,
                     header)
    struct.pack_into("<QQ", body, HE["HE_OFF_PERCPU_SIZE"], 0x4000, 0x10000)
    body[HE["HE_OFF_CODE_DIGEST"]:HE["HE_OFF_CODE_DIGEST"] + 32] = hashlib.sha256(b"code").digest()
    return bytes(body)


@dataclass
class Boot:
    log: str
    eventlog: bytes
    pcrs: dict[int, bytes]
    monitor: bytes          # the first 2 MiB of the reserved range at power-off
    memory: bytes           # what boot(read=(address, length)) asked for

    def exit_status(self, program: str) -> list[str]:
        return re.findall(rf"/bin/{program}\[\d+\] (exited with status \d+|killed by signal \d+)",
                          self.log)


@pytest.fixture(scope="module")
def built() -> GuestImages:
    return build_guest()


def boot(tmp_path: Path, built: GuestImages, rc: str, image: bytes | None = None,
         cmdline: str = DEFAULT_CMDLINE, monitor_at: int = RESERVED[0],
         read: tuple[int, int] | None = None) -> Boot:
    """Boot with this /etc/rc (and monitor image); the guest must power off."""
    files = {"/etc/rc": rc.encode()}
    if image is not None:
        files[MONITOR_PATH] = image
    images = BootImages(built.loader.read_bytes(), built.kernel.read_bytes(),
                        build_initramfs(built, files))
    config = MachineConfig(name="he", state_dir=tmp_path / "he", cmdline=cmdline)
    with Machine(config, images) as m:
        m.boot()
        # Unicorn can wedge inside emu_start, where run()'s own timeout is never checked
        watchdog = threading.Timer(90, m.stop)
        watchdog.start()
        try:
            result = m.run(timeout=60)
        finally:
            watchdog.cancel()
        assert result.state == "poweroff", \
            f"{result.state} {result.reason}; last console line {m.last_line()!r}"
        extra = m.memory.read(*read) if read else b""
        return Boot(m.serial_text(), m.eventlog_bytes(), m.pcrs(),
                    m.memory.read(monitor_at, HV_SIZE), extra)


def pcr12_events(b: Boot):
    return [e for e in parse_eventlog(b.eventlog) if e.pcr == 12]


# ---------------------------------------------------------------- sysctl, no image


@pytest.fixture(scope="module")
def no_image(tmp_path_factory, built) -> Boot:
    rc = """/bin/sysctl dev.hyper_enclave.enabled
/bin/sysctl -w dev.hyper_enclave.enabled=1
/bin/sysctl -n dev.hyper_enclave.enabled
/bin/sysctl dev.hyper_enclave.enabled=0
/bin/sysctl -w dev.hyper_enclave.enabled=2
/bin/sysctl dev.nope
/bin/sysctl -w dev.nope=1
/bin/sysctl -w dev.hyper_enclave.enabled
/bin/sysctl
"""
    return boot(tmp_path_factory.mktemp("noimg"), built, rc)


def test_sysctl_reads_the_state_like_procps(no_image) -> None:
    assert "dev.hyper_enclave.enabled = 0\n" in no_image.log
    assert re.search(r"^0$", no_image.log, re.M), "-n prints only the value"


def test_a_missing_image_is_enoent_in_dmesg_and_sysctl(no_image) -> None:
    assert ("hyper_enclave: Missing hypervisor image /lib/firmware/hyperenclave-monitor.bin"
            in no_image.log)
    assert 'sysctl: setting key "dev.hyper_enclave.enabled": No such file or directory' in no_image.log
    assert not pcr12_events(no_image)


def test_writing_the_current_state_is_a_no_op_and_bad_values_are_einval(no_image) -> None:
    statuses = no_image.exit_status("sysctl")
    assert statuses[3] == "exited with status 0"                    # =0 while disabled
    assert 'sysctl: setting key "dev.hyper_enclave.enabled": Invalid argument' in no_image.log
    assert statuses[4] == "exited with status 255"


def test_sysctl_errors_and_exit_status(no_image) -> None:
    log = no_image.log
    assert log.count("sysctl: cannot stat /proc/sys/dev/nope: No such file or directory") == 2
    assert 'sysctl: "dev.hyper_enclave.enabled" must be of the form name=value' in log
    assert "Usage: sysctl" in log
    assert no_image.exit_status("sysctl")[5:] == ["exited with status 255"] * 4


def test_the_driver_reports_the_reserved_range_at_boot(no_image) -> None:
    assert "hyper_enclave: reserved [mem 0x30000000-0x3fffffff] for the hypervisor and EPC" in no_image.log


# ---------------------------------------------------------------- image checks


# one boot per kind of check (a boot costs about a second)
BAD_IMAGES = {
    "signature": (monitor_image(signature=b"\x7fELF\x02\x01\x01\x00"),
                  'hyper_enclave: monitor image has a bad signature ".ELF...." (expected "HYPERENC")'),
    "version": (monitor_image(version=2),
                "hyper_enclave: monitor image version 2 does not match the driver's version 1"),
    "truncated": (monitor_image()[:0x300], "hyper_enclave: monitor image is truncated: 768 of 1024 bytes"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_a_bad_image_is_refused_before_measuring_with_its_own_message(tmp_path, built, case) -> None:
    image, message = BAD_IMAGES[case]
    b = boot(tmp_path, built, "/bin/sysctl -w dev.hyper_enclave.enabled=1\n"
             "/bin/sysctl dev.hyper_enclave.enabled\n", image)
    assert message in b.log
    assert 'sysctl: setting key "dev.hyper_enclave.enabled": Invalid argument' in b.log
    assert "dev.hyper_enclave.enabled = 0" in b.log
    assert not pcr12_events(b)
    assert b.monitor == bytes(HV_SIZE)


# ---------------------------------------------------------------- the reserved range

INVALID = "hyper_enclave: memmap reserved regions aren't valid: "
BAD_RANGES = {
    "malformed": ("hyper_enclave.str_memmap=0x30000000",
                  INVALID + 'cannot parse str_memmap="0x30000000" (expected <start>,<size>)'),
    "usable RAM": ("hyper_enclave.str_memmap=0x20000000,256M",
                   INVALID + "[mem 0x20000000-0x2fffffff] overlaps usable RAM (reserve it with memmap=)"),
}


@pytest.mark.parametrize("case", list(BAD_RANGES))
def test_an_invalid_reserved_range_is_reported_at_boot_and_refused(tmp_path, built, case) -> None:
    param, message = BAD_RANGES[case]
    b = boot(tmp_path, built, "/bin/sysctl -w dev.hyper_enclave.enabled=1\n", monitor_image(),
             cmdline=f"{DEFAULT_CMDLINE} {param}")
    assert b.log.count(message) == 2             # at boot and at enable
    assert 'sysctl: setting key "dev.hyper_enclave.enabled": Invalid argument' in b.log
    assert not pcr12_events(b)


# ---------------------------------------------------------------- a refused launch


@pytest.fixture(scope="module")
def refused(tmp_path_factory, built) -> Boot:
    rc = ("/bin/sysctl -w dev.hyper_enclave.enabled=1\n"
          "/bin/sysctl dev.hyper_enclave.enabled\n"
          "/bin/sysctl -w dev.hyper_enclave.enabled=1\n")
    return boot(tmp_path_factory.mktemp("refused"), built, rc, monitor_image())


def test_the_launch_is_logged_like_hyperenclave(refused) -> None:
    log = refused.log
    assert ("hyper_enclave: monitor version 1 (/lib/firmware/hyperenclave-monitor.bin, "
            "1024 bytes, entry at +0x100)") in log
    assert ("hyper_enclave: monitor memory [mem 0x30000000-0x301fffff], "
            "EPC [mem 0x30200000-0x3fffffff]") in log


def test_a_refused_launch_returns_its_error_and_leaves_the_driver_disabled(refused) -> None:
    log = refused.log
    assert log.count("hyper_enclave: failed to enter the hypervisor on CPU 0: error -95") == 2
    assert log.count('sysctl: setting key "dev.hyper_enclave.enabled": Operation not supported') == 2
    assert "dev.hyper_enclave.enabled = 0" in log
    assert "has been enabled" not in log


def test_monitor_memory_is_scrubbed_after_a_refused_launch(refused) -> None:
    assert refused.monitor == bytes(HV_SIZE)


def test_the_image_is_measured_into_pcr12_before_entry_each_time(refused) -> None:
    image = monitor_image()
    digest = hashlib.sha256(image).digest()
    events = pcr12_events(refused)
    assert [(e.event_type, e.digest, e.data) for e in events] == [(EV_EVENT_TAG, digest, EVENT_DATA)] * 2
    measured = [m.start() for m in re.finditer(
        rf"hyper_enclave: measured monitor image into PCR12: sha256={digest.hex()}\n", refused.log)]
    failed = [m.start() for m in re.finditer("failed to enter the hypervisor", refused.log)]
    assert len(measured) == 2 and measured[0] < failed[0] < measured[1] < failed[1]


def test_the_event_log_replays_to_the_tpm(refused) -> None:
    events = parse_eventlog(refused.eventlog)
    for pcr, value in replay(events).items():
        assert refused.pcrs[pcr] == value, f"PCR{pcr}"
    assert refused.pcrs[12] != bytes(32)


def test_tpm2_eventlog_accepts_the_pcr12_events_and_agrees(refused, tmp_path) -> None:
    (tmp_path / "log.bin").write_bytes(refused.eventlog)
    run = subprocess.run(["tpm2_eventlog", str(tmp_path / "log.bin")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert not re.search(r"warn|error", run.stderr, re.I), run.stderr
    assert run.stdout.count("EV_EVENT_TAG") >= 2
    section = run.stdout.split("\npcrs:")[1]
    replayed = dict(re.findall(r"^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]{64})", section, re.M))
    assert replayed["12"].lower() == refused.pcrs[12].hex()


# ---------------------------------------------------------------- entry "succeeds"


SUBRANGE = (0x38000000, 128 << 20)


@pytest.fixture(scope="module")
def entered(tmp_path_factory, built) -> Boot:
    """entry() returns 0 but no monitor runs: the header the driver filled stays in memory and
    HC_INIT_CMRM is a #UD in kernel mode, an oops that kills sysctl. The parameters pick the
    upper half of the memmap= range."""
    rc = "/bin/sysctl -w dev.hyper_enclave.enabled=1\n/bin/sysctl dev.hyper_enclave.enabled\n"
    cmdline = (f"{DEFAULT_CMDLINE} hyper_enclave.str_memmap=0x38000000,128M "
               "hyper_enclave.feature_mask=0x302 hyper_enclave.bogus=1")
    return boot(tmp_path_factory.mktemp("entered"), built, rc, monitor_image(ENTER),
                cmdline=cmdline, monitor_at=SUBRANGE[0])


def test_parameters_come_from_the_command_line(entered) -> None:
    assert "hyper_enclave: unknown parameter 'bogus' ignored" in entered.log
    assert "hyper_enclave: reserved [mem 0x38000000-0x3fffffff] for the hypervisor and EPC" in entered.log
    assert ("hyper_enclave: monitor memory [mem 0x38000000-0x381fffff], "
            "EPC [mem 0x38200000-0x3fffffff]") in entered.log


def test_the_driver_fills_the_header_of_the_copy(entered) -> None:
    image = monitor_image(ENTER)
    mem = entered.monitor
    assert mem[:HE["HE_OFF_MAX_CPUS"]] == image[:HE["HE_OFF_MAX_CPUS"]]
    assert mem[HE["HE_HEADER_SIZE"]:len(image)] == image[HE["HE_HEADER_SIZE"]:]
    u32 = lambda off: struct.unpack_from("<I", mem, off)[0]  # noqa: E731
    u64 = lambda off: struct.unpack_from("<Q", mem, off)[0]  # noqa: E731
    assert (u32(HE["HE_OFF_MAX_CPUS"]), u32(HE["HE_OFF_ONLINE_CPUS"])) == (1, 1)
    assert u64(HE["HE_OFF_HV_PHYS"]) == SUBRANGE[0]
    assert u64(HE["HE_OFF_HV_SIZE"]) == HV_SIZE
    assert u64(HE["HE_OFF_EPC_PHYS"]) == SUBRANGE[0] + HV_SIZE
    assert u64(HE["HE_OFF_EPC_SIZE"]) == SUBRANGE[1] - HV_SIZE
    assert u64(HE["HE_OFF_PERCPU_PHYS"]) == SUBRANGE[0] + 0x1000
    assert u64(HE["HE_OFF_TPM_MMIO"]) == 0xFED40000
    assert u32(HE["HE_OFF_TPM_TYPE"]) == 0
    assert u32(HE["HE_OFF_FEATURE_MASK"]) == 0x302


def test_after_entry_the_driver_passes_convertible_memory_with_hc_init_cmrm(entered) -> None:
    log = entered.log
    oops = log[log.index("invalid opcode: 0000 [#1]"):]
    regs = dict(re.findall(r"\b(RAX|RDI|RSI): ([0-9a-f]{16})", oops[:oops.index("Call Trace")]))
    assert int(regs["RAX"], 16) == HE["HC_INIT_CMRM"]
    assert int(regs["RDI"], 16) >> 47 == 0x1FFFF, "a kernel virtual pointer"
    regions = re.findall(r"hyper_enclave: Convertible Memory\[ *(\d+)\]: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]", log)
    usable = re.findall(r"user: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] usable", log)
    assert [(int(s, 16), int(e, 16)) for _, s, e in regions] == \
        [(int(s, 16), int(e, 16)) for s, e in usable]
    assert int(regs["RSI"], 16) == len(regions)
    for _, s, e in regions:
        assert int(e, 16) < RESERVED[0] or int(s, 16) >= RESERVED[0] + RESERVED[1]


def test_an_oops_in_process_context_kills_only_that_process(entered) -> None:
    log = entered.log
    assert "---[ end trace 0000000000000000 ]---" in log
    assert entered.exit_status("sysctl") == ["killed by signal 11", "exited with status 0"]
    assert "Kernel panic" not in log and "reboot: Power down" in log


# ---------------------------------------------------------------- /dev/mem, /dev/he_attack, programs

# mov eax, 42; ret (as the u64 memattack writes)
RET42 = int.from_bytes(bytes.fromhex("B82A000000C3").ljust(8, b"\0"), "little")


@pytest.fixture(scope="module")
def programs(tmp_path_factory, built) -> Boot:
    rc = f"""/bin/memattack read 0x1000
/bin/memattack remap-read 0x1000
/bin/attack read 0x1000 8
/bin/attack alias_read 0x1000 8
/bin/memattack write {FREE_RAM:#x} 0x1122334455667788
/bin/attack read {FREE_RAM:#x} 8
/bin/attack write {FREE_RAM + 8:#x} 0xa5a5
/bin/attack alias_write {FREE_RAM + 16:#x} 0x5a5a
/bin/memattack remap-write {FREE_RAM + 24:#x} 0x77
/bin/memattack write {FREE_RAM + 0x1000:#x} {RET42:#x}
/bin/memattack exec {FREE_RAM + 0x1000:#x}
/bin/attack exec {FREE_RAM + 0x1000:#x}
/bin/attack frobnicate 1
/bin/attack read 0x100000000
/bin/attack hypercall 0 1 0
/bin/hcall 0x80000000 1 2
/bin/cpuidloop 1000
/bin/cpuid
/bin/hello
"""
    return boot(tmp_path_factory.mktemp("programs"), built, rc, read=(FREE_RAM, 32))


def test_memattack_reads_ram_through_dev_mem_and_a_remapped_page(programs) -> None:
    magic = struct.pack("<Q", 0x31304F4F42455448).hex()   # boot_params at 0x1000
    assert re.search(rf"^memattack: read 0x1000 -> {magic}[0-9a-f]{{112}} NONZERO$", programs.log, re.M)
    assert re.search(r"^memattack: remap 0x[0-9a-f]+ -> 0x1000 \(was 0x[0-9a-f]+\)$", programs.log, re.M)
    assert len(re.findall(rf"^memattack: read 0x1000 -> {magic}", programs.log, re.M)) == 2


def test_he_attack_reads_through_the_direct_map_and_an_alias(programs) -> None:
    magic = struct.pack("<Q", 0x31304F4F42455448).hex()
    assert f"he_attack: read 0x1000 len 8: {magic} NONZERO" in programs.log
    assert f"attack: read 0x1000 len 8: {magic} NONZERO" in programs.log
    assert re.search(rf"he_attack: alias_read 0x1000 via 0xffffffffc[0-9a-f]{{7}} len 8: {magic} NONZERO",
                     programs.log)


def test_writes_land_in_physical_memory(programs) -> None:
    assert f"memattack: wrote 0x1122334455667788 to {FREE_RAM:#x} (reads back 0x1122334455667788)" in programs.log
    assert f"he_attack: read {FREE_RAM:#x} len 8: 8877665544332211 NONZERO" in programs.log
    assert f"he_attack: write {FREE_RAM + 8:#x} value 0xa5a5: reads back 0xa5a5" in programs.log
    assert re.search(rf"he_attack: alias_write {FREE_RAM + 16:#x} via 0xffffffffc[0-9a-f]{{7}} value 0x5a5a: "
                     "reads back 0x5a5a$", programs.log, re.M)
    assert f"memattack: wrote 0x77 to {FREE_RAM + 24:#x} (reads back 0x77)" in programs.log
    assert struct.unpack("<4Q", programs.memory) == (0x1122334455667788, 0xA5A5, 0x5A5A, 0x77)


def test_exec_runs_code_at_a_physical_address_from_cpl3_and_cpl0(programs) -> None:
    assert f"memattack: exec {FREE_RAM + 0x1000:#x} returned 0x2a" in programs.log
    assert f"he_attack: exec {FREE_RAM + 0x1000:#x}: returned 0x2a" in programs.log


def test_a_bad_attack_command_is_einval(programs) -> None:
    assert "he_attack: bad command; use read PA [LEN]" in programs.log
    assert re.search(r"attack: bad command; .* \(Invalid argument\)", programs.log)


def test_kernel_faults_in_attack_kill_the_program_and_the_system_goes_on(programs) -> None:
    log = programs.log
    assert "BUG: unable to handle page fault for address: ffff888100000000" in log
    assert "invalid opcode: 0000 [#2]" in log          # VMCALL at CPL 0 with no monitor
    assert log.count("---[ end trace 0000000000000000 ]---") == 2
    assert programs.exit_status("attack")[-2:] == ["killed by signal 11"] * 2
    assert "Hello from user space" in log and "reboot: Power down" in log


def test_hcall_without_a_monitor_is_sigill(programs) -> None:
    assert re.search(r"traps: hcall\[\d+\] trap invalid opcode", programs.log)
    assert programs.exit_status("hcall") == ["killed by signal 4"]


def test_cpuidloop_and_cpuid(programs) -> None:
    assert "cpuidloop: done 1000" in programs.log
    assert re.search(r"^cpuid: vmx supported [01]$", programs.log, re.M)


# ---------------------------------------------------------------- the DMA engine


def test_dma_commands_on_ordinary_ram(tmp_path, built) -> None:
    rc = f"""/bin/attack dma_read 0x1000 8
/bin/attack dma_write {FREE_RAM:#x} 0x1234
/bin/attack read {FREE_RAM:#x} 8
/bin/attack dma_read 0x7ff00000 16
"""
    b = boot(tmp_path, built, rc)
    magic = struct.pack("<Q", 0x31304F4F42455448).hex()
    assert f"he_attack: dma_read 0x1000 len 8: status DONE, buffer {magic} NONZERO" in b.log
    assert f"he_attack: dma_write {FREE_RAM:#x} value 0x1234: status DONE" in b.log
    assert f"he_attack: read {FREE_RAM:#x} len 8: 3412000000000000 NONZERO" in b.log
    assert ("he_attack: dma_read 0x7ff00000 len 16: status FAULT at 0x7ff00000 reason 0x100 "
            "(master abort), buffer unchanged") in b.log
