"""Specification of the sha256 TCG crypto-agile event log writer, strict parser and replay."""

import hashlib
import struct

import pytest

from hyperenclave.tpm.eventlog import (
    EV_COMPACT_HASH,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EVENT_TAG,
    EV_IPL,
    EV_NO_ACTION,
    EV_POST_CODE,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    SPEC_ID_HEADER,
    EventLog,
    EventLogError,
    describe,
    encode_event,
    encode_event_tag,
    encode_image_load_event,
    encode_utf16,
    event_type_name,
    parse_eventlog,
    replay,
)

HEADER_LEN = 0x41
EVENT_OVERHEAD = 50  # pcr, type, count, alg, 32-byte digest, size


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sample_log() -> EventLog:
    log = EventLog()
    log.append(0, EV_S_CRTM_VERSION, encode_utf16("HyperEnclave 1.0"))
    log.append(0, EV_POST_CODE, b"firmware", digest=sha256(b"firmware image"))
    log.append(4, EV_EFI_BOOT_SERVICES_APPLICATION, encode_image_load_event(0x100000, 4096))
    log.append(5, EV_EVENT_TAG, encode_event_tag(0x8F3B22ED, b"options"))
    log.append(8, EV_IPL, b"kernel_cmdline: console=ttyS0\x00", digest=sha256(b"console=ttyS0"))
    for pcr in range(8):
        log.append(pcr, EV_SEPARATOR, bytes(4))
    return log


def test_header_bytes_match_the_reference_layout() -> None:
    expected = (
        bytes.fromhex("00000000" "03000000") + bytes(20) + bytes.fromhex("21000000")
        + b"Spec ID Event03\x00"
        + bytes.fromhex("00000000" "00" "02" "00" "02" "01000000" "0b00" "2000" "00")
    )  # fmt: skip
    assert SPEC_ID_HEADER == expected
    assert len(SPEC_ID_HEADER) == HEADER_LEN
    assert EventLog().to_bytes() == expected


def test_event_bytes_are_pcr_type_count_alg_digest_size_data() -> None:
    digest = sha256(b"abc")
    raw = encode_event(9, EV_IPL, digest, b"/boot/vmlinuz")
    head = struct.pack("<IIIH", 9, EV_IPL, 1, 0x000B)
    assert raw == head + digest + struct.pack("<I", 13) + b"/boot/vmlinuz"
    assert len(raw) == EVENT_OVERHEAD + 13


def test_log_is_header_followed_by_encoded_events() -> None:
    log = sample_log()
    body = b"".join(encode_event(e.pcr, e.event_type, e.digest, e.data) for e in log.events)
    assert log.to_bytes() == SPEC_ID_HEADER + body


def test_append_defaults_digest_to_sha256_of_data_and_returns_the_event() -> None:
    log = EventLog()
    event = log.append(9, EV_IPL, b"/boot/initrd")
    assert event.digest == sha256(b"/boot/initrd")
    assert event.offset == HEADER_LEN
    assert log.events == [event]


def test_append_refuses_post_header_no_action_events() -> None:
    with pytest.raises(ValueError, match="EV_NO_ACTION"):
        EventLog().append(0, EV_NO_ACTION, b"StartupLocality\x00\x03", digest=bytes(32))


def test_writer_and_parser_round_trip() -> None:
    log = sample_log()
    parsed = parse_eventlog(log.to_bytes())
    assert parsed == log.events
    assert parsed[1].offset == HEADER_LEN + EVENT_OVERHEAD + len(log.events[0].data)


def test_empty_log_parses_to_no_events() -> None:
    assert parse_eventlog(SPEC_ID_HEADER) == []


def test_replay_extends_sha256_of_old_value_and_digest_from_zero() -> None:
    log = sample_log()
    pcr0 = bytes(32)
    for event in log.events:
        if event.pcr == 0:
            pcr0 = sha256(pcr0 + event.digest)
    pcrs = replay(log.events)
    assert pcrs[0] == pcr0
    assert pcrs[8] == sha256(bytes(32) + sha256(b"console=ttyS0"))
    assert sorted(pcrs) == [0, 1, 2, 3, 4, 5, 6, 7, 8]


def test_replay_never_extends_no_action_events() -> None:
    raw = SPEC_ID_HEADER + encode_event(0, EV_NO_ACTION, bytes(32), b"StartupLocality\x00\x03")
    raw += encode_event(0, EV_SEPARATOR, sha256(bytes(4)), bytes(4))
    pcrs = replay(parse_eventlog(raw))
    assert pcrs == {0: sha256(bytes(32) + sha256(bytes(4)))}


def corrupt(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


FIRST = HEADER_LEN  # offset of the first event in sample_log()


@pytest.mark.parametrize(
    ("name", "mutate", "offset", "message"),
    [
        ("bad signature", lambda d: corrupt(d, 0x20, b"Spec ID Event02\x00"), 0x20, "signature"),
        ("header not EV_NO_ACTION", lambda d: corrupt(d, 4, b"\x04"), 4, "EventType"),
        ("nonzero sha1 header digest", lambda d: corrupt(d, 8, b"\x01"), 8, "zero"),
        ("wrong header EventSize", lambda d: corrupt(d, 0x1C, b"\x22"), 0x1C, "EventSize"),
        ("spec version 1.2", lambda d: corrupt(d, 0x34, b"\x02\x01"), 0x34, "spec version"),
        ("uintnSize 1", lambda d: corrupt(d, 0x37, b"\x01"), 0x37, "uintnSize"),
        ("two algorithms", lambda d: corrupt(d, 0x38, b"\x02"), 0x38, "numberOfAlgorithms"),
        ("sha1 bank", lambda d: corrupt(d, 0x3C, b"\x04\x00"), 0x3C, "algorithmId"),
        ("bad digest size", lambda d: corrupt(d, 0x3E, b"\x14\x00"), 0x3E, "digestSize"),
        ("truncated header", lambda d: d[:0x30], 0x20, "truncated"),
        ("digestCount 2", lambda d: corrupt(d, FIRST + 8, b"\x02"), FIRST + 8, "digestCount"),
        ("unknown algorithm", lambda d: corrupt(d, FIRST + 12, b"\x0c\x00"), FIRST + 12, "0x000c"),
        ("PCR index 24", lambda d: corrupt(d, FIRST, b"\x18"), FIRST, "PCRIndex 24"),
        ("truncated digest", lambda d: d[: FIRST + 20], FIRST + 14, "truncated sha256 digest"),
        ("truncated event data", lambda d: d[:-1], None, "truncated event data"),
        ("trailing bytes", lambda d: d + b"\x00" * 7, None, "7 trailing bytes"),
        ("trailing zero event head", lambda d: d + bytes(12), None, "digestCount 0"),
    ],
)
def test_corruption_raises_event_log_error_naming_the_offset(name, mutate, offset, message) -> None:
    good = sample_log()
    data = good.to_bytes()
    if offset is None:  # defects at the end: the offset is the last event's data or the end
        last = good.events[-1]
        offset = {
            "truncated event data": last.offset + EVENT_OVERHEAD,
            "trailing bytes": len(data),
            "trailing zero event head": len(data) + 8,
        }[name]
    with pytest.raises(EventLogError, match=message) as info:
        parse_eventlog(mutate(data))
    assert info.value.offset == offset
    assert f"offset {offset} " in str(info.value)


def test_describe_decodes_strings_separators_and_tags() -> None:
    log = EventLog()
    crtm = log.append(0, EV_S_CRTM_VERSION, encode_utf16("HyperEnclave 1.0"))
    ipl = log.append(9, EV_IPL, b"/boot/vmlinuz\x00")
    sep = log.append(4, EV_SEPARATOR, bytes(4))
    tag = log.append(5, EV_EVENT_TAG, encode_event_tag(0x8F3B22ED, b"opts"))
    blob = log.append(12, EV_COMPACT_HASH, b"\x00\xff\x01", digest=bytes(32))
    assert "'HyperEnclave 1.0'" in describe(crtm)
    assert describe(ipl).startswith("PCR9  EV_IPL")
    assert "'/boot/vmlinuz'" in describe(ipl)
    assert describe(sep).endswith("separator")
    assert "tag 0x8f3b22ed (4 bytes)" in describe(tag)
    assert describe(blob).endswith("3 bytes")


def test_unknown_event_types_are_named_by_hex_value() -> None:
    assert event_type_name(EV_EFI_BOOT_SERVICES_APPLICATION) == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert event_type_name(0x1234) == "0x00001234"
