"""TCG PC Client crypto-agile event log (TCG PFP spec), sha256 bank only.

Firmware, the hypervisor and guest code append measurements here while extending the
same digests into the TPM; a verifier parses the log back and replays it against a quote.

What `tpm2_eventlog` 5.4 (our cross-check oracle) accepts with NO stderr warning, found
by experiment and pinned by tests/integration/test_tpm_eventlog_oracle.py:

* PCR4 boot-loader code: EV_EFI_BOOT_SERVICES_APPLICATION with a well-formed
  UEFI_IMAGE_LOAD_EVENT (32-byte header, empty device path) -> OK, any digest; a payload
  shorter than the header is a hard error (rc 1). EV_COMPACT_HASH -> OK.
* PCR5 boot configuration: EV_EVENT_TAG, EV_COMPACT_HASH, EV_EFI_ACTION -> OK, any digest.
* PCR12/13/14 with a digest that is NOT sha256(data): EV_COMPACT_HASH and EV_EVENT_TAG
  -> OK in all three (use these). EV_IPL: PCR12 is re-hashed and warns (confirmed; OK only
  if digest == sha256(data) including any NUL), PCR13 warns ("not extending either PCR 8,
  9, 12 or 14") whatever the digest, PCR14 is not checked.
* PCR8 command line: EV_IPL b"kernel_cmdline: <text>\\0" with digest = sha256(<text after
  the first space>), with or without the NUL in the hash -> OK. The data MUST end in NUL
  and contain a space, else "event data is in unexpected format"; a wrong digest warns.
* PCR9 kernel/initrd: EV_IPL with a path string (NUL optional), any digest -> OK.
* EV_SEPARATOR and EV_S_CRTM_VERSION are re-hashed: digest must be sha256(data).
* Post-header EV_NO_ACTION: 5.4 extends its (zero) digest, so its `pcrs:` replay differs
  from the TPM (confirmed, no warning). Never emit them: append() refuses.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

# --- Event types (TCG PC Client Platform Firmware Profile, section 10.4.1) ---------------
EV_PREBOOT_CERT = 0x0
EV_POST_CODE = 0x1
EV_UNUSED = 0x2
EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_ACTION = 0x5
EV_EVENT_TAG = 0x6
EV_S_CRTM_CONTENTS = 0x7
EV_S_CRTM_VERSION = 0x8
EV_CPU_MICROCODE = 0x9
EV_PLATFORM_CONFIG_FLAGS = 0xA
EV_TABLE_OF_DEVICES = 0xB
EV_COMPACT_HASH = 0xC
EV_IPL = 0xD
EV_IPL_PARTITION_DATA = 0xE
EV_NONHOST_CODE = 0xF
EV_NONHOST_CONFIG = 0x10
EV_NONHOST_INFO = 0x11
EV_OMIT_BOOT_DEVICE_EVENTS = 0x12
EV_EFI_EVENT_BASE = 0x80000000
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_HANDOFF_TABLES = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2

EVENT_TYPE_NAMES: dict[int, str] = {
    value: name for name, value in globals().items() if name.startswith("EV_")
}

TPM_ALG_SHA256 = 0x000B
SHA256_SIZE = 32
PCR_COUNT = 24

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
SPEC_PLATFORM_CLASS_CLIENT = 0
SPEC_VERSION_MINOR = 0
SPEC_VERSION_MAJOR = 2
SPEC_ERRATA = 0
SPEC_UINTN_SIZE_64 = 2

_EVENT_HEAD = struct.Struct("<III")  # PCRIndex, EventType, digestCount
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class EventLogError(ValueError):
    """A log that is malformed; the message names the byte offset and the defect."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"event log offset {offset} (0x{offset:x}): {what}")
        self.offset = offset


@dataclass(frozen=True)
class Event:
    """One TCG_PCR_EVENT2 record; `offset` is where it starts in the parsed log."""

    pcr: int
    event_type: int
    digest: bytes
    data: bytes
    offset: int = -1


def encode_spec_id_header() -> bytes:
    """The first record: a SHA1-format EV_NO_ACTION carrying Spec ID Event03 (sha256 only)."""
    spec_id = (
        SPEC_ID_SIGNATURE
        + struct.pack(
            "<IBBBBI",
            SPEC_PLATFORM_CLASS_CLIENT,
            SPEC_VERSION_MINOR,
            SPEC_VERSION_MAJOR,
            SPEC_ERRATA,
            SPEC_UINTN_SIZE_64,
            1,
        )
        + struct.pack("<HH", TPM_ALG_SHA256, SHA256_SIZE)
        + b"\x00"  # vendorInfoSize
    )
    return struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), len(spec_id)) + spec_id


SPEC_ID_HEADER = encode_spec_id_header()


def encode_event(pcr: int, event_type: int, digest: bytes, data: bytes) -> bytes:
    """Bytes of one TCG_PCR_EVENT2 with a single sha256 digest (the layout guest code writes)."""
    if len(digest) != SHA256_SIZE:
        raise ValueError(f"sha256 digest must be {SHA256_SIZE} bytes, got {len(digest)}")
    if not 0 <= pcr < PCR_COUNT:
        raise ValueError(f"PCR index {pcr} out of range 0..{PCR_COUNT - 1}")
    return (
        _EVENT_HEAD.pack(pcr, event_type, 1)
        + _U16.pack(TPM_ALG_SHA256)
        + digest
        + _U32.pack(len(data))
        + data
    )


# --- Payload builders for event data that tpm2_eventlog decodes -------------------------


def encode_event_tag(tag_id: int, data: bytes) -> bytes:
    """TCG_PCClientTaggedEvent payload of EV_EVENT_TAG: {u32 id, u32 size, data}."""
    return struct.pack("<II", tag_id, len(data)) + data


def encode_image_load_event(
    image_address: int, image_length: int, link_time_address: int = 0, device_path: bytes = b""
) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT payload of EV_EFI_BOOT_SERVICES_APPLICATION (x86-64 UINTN)."""
    return (
        struct.pack("<QQQQ", image_address, image_length, link_time_address, len(device_path))
        + device_path
    )


def encode_utf16(text: str) -> bytes:
    """NUL-terminated UTF-16LE, the encoding of EV_S_CRTM_VERSION strings."""
    return (text + "\x00").encode("utf-16-le")


class EventLog:
    """An append-only sha256 event log that starts with the Spec ID Event03 header."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._body = bytearray()

    def append(
        self, pcr: int, event_type: int, data: bytes, digest: bytes | None = None
    ) -> Event:
        """Record a measurement; `digest` defaults to sha256(data).

        The caller extends the same digest into the TPM. EV_NO_ACTION is refused because
        tpm2_eventlog 5.4 would extend it and disagree with the TPM.
        """
        if event_type == EV_NO_ACTION:
            raise ValueError("post-header EV_NO_ACTION events are not emitted (tpm2-tools 5.4 bug)")
        if digest is None:
            digest = hashlib.sha256(data).digest()
        offset = len(SPEC_ID_HEADER) + len(self._body)
        self._body += encode_event(pcr, event_type, digest, data)
        event = Event(pcr, event_type, bytes(digest), bytes(data), offset)
        self._events.append(event)
        return event

    @property
    def events(self) -> list[Event]:
        """The appended events (header excluded), in order."""
        return list(self._events)

    def to_bytes(self) -> bytes:
        """The whole binary log as firmware would hand it to the OS."""
        return SPEC_ID_HEADER + bytes(self._body)


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if offset + size > len(data):
        raise EventLogError(
            offset, f"truncated {what}: need {size} bytes, {len(data) - offset} left"
        )


def _parse_header(data: bytes) -> int:
    """Validate the Spec ID Event03 header strictly; return the offset after it."""
    _need(data, 0, 32, "Spec ID header")
    pcr, event_type, sha1_digest, size = struct.unpack_from("<II20sI", data, 0)
    if pcr != 0:
        raise EventLogError(0, f"header PCRIndex {pcr}, expected 0")
    if event_type != EV_NO_ACTION:
        raise EventLogError(4, f"header EventType {event_type:#x}, expected EV_NO_ACTION (3)")
    if sha1_digest != bytes(20):
        raise EventLogError(8, "header digest is not 20 zero bytes")
    off = 0x20
    _need(data, off, 33, "Spec ID event")
    if data[off : off + 16] != SPEC_ID_SIGNATURE:
        signature = data[off : off + 16]
        raise EventLogError(off, f"bad signature {signature!r}, expected {SPEC_ID_SIGNATURE!r}")
    fields = struct.unpack_from("<IBBBBI", data, off + 16)
    platform_class, minor, major, _errata, uintn, n_algs = fields
    if platform_class not in (0, 1):
        raise EventLogError(off + 16, f"platformClass {platform_class}, expected 0 or 1")
    if (major, minor) != (SPEC_VERSION_MAJOR, SPEC_VERSION_MINOR):
        raise EventLogError(off + 20, f"spec version {major}.{minor}, expected 2.0")
    if uintn != SPEC_UINTN_SIZE_64:
        raise EventLogError(off + 23, f"uintnSize {uintn}, expected 2 (UINT64)")
    if n_algs != 1:
        raise EventLogError(off + 24, f"numberOfAlgorithms {n_algs}, expected 1 (sha256 only)")
    alg, digest_size = struct.unpack_from("<HH", data, off + 28)
    if alg != TPM_ALG_SHA256:
        raise EventLogError(off + 28, f"algorithmId {alg:#06x}, expected sha256 (0x000b)")
    if digest_size != SHA256_SIZE:
        raise EventLogError(off + 30, f"digestSize {digest_size} for sha256, expected 32")
    vendor_size = data[off + 32]
    expected = 33 + vendor_size
    if size != expected:
        raise EventLogError(0x1C, f"header EventSize {size}, expected {expected}")
    _need(data, off + 33, vendor_size, "vendorInfo")
    return 0x20 + size


def parse_eventlog(data: bytes) -> list[Event]:
    """Parse a sha256-only crypto-agile log; reject anything malformed (EventLogError).

    Unlike tpm2_eventlog 5.4 this checks the header, sizes, algorithms and trailing bytes.
    The header itself is validated and not returned.
    """
    off = _parse_header(data)
    events: list[Event] = []
    while off < len(data):
        start = off
        if len(data) - off < _EVENT_HEAD.size:
            raise EventLogError(off, f"{len(data) - off} trailing bytes after the last event")
        pcr, event_type, count = _EVENT_HEAD.unpack_from(data, off)
        if pcr >= PCR_COUNT:
            raise EventLogError(off, f"PCRIndex {pcr} out of range 0..{PCR_COUNT - 1}")
        if count != 1:
            raise EventLogError(off + 8, f"digestCount {count}, expected 1 (sha256 only)")
        off += _EVENT_HEAD.size
        _need(data, off, 2, "digest algorithm")
        (alg,) = _U16.unpack_from(data, off)
        if alg != TPM_ALG_SHA256:
            raise EventLogError(
                off, f"unknown digest algorithm {alg:#06x}, log declares only sha256"
            )
        off += 2
        _need(data, off, SHA256_SIZE, "sha256 digest")
        digest = data[off : off + SHA256_SIZE]
        off += SHA256_SIZE
        _need(data, off, 4, "EventSize")
        (size,) = _U32.unpack_from(data, off)
        off += 4
        _need(data, off, size, f"event data of {size} bytes")
        events.append(Event(pcr, event_type, bytes(digest), bytes(data[off : off + size]), start))
        off += size
    return events


def replay(events: list[Event]) -> dict[int, bytes]:
    """PCR values the events produce from all-zero PCRs: PCR = SHA256(PCR || digest).

    Only PCRs that received at least one extended event appear; EV_NO_ACTION is skipped.
    """
    pcrs: dict[int, bytes] = {}
    for event in events:
        if event.event_type == EV_NO_ACTION:
            continue
        old = pcrs.get(event.pcr, bytes(SHA256_SIZE))
        pcrs[event.pcr] = hashlib.sha256(old + event.digest).digest()
    return pcrs


def event_type_name(event_type: int) -> str:
    """Spec name of an event type, or its hex value if unknown."""
    return EVENT_TYPE_NAMES.get(event_type, f"0x{event_type:08x}")


def _text(data: bytes) -> str | None:
    """Printable ASCII without trailing NULs, or None if the payload is binary."""
    text = data.rstrip(b"\x00")
    if text and all(0x20 <= b < 0x7F or b in (0x09, 0x0A) for b in text):
        return text.decode("ascii")
    return None


def _payload_summary(event: Event) -> str:
    data = event.data
    if event.event_type == EV_S_CRTM_VERSION and len(data) % 2 == 0:
        try:
            return repr(data.decode("utf-16-le").rstrip("\x00"))
        except UnicodeDecodeError:
            pass
    if event.event_type == EV_SEPARATOR and len(data) == 4:
        (value,) = _U32.unpack(data)
        return "separator" if value == 0 else f"separator (error {value:#x})"
    if event.event_type == EV_EVENT_TAG and len(data) >= 8:
        tag_id, size = struct.unpack_from("<II", data)
        return f"tag {tag_id:#x} ({size} bytes)"
    if event.event_type == EV_EFI_BOOT_SERVICES_APPLICATION and len(data) >= 32:
        addr, length, _link, _dp = struct.unpack_from("<QQQQ", data)
        return f"image at {addr:#x}, {length} bytes"
    locality_prefix = b"StartupLocality\x00"
    if event.event_type == EV_NO_ACTION and data.startswith(locality_prefix) and len(data) == 17:
        return f"StartupLocality {data[16]}"
    text = _text(data)
    if text is not None:
        return repr(text)
    return f"{len(data)} bytes"


def describe(event: Event) -> str:
    """One console line: PCR, type, short digest and a decoded payload."""
    return (
        f"PCR{event.pcr:<2} {event_type_name(event.event_type):<32} "
        f"{event.digest.hex()[:16]}  {_payload_summary(event)}"
    )
