"""The tpm2-tools serialized PCR file (pcrs.ser), the PCR 14 enclave event layout, and how the
monitor appends its events to the firmware's log in guest memory."""

import hashlib
import struct

import pytest

from hyperenclave.platform.firmware.bootparam import BOOT_PARAMS_ADDR, EVENTLOG_AREA, BootParams
from hyperenclave.tpm.eventlog import (EV_EVENT_TAG, EV_SEPARATOR, EventLog, encode_event,
                                       parse_eventlog)
from hyperenclave.tpm.quote import QUOTE_PCRS, serialize_pcrs
from hyperenclave.vmm.sgx import Attributes, Secs
from hyperenclave.vmm.tpm_anchor import (ENCLAVE_IDENTITY, EnclaveIdentity, EventLogFull,
                                         append_guest_event)

SELECTION_SIZE, DIGEST_LIST_SIZE = 132, 532


def values(indices) -> dict[int, bytes]:
    return {i: hashlib.sha256(bytes([i])).digest() for i in indices}


def test_ten_pcrs_take_the_1200_bytes_tpm2_quote_writes() -> None:
    assert len(serialize_pcrs(values(range(10)))) == 1200


def test_selection_is_one_sha256_bank_with_a_three_byte_bitmap_of_the_quoted_pcrs() -> None:
    data = serialize_pcrs(values(QUOTE_PCRS))
    count, alg, size_of_select = struct.unpack_from("<IHB", data)
    assert (count, alg, size_of_select) == (1, 0x000B, 3)
    assert data[7:11] == bytes([0xFF, 0x73, 0x00, 0x00])     # PCRs 0-7; 8, 9, 12, 13, 14
    assert data[12:SELECTION_SIZE] == bytes(SELECTION_SIZE - 12)


def test_digests_follow_in_index_order_eight_per_list() -> None:
    pcrs = values(QUOTE_PCRS)
    data = serialize_pcrs(pcrs)
    assert len(data) == SELECTION_SIZE + 4 + 2 * DIGEST_LIST_SIZE
    (lists,) = struct.unpack_from("<I", data, SELECTION_SIZE)
    assert lists == 2
    found = []
    for n in range(lists):
        at = SELECTION_SIZE + 4 + n * DIGEST_LIST_SIZE
        (count,) = struct.unpack_from("<I", data, at)
        for slot in range(count):
            size, = struct.unpack_from("<H", data, at + 4 + 66 * slot)
            found.append(data[at + 6 + 66 * slot:at + 6 + 66 * slot + size])
    assert found == [pcrs[i] for i in sorted(QUOTE_PCRS)]


def test_bad_pcr_values_are_refused() -> None:
    with pytest.raises(ValueError, match="PCR 24"):
        serialize_pcrs({24: bytes(32)})
    with pytest.raises(ValueError, match="PCR 3"):
        serialize_pcrs({3: bytes(20)})


def test_enclave_identity_is_84_little_endian_bytes_from_the_secs() -> None:
    secs = Secs(mr_enclave=b"E" * 32, mr_signer=b"S" * 32,
                attributes=Attributes(flags=0x7, xfrm=0x3), isv_prod_id=0x0102, isv_svn=0x0304)
    data = EnclaveIdentity.of(secs).pack()
    assert ENCLAVE_IDENTITY.size == len(data) == 84
    assert data == b"E" * 32 + b"S" * 32 + struct.pack("<QQHH", 7, 3, 0x0102, 0x0304)
    assert EnclaveIdentity.unpack(data) == EnclaveIdentity.of(secs)
    with pytest.raises(ValueError, match="83 bytes"):
        EnclaveIdentity.unpack(data[:-1])


def test_monitor_events_are_appended_to_the_firmwares_log_in_guest_memory(mem) -> None:
    log = EventLog()
    log.append(0, EV_SEPARATOR, b"\0\0\0\0")
    head = log.to_bytes()
    mem.write(EVENTLOG_AREA[0], head)
    mem.write(BOOT_PARAMS_ADDR, BootParams(0, 0, 0, 0, EVENTLOG_AREA[0], len(head),
                                           EVENTLOG_AREA[1]).pack())
    record = encode_event(13, EV_EVENT_TAG, bytes(32), b"key")
    append_guest_event(mem, record)
    params = BootParams.unpack(mem.read(BOOT_PARAMS_ADDR, 0x1000))
    assert params.eventlog_size == len(head) + len(record)
    events = parse_eventlog(mem.read(EVENTLOG_AREA[0], params.eventlog_size))
    assert [(e.pcr, e.data) for e in events] == [(0, b"\0\0\0\0"), (13, b"key")]


def test_a_full_or_missing_log_is_refused_before_anything_is_written(mem) -> None:
    with pytest.raises(EventLogFull, match="no event log: boot_params magic"):
        append_guest_event(mem, encode_event(14, EV_EVENT_TAG, bytes(32), b"x"))
    mem.write(BOOT_PARAMS_ADDR, BootParams(0, 0, 0, 0, EVENTLOG_AREA[0], 100, 120).pack())
    with pytest.raises(EventLogFull, match="no room for a 51-byte event"):
        append_guest_event(mem, encode_event(14, EV_EVENT_TAG, bytes(32), b"x"))
    assert BootParams.unpack(mem.read(BOOT_PARAMS_ADDR, 0x1000)).eventlog_size == 100
