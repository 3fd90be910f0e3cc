"""What tpm2_eventlog 5.4, our cross-check oracle, accepts without warnings.

These pin the findings recorded at the top of hyperenclave/tpm/eventlog.py: firmware and
hypervisor code must only emit the accepted forms, and a tools upgrade that changes the
behaviour shows up here.
"""

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from hyperenclave.tpm.eventlog import (
    EV_COMPACT_HASH,
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EVENT_TAG,
    EV_IPL,
    EV_NO_ACTION,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    EventLog,
    encode_event,
    encode_event_tag,
    encode_image_load_event,
    encode_utf16,
    parse_eventlog,
    replay,
)

pytestmark = pytest.mark.integration


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


OTHER = sha256(b"a digest that is not the hash of the event data")
CMDLINE = b"console=ttyS0 quiet"


def run_eventlog(tmp_path: Path, raw: bytes) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "log.bin"
    path.write_bytes(raw)
    return subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True, timeout=30)


def oracle_pcrs(stdout: str) -> dict[int, bytes]:
    section = stdout[stdout.index("pcrs:") :]
    return {
        int(m.group(1)): bytes.fromhex(m.group(2))
        for m in re.finditer(r"^\s+(\d+)\s*: 0x([0-9A-Fa-f]{64})$", section, re.MULTILINE)
    }


def one_event_log(pcr: int, event_type: int, data: bytes, digest: bytes) -> bytes:
    log = EventLog()
    log.append(pcr, event_type, data, digest)
    return log.to_bytes()


ACCEPTED = {
    "PCR4 boot services application, empty device path": (
        4, EV_EFI_BOOT_SERVICES_APPLICATION, encode_image_load_event(0x100000, 4096), OTHER),
    "PCR4 compact hash": (4, EV_COMPACT_HASH, b"boot loader", OTHER),
    "PCR5 event tag": (5, EV_EVENT_TAG, encode_event_tag(0x8F3B22ED, b"options"), OTHER),
    "PCR5 compact hash": (5, EV_COMPACT_HASH, b"boot config", OTHER),
    "PCR5 EFI action": (5, EV_EFI_ACTION, b"Exit Boot Services Invocation", OTHER),
    "PCR12 compact hash, foreign digest": (12, EV_COMPACT_HASH, b"enclave", OTHER),
    "PCR13 compact hash, foreign digest": (13, EV_COMPACT_HASH, b"enclave", OTHER),
    "PCR14 compact hash, foreign digest": (14, EV_COMPACT_HASH, b"enclave", OTHER),
    "PCR12 event tag, foreign digest": (12, EV_EVENT_TAG, encode_event_tag(1, b"enclave"), OTHER),
    "PCR13 event tag, foreign digest": (13, EV_EVENT_TAG, encode_event_tag(1, b"enclave"), OTHER),
    "PCR14 event tag, foreign digest": (14, EV_EVENT_TAG, encode_event_tag(1, b"enclave"), OTHER),
    "PCR14 EV_IPL, foreign digest": (14, EV_IPL, b"enclave", OTHER),
    "PCR12 EV_IPL, digest of the data": (12, EV_IPL, b"enclave\x00", sha256(b"enclave\x00")),
    "PCR8 command line, digest without NUL": (
        8, EV_IPL, b"kernel_cmdline: " + CMDLINE + b"\x00", sha256(CMDLINE)),
    "PCR8 command line, digest with NUL": (
        8, EV_IPL, b"kernel_cmdline: " + CMDLINE + b"\x00", sha256(CMDLINE + b"\x00")),
    "PCR9 kernel path": (9, EV_IPL, b"/boot/vmlinuz\x00", OTHER),
    "PCR9 initrd path without NUL": (9, EV_IPL, b"/boot/initrd.img", OTHER),
}  # fmt: skip

WARNED = {
    "PCR12 EV_IPL, foreign digest (re-hashed)": (
        12, EV_IPL, b"enclave", OTHER, "digest does not match its payload"),
    "PCR13 EV_IPL (not PCR 8/9/12/14)": (
        13, EV_IPL, b"enclave", sha256(b"enclave"), "not extending either PCR 8, 9, 12 or 14"),
    "PCR8 command line without NUL": (
        8, EV_IPL, b"kernel_cmdline: " + CMDLINE, sha256(CMDLINE), "unexpected format"),
    "PCR8 command line, foreign digest": (
        8, EV_IPL, b"kernel_cmdline: " + CMDLINE + b"\x00", OTHER, "digest does not match"),
    "separator, foreign digest": (0, EV_SEPARATOR, bytes(4), OTHER, "digest does not match"),
    "S-CRTM version, foreign digest": (
        0, EV_S_CRTM_VERSION, encode_utf16("v1"), OTHER, "digest does not match"),
}  # fmt: skip


@pytest.mark.parametrize("case", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_tpm2_eventlog_accepts_without_warning(case, tmp_path: Path) -> None:
    pcr, event_type, data, digest = case
    raw = one_event_log(pcr, event_type, data, digest)
    result = run_eventlog(tmp_path, raw)
    assert result.returncode == 0
    assert result.stderr == ""
    assert oracle_pcrs(result.stdout) == replay(parse_eventlog(raw))


@pytest.mark.parametrize("case", WARNED.values(), ids=WARNED.keys())
def test_tpm2_eventlog_warns_but_still_exits_zero(case, tmp_path: Path) -> None:
    pcr, event_type, data, digest, warning = case
    result = run_eventlog(tmp_path, one_event_log(pcr, event_type, data, digest))
    assert result.returncode == 0
    assert "WARN" in result.stderr and warning in result.stderr


def test_malformed_image_load_event_is_a_hard_error(tmp_path: Path) -> None:
    raw = one_event_log(4, EV_EFI_BOOT_SERVICES_APPLICATION, b"xx", OTHER)
    result = run_eventlog(tmp_path, raw)
    assert result.returncode == 1
    assert "UEFI image load event" in result.stderr


def test_tpm2_eventlog_wrongly_extends_post_header_no_action_events(tmp_path: Path) -> None:
    log = EventLog()
    log.append(0, EV_SEPARATOR, bytes(4))
    raw = log.to_bytes() + encode_event(0, EV_NO_ACTION, bytes(32), b"StartupLocality\x00\x03")
    result = run_eventlog(tmp_path, raw)
    assert result.returncode == 0 and result.stderr == ""
    correct = replay(parse_eventlog(raw))[0]
    assert correct == sha256(bytes(32) + sha256(bytes(4)))
    assert oracle_pcrs(result.stdout)[0] == sha256(correct + bytes(32))  # the 5.4 bug
