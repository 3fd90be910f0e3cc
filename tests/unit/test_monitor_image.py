"""The monitor image file: header format, checks with clear errors, code binding."""

from __future__ import annotations

import hashlib
import struct

import pytest

from hyperenclave.vmm import image as img
from hyperenclave.vmm.image import (HE_HEADER_SIZE, HE_VERSION, MonitorImage, MonitorImageError,
                                    build_monitor_image, code_digest, code_manifest)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_monitor_image(cache_dir=tmp_path_factory.mktemp("monitor"))


def test_built_image_has_the_header_the_driver_expects(image: bytes) -> None:
    h = MonitorImage.parse(image, len(image))
    assert image[:8] == b"HYPERENC"
    assert h.version == HE_VERSION and h.image_size == len(image)
    assert h.entry_offset == HE_HEADER_SIZE
    assert h.code_digest == code_digest() == hashlib.sha256(code_manifest()).digest()
    assert (h.max_cpus, h.hv_phys, h.epc_size) == (0, 0, 0), "driver fields are left to the driver"


def test_entry_stub_is_x86_that_executes_vmxon(image: bytes) -> None:
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    code = image[HE_HEADER_SIZE:image.index(code_manifest())]
    mnemonics = [i.mnemonic for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, HE_HEADER_SIZE)]
    assert "vmxon" in mnemonics
    assert mnemonics[-1] == "ret", "returns to the driver when the launch is refused"


def test_image_carries_the_code_manifest_it_is_measured_with(image: bytes) -> None:
    assert image.endswith(code_manifest())
    assert b"hyperenclave/vmm/monitor.py" in code_manifest()


def test_builds_are_reproducible_and_cached(image: bytes, tmp_path) -> None:
    assert build_monitor_image(cache_dir=tmp_path) == image


def patched(image: bytes, offset: int, fmt: str, value) -> bytes:
    data = bytearray(image)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize("mutate, message", [
    (lambda i: b"HYPERENX" + i[8:], "bad signature b'HYPERENX'"),
    (lambda i: patched(i, img.OFF_VERSION, "<I", 2), "version 2 does not match"),
    (lambda i: patched(i, img.OFF_HEADER_SIZE, "<I", 0x80), "header size 128"),
    (lambda i: patched(i, img.OFF_ENTRY, "<Q", 1 << 40), "entry offset"),
    (lambda i: patched(i, img.OFF_PERCPU_SIZE, "<Q", 0x123), "per-CPU size"),
    (lambda i: i[:0x40], "shorter than its"),
])
def test_bad_images_are_refused_with_a_clear_reason(image: bytes, mutate, message: str) -> None:
    bad = mutate(image)
    with pytest.raises(MonitorImageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        MonitorImage.parse(bad, len(bad))


def test_truncated_file_is_refused(image: bytes) -> None:
    with pytest.raises(MonitorImageError, match="claims"):
        MonitorImage.parse(image[:-10], len(image) - 10)
