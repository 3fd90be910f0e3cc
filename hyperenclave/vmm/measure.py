"""MRENCLAVE, computed exactly as SGX does (SDM Vol. 3D, ECREATE/EADD/EEXTEND/EINIT).

MRENCLAVE is one SHA-256 over 64-byte records, little-endian:

- ECREATE: "ECREATE\\0" | SSAFRAMESIZE u32 | SIZE u64 | 44 zero bytes
- EADD:    "EADD\\0\\0\\0\\0" | page offset from BASEADDR u64 | the first 48 bytes of SECINFO
- EEXTEND: "EEXTEND\\0" | chunk offset from BASEADDR u64 | 48 zero bytes, then the 256 bytes of
  the chunk (16 such groups per measured page)

EINIT's SHA256FINAL is the ordinary SHA-256 padding, so hashlib gives the same digest. Whole pages
and ranges are fed to hashlib in one buffer each, which keeps a 64 MiB enclave to a fraction of a
second (HyperEnclave's `enclave/measure.rs` does the same records).
"""

from __future__ import annotations

import hashlib
import struct

from .sgx import PAGE_SIZE, SecInfo

EEXTEND_CHUNK = 256
_ECREATE = struct.Struct("<8sIQ44x")
_EADD = struct.Struct("<8sQ48s")
_EEXTEND = struct.Struct("<8sQ48x")


class MeasurementError(RuntimeError):
    """The build steps came in an order SGX would refuse (or with misaligned offsets)."""


class EnclaveMeasurement:
    """The running MRENCLAVE of one enclave under construction."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._created = False
        self._digest: bytes | None = None

    def _check_open(self, leaf: str) -> None:
        if not self._created:
            raise MeasurementError(f"{leaf} before ECREATE")
        if self._digest is not None:
            raise MeasurementError(f"{leaf} after EINIT finalized the measurement")

    def ecreate(self, ssa_frame_size: int, size: int) -> None:
        """The first record: SSA frame size in pages and ELRANGE size in bytes."""
        if self._created:
            raise MeasurementError("ECREATE twice")
        self._created = True
        self._sha.update(_ECREATE.pack(b"ECREATE", ssa_frame_size, size))

    def eadd(self, offset: int, secinfo: SecInfo) -> None:
        """One page added at `offset` (page-aligned, from the enclave base)."""
        self._check_open("EADD")
        if offset % PAGE_SIZE:
            raise MeasurementError(f"EADD offset {offset:#x} is not page-aligned")
        self._sha.update(_EADD.pack(b"EADD", offset, secinfo.pack()[:48]))

    def eextend(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """EEXTEND every 256-byte chunk of `data`, the first at `offset` (256-aligned)."""
        self._check_open("EEXTEND")
        self._sha.update(_eextend_records(offset, data))

    def add_pages(self, offset: int, data: bytes | bytearray | memoryview, secinfo: SecInfo,
                  measure: bool = True) -> None:
        """EADD each page of `data` (starting at `offset`) followed, if `measure`, by its 16
        EEXTENDs: the order the SGX SDK and HyperEnclave's driver use."""
        self._check_open("EADD")
        view = memoryview(data).cast("B")
        if offset % PAGE_SIZE or len(view) % PAGE_SIZE:
            raise MeasurementError(f"pages at {offset:#x}+{len(view):#x} are not page-aligned")
        eadd_tail = secinfo.pack()[:48]
        for pos in range(0, len(view), PAGE_SIZE):
            self._sha.update(_EADD.pack(b"EADD", offset + pos, eadd_tail))
            if measure:
                self._sha.update(_eextend_records(offset + pos, view[pos:pos + PAGE_SIZE]))

    def finalize(self) -> bytes:
        """EINIT's SHA256FINAL: the MRENCLAVE. Later calls return the same value; later build
        steps are refused."""
        if not self._created:
            raise MeasurementError("EINIT before ECREATE")
        if self._digest is None:
            self._digest = self._sha.digest()
        return self._digest


def _eextend_records(offset: int, data: bytes | bytearray | memoryview) -> bytes:
    view = memoryview(data).cast("B")
    if offset % EEXTEND_CHUNK or len(view) % EEXTEND_CHUNK:
        raise MeasurementError(f"EEXTEND of {offset:#x}+{len(view):#x} is not in whole "
                               f"{EEXTEND_CHUNK}-byte chunks")
    parts: list[bytes | memoryview] = []
    for pos in range(0, len(view), EEXTEND_CHUNK):
        parts.append(_EEXTEND.pack(b"EEXTEND", offset + pos))
        parts.append(view[pos:pos + EEXTEND_CHUNK])
    return b"".join(parts)

