"""A machine does a measured boot of the mock Linux host, which runs its programs and powers off."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from hyperenclave.guest.initramfs import read_initramfs
from hyperenclave.machine import Machine, MachineConfig
from hyperenclave.platform.firmware.measured_boot import BootImages
from hyperenclave.tpm.eventlog import parse_eventlog, replay

pytestmark = pytest.mark.integration


def config(tmp_path: Path, name: str = "m", **kw) -> MachineConfig:
    return MachineConfig(name=name, state_dir=tmp_path / name, **kw)


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory, guest_images: BootImages):
    """One full boot to power-off, shared by the assertions below."""
    tmp = tmp_path_factory.mktemp("boot")
    with Machine(config(tmp), guest_images) as m:
        m.boot()
        result = m.run(timeout=120)
        out = m.export_evidence(tmp / "out")
        pcrs = m.pcrs()
    return result, out, pcrs, m


def test_guest_boots_runs_programs_and_powers_off(booted) -> None:
    result, out, _, _ = booted
    assert result.state == "poweroff", result.reason
    log = (out / "serial.log").read_text()
    assert re.search(r"^\[\s+\d+\.\d{6}\] ", log, re.M), "dmesg-style timestamps"
    assert "BIOS-e820" in log
    assert "Hello from user space" in log
    assert "reboot: Power down" in log


def test_a_faulting_program_is_reported_and_the_kernel_goes_on(booted) -> None:
    log = (booted[1] / "serial.log").read_text()
    m = re.search(r"segv\[\d+\]: segfault at 0 ip [0-9a-f]{16} sp [0-9a-f]{16} error \d", log)
    assert m, log
    assert log.index(m.group(0)) < log.index("reboot: Power down")
    assert log.count("Run /bin/") >= 2 or log.count("exited") >= 2


def test_memmap_range_is_reserved_by_the_kernel(booted) -> None:
    log = (booted[1] / "serial.log").read_text()
    assert "0x0000000030000000-0x000000003fffffff" in log


def test_event_log_replays_to_the_tpm_pcrs(booted) -> None:
    _, out, pcrs, _ = booted
    events = parse_eventlog((out / "eventlog.bin").read_bytes())
    for pcr, value in replay(events).items():
        assert pcrs[pcr] == value, f"PCR{pcr}"
    exported = json.loads((out / "pcrs.json").read_text())
    assert exported["sha256"]["9"] == pcrs[9].hex()


def test_tpm2_eventlog_accepts_the_log_without_warnings_and_agrees(booted) -> None:
    _, out, pcrs, _ = booted
    run = subprocess.run(["tpm2_eventlog", str(out / "eventlog.bin")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert not re.search(r"warn|error", run.stderr, re.I), run.stderr
    replayed = dict(re.findall(r"^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]{64})", run.stdout.split("\npcrs:")[1], re.M))
    assert replayed, run.stdout
    for idx, value in replayed.items():
        assert pcrs[int(idx)].hex() == value.lower(), f"PCR{idx}"


def measured_pcrs(tmp_path: Path, name: str, images: BootImages, **kw) -> dict[int, bytes]:
    """Firmware only: the PCRs a boot of these images records (no guest code needs to run)."""
    with Machine(config(tmp_path, name, **kw), images) as m:
        m.boot()
        return m.pcrs()


def test_one_kernel_byte_changes_pcr9_and_nothing_else(tmp_path: Path, guest_images: BootImages) -> None:
    base = measured_pcrs(tmp_path, "a", guest_images)
    kernel = bytearray(guest_images.kernel)
    kernel[-1] ^= 0xFF  # a byte of the ELF file (section table area)
    changed = measured_pcrs(tmp_path, "b", replace(guest_images, kernel=bytes(kernel)))
    assert [i for i in range(24) if base[i] != changed[i]] == [9]


def test_command_line_goes_to_pcr8_only(tmp_path: Path, guest_images: BootImages) -> None:
    base = measured_pcrs(tmp_path, "a", guest_images)
    changed = measured_pcrs(tmp_path, "b", guest_images,
                            cmdline=MachineConfig().cmdline + " quiet")
    assert [i for i in range(24) if base[i] != changed[i]] == [8]


def test_two_machines_boot_at_the_same_time(tmp_path: Path, guest_images: BootImages) -> None:
    results: dict[str, object] = {}

    def boot(name: str) -> None:
        with Machine(config(tmp_path, name), guest_images) as m:
            m.boot()
            results[name] = (m.run(timeout=120).state, m.swtpm.port if m.swtpm else None,
                             "Hello from user space" in m.serial_text())

    threads = [threading.Thread(target=boot, args=(n,)) for n in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["left"][0] == results["right"][0] == "poweroff"
    assert results["left"][2] and results["right"][2]
    assert results["left"][1] != results["right"][1]


def test_guest_code_extends_pcr10_through_the_crb_and_logs_each_program(booted, guest_images) -> None:
    """The kernel builds TPM2_PCR_Extend itself (IMA-style) and appends the TCG event."""
    _, out, pcrs, _ = booted
    files = read_initramfs(guest_images.initramfs)
    events = [e for e in parse_eventlog((out / "eventlog.bin").read_bytes()) if e.pcr == 10]
    assert [e.data.rstrip(b"\0").decode() for e in events] == [
        "/bin/hello", "/bin/segv", "/bin/cpuid", "/bin/sysctl", "/bin/cpuid", "/bin/hello_app",
        "/bin/hello"]
    for e in events:
        path = e.data.rstrip(b"\0").decode()
        assert e.digest == hashlib.sha256(files[path]).digest()
    assert replay(events)[10] == pcrs[10]


def test_tpm_commands_are_not_doubled_when_slices_end_inside_device_callbacks(
        tmp_path: Path, guest_images: BootImages) -> None:
    """Short slices make Unicorn replay I/O instructions; the CRB must still run each command once."""
    with Machine(config(tmp_path, "short", timeslice_us=200), guest_images) as m:
        m.boot()
        assert m.run(timeout=120).state == "poweroff"
        assert not [line for line in m.serial_lines if "failed" in line]
        logged = [e for e in parse_eventlog(m.eventlog_bytes()) if e.pcr in (10, 12)]
        assert m.crb.commands == len(logged) == 8, "seven programs into PCR10, the monitor into PCR12"
