"""TpmClient against a real swtpm: PCRs, raw passthrough, errors, and the event log
cross-checked by tpm2_eventlog 5.4."""

import hashlib
import re
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperenclave.tpm import EventLog, Swtpm, TpmClient, TpmError, parse_eventlog, replay
from hyperenclave.tpm.eventlog import (
    EV_COMPACT_HASH,
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EVENT_TAG,
    EV_IPL,
    EV_POST_CODE,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    encode_event_tag,
    encode_image_load_event,
    encode_utf16,
)

pytestmark = pytest.mark.integration

TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_CC_PCR_EXTEND = 0x00000182
TPM_CC_GET_RANDOM = 0x0000017B
TPM_RS_PW = 0x40000009
TPM_ALG_SHA256 = 0x000B
TPM_RC_SUCCESS = 0


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    with Swtpm(tmp_path / "tpm") as tpm:
        yield tpm


@pytest.fixture
def client(swtpm: Swtpm) -> Iterator[TpmClient]:
    with TpmClient.connect(swtpm) as c:
        yield c


def pcr_extend_command(pcr: int, digest: bytes) -> bytes:
    """TPM2_PCR_Extend with one password (TPM_RS_PW, empty auth) session, built by hand."""
    auth = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)  # handle, nonce size, attributes, hmac size
    params = struct.pack(">IH", 1, TPM_ALG_SHA256) + digest  # TPML_DIGEST_VALUES
    body = struct.pack(">II", TPM_CC_PCR_EXTEND, pcr) + struct.pack(">I", len(auth)) + auth + params
    return struct.pack(">HI", TPM_ST_SESSIONS, 6 + len(body)) + body


def test_pcr_extend_is_sha256_of_old_value_and_digest(client: TpmClient) -> None:
    digest = sha256(b"measurement")
    client.pcr_extend(10, digest)
    assert client.pcr_read([10]) == {10: sha256(bytes(32) + digest)}


def test_read_pcrs_returns_all_24_sha256_values_across_batches(client: TpmClient) -> None:
    client.pcr_extend(23, sha256(b"last"))
    pcrs = client.read_pcrs()
    assert sorted(pcrs) == list(range(24))
    assert pcrs[0] == bytes(32)
    assert pcrs[23] == sha256(bytes(32) + sha256(b"last"))


def test_raw_transmit_of_hand_built_pcr_extend_matches_esapi_extend(client: TpmClient) -> None:
    digest = sha256(b"guest crb")
    response = client.transmit(pcr_extend_command(16, digest))
    tag, size, rc = struct.unpack_from(">HII", response)
    assert (tag, size, rc) == (TPM_ST_SESSIONS, len(response), TPM_RC_SUCCESS)
    client.pcr_extend(15, digest)
    values = client.pcr_read([15, 16])
    assert values[16] == values[15] == sha256(bytes(32) + digest)


def test_transmit_returns_tpm_errors_to_the_caller_instead_of_raising(client: TpmClient) -> None:
    # PCR17 is a DRTM PCR: extending it from locality 0 is refused (TPM_RC_LOCALITY).
    response = client.transmit(pcr_extend_command(17, bytes(32)))
    assert struct.unpack_from(">HII", response) == (TPM_ST_NO_SESSIONS, 10, 0x907)
    assert client.get_random(4)  # the connection is still usable


def test_esapi_failure_raises_tpm_error_naming_operation_and_code(client: TpmClient) -> None:
    with pytest.raises(TpmError, match=r"pcr_extend\(PCR17\).*rc=0x907") as info:
        client.pcr_extend(17, bytes(32))
    assert info.value.rc == 0x907


def test_an_error_the_tpm_answered_is_not_taken_for_a_dying_swtpm(
        client: TpmClient, swtpm: Swtpm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a failure below the TPM (TCTI I/O) waits for swtpm to exit; a refusal the TPM
    answers (here TPM_RC_LOCALITY) is reported at once (it cost a second per error before)."""
    graces: list[float] = []
    check_alive = swtpm.check_alive
    monkeypatch.setattr(swtpm, "check_alive",
                        lambda context="", grace=0.0: (graces.append(grace), check_alive(context, grace)))
    with pytest.raises(TpmError, match="rc=0x907"):
        client.pcr_extend(17, bytes(32))
    assert graces and max(graces) == 0.0


def test_get_random_returns_more_than_one_digest_worth(client: TpmClient) -> None:
    data = client.get_random(100)
    assert len(data) == 100 and data != bytes(100)


def test_concurrent_callers_are_serialised(client: TpmClient) -> None:
    digest = sha256(b"x")

    def worker(pcr: int) -> None:
        for _ in range(20):
            client.pcr_extend(pcr, digest)
            get_random = struct.pack(">HIIH", TPM_ST_NO_SESSIONS, 12, TPM_CC_GET_RANDOM, 8)
            response = client.transmit(get_random)
            assert struct.unpack_from(">HII", response)[2] == TPM_RC_SUCCESS

    threads = [threading.Thread(target=worker, args=(pcr,)) for pcr in (10, 11, 12, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = bytes(32)
    for _ in range(20):
        expected = sha256(expected + digest)
    assert client.pcr_read([10, 11, 12, 13]) == dict.fromkeys([10, 11, 12, 13], expected)


def test_closed_client_refuses_calls(swtpm: Swtpm) -> None:
    c = TpmClient.connect(swtpm)
    c.close()
    c.close()
    with pytest.raises(TpmError, match="closed"):
        c.get_random(1)


def tpm2_eventlog_pcrs(stdout: str) -> dict[int, bytes]:
    section = stdout[stdout.index("pcrs:") :]
    return {
        int(m.group(1)): bytes.fromhex(m.group(2))
        for m in re.finditer(r"^\s+(\d+)\s*: 0x([0-9A-Fa-f]{64})$", section, re.MULTILINE)
    }


def test_measured_boot_log_is_accepted_by_tpm2_eventlog_and_matches_the_tpm(
    client: TpmClient, tmp_path: Path
) -> None:
    log = EventLog()

    def measure(pcr: int, event_type: int, data: bytes, digest: bytes | None = None) -> None:
        event = log.append(pcr, event_type, data, digest)
        client.pcr_extend(pcr, event.digest)

    kernel, initrd = sha256(b"kernel image"), sha256(b"initrd image")
    measure(0, EV_S_CRTM_VERSION, encode_utf16("HyperEnclave firmware 1.0"))
    measure(0, EV_POST_CODE, b"firmware", sha256(b"firmware volume"))
    loader = encode_image_load_event(0x100000, 65536)
    measure(4, EV_EFI_BOOT_SERVICES_APPLICATION, loader, sha256(b"loader"))
    measure(4, EV_COMPACT_HASH, b"hypervisor", sha256(b"hypervisor image"))
    measure(5, EV_EVENT_TAG, encode_event_tag(0x8F3B22ED, b"hv options"))
    measure(5, EV_COMPACT_HASH, b"boot config")
    measure(5, EV_EFI_ACTION, b"Exit Boot Services Invocation")
    for pcr in range(8):
        measure(pcr, EV_SEPARATOR, bytes(4))
    measure(8, EV_IPL, b"kernel_cmdline: console=ttyS0 quiet\x00", sha256(b"console=ttyS0 quiet"))
    measure(9, EV_IPL, b"/boot/vmlinuz\x00", kernel)
    measure(9, EV_IPL, b"/boot/initrd.img\x00", initrd)
    measure(12, EV_COMPACT_HASH, b"enclave mrenclave", sha256(b"not the payload"))
    measure(13, EV_EVENT_TAG, encode_event_tag(1, b"monitor"), sha256(b"monitor"))
    measure(14, EV_COMPACT_HASH, b"policy", sha256(b"policy blob"))

    path = tmp_path / "log.bin"
    path.write_bytes(log.to_bytes())
    result = subprocess.run(
        ["tpm2_eventlog", str(path)], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0, result.stderr
    assert not re.search(r"warn|error", result.stderr, re.IGNORECASE), result.stderr
    oracle = tpm2_eventlog_pcrs(result.stdout)
    measured = sorted(oracle)
    assert measured == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14]
    assert oracle == client.pcr_read(measured)
    assert replay(parse_eventlog(path.read_bytes())) == oracle
