"""Which host TPM commands the monitor refuses once it runs, judged from raw command bytes."""

import struct

import pytest

from hyperenclave.tpm.mediation import (
    TPM_RC_COMMAND_CODE,
    TPM_RC_LOCALITY,
    handle_rc,
    refusal,
)
from hyperenclave.tpm.objects import EK_HANDLE, MONITOR_AK_HANDLE

TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS = 0x8001, 0x8002
PASSWORD_AUTH = struct.pack(">IIHBH", 9, 0x4000_0009, 0, 0, 0)   # authorizationSize + TPMS_AUTH
SHA256_DIGEST = struct.pack(">IH", 1, 0x000B) + bytes(32)
OWNER = 0x4000_0001


def command(code: int, handles: tuple[int, ...] = (), params: bytes = b"",
            sessions: bool = False) -> bytes:
    body = b"".join(struct.pack(">I", h) for h in handles)
    body += (PASSWORD_AUTH if sessions else b"") + params
    tag = TPM_ST_SESSIONS if sessions else TPM_ST_NO_SESSIONS
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def pcr_extend(pcr: int) -> bytes:
    return command(0x182, (pcr,), SHA256_DIGEST, sessions=True)


@pytest.mark.parametrize("pcr", [12, 13, 14])
def test_extends_of_the_monitors_pcrs_are_refused_as_a_locality_violation(pcr: int) -> None:
    rc, reason = refusal(pcr_extend(pcr))
    assert rc == TPM_RC_LOCALITY
    assert f"PCR {pcr} belongs to the monitor" in reason


@pytest.mark.parametrize("pcr", [0, 8, 10, 11, 15, 16, 23])
def test_extends_of_other_pcrs_go_to_the_tpm(pcr: int) -> None:
    assert refusal(pcr_extend(pcr)) is None


def test_pcr_reset_and_pcr_event_of_monitor_pcrs_are_refused() -> None:
    assert refusal(command(0x13D, (14,), sessions=True))[0] == TPM_RC_LOCALITY
    assert refusal(command(0x13C, (13,), b"\x00\x01x", sessions=True))[0] == TPM_RC_LOCALITY
    assert refusal(command(0x13D, (16,), sessions=True)) is None


def test_any_command_naming_a_monitor_handle_is_refused_with_that_handles_number() -> None:
    read_public = command(0x173, (MONITOR_AK_HANDLE,))
    assert refusal(read_public)[0] == handle_rc(1) == 0x18B
    quote = command(0x158, (MONITOR_AK_HANDLE,), sessions=True)
    assert refusal(quote)[0] == handle_rc(1)
    evict = command(0x120, (OWNER, MONITOR_AK_HANDLE), struct.pack(">I", MONITOR_AK_HANDLE),
                    sessions=True)
    assert refusal(evict)[0] == handle_rc(2) == 0x28B
    activate = command(0x147, (EK_HANDLE, MONITOR_AK_HANDLE), sessions=True)
    assert refusal(activate)[0] == handle_rc(2)


def test_persisting_a_host_object_into_the_monitors_range_is_refused() -> None:
    transient = 0x8000_0000
    evict = command(0x120, (OWNER, transient), struct.pack(">I", 0x8100_0180), sessions=True)
    rc, reason = refusal(evict)
    assert rc == 0x1C4                       # TPM_RC_VALUE, parameter 1
    assert "0x81000180 belongs to the monitor" in reason
    elsewhere = command(0x120, (OWNER, transient), struct.pack(">I", 0x8100_0001), sessions=True)
    assert refusal(elsewhere) is None


def test_the_host_keeps_the_ek_and_ordinary_commands() -> None:
    assert refusal(command(0x173, (EK_HANDLE,))) is None                  # ReadPublic
    assert refusal(command(0x17B, (), b"\x00\x08")) is None               # GetRandom
    assert refusal(command(0x17E, (), b"\x00" * 10)) is None              # PCR_Read


def test_commands_that_would_wipe_the_monitors_keys_are_refused() -> None:
    clear = command(0x126, (0x4000_000C,), sessions=True)                 # TPM2_Clear(platform)
    rc, reason = refusal(clear)
    assert rc == TPM_RC_LOCALITY and "Clear" in reason


def test_unknown_command_codes_are_refused_not_guessed() -> None:
    rc, reason = refusal(command(0x2000_0001))
    assert rc == TPM_RC_COMMAND_CODE and "0x20000001" in reason


def test_short_commands_are_left_to_the_tpm() -> None:
    assert refusal(b"\x80\x01\x00\x00") is None
    assert refusal(struct.pack(">HII", TPM_ST_NO_SESSIONS, 10, 0x182)) is None
