"""The single owner of one machine's TPM connection.

Firmware, the guest's TPM device and the monitor all talk to the same swtpm. Without a
resource manager transient handles and sessions are shared state, so every call goes
through one TpmClient and is serialised by its lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TypeVar

from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TCTILdr,
    TPM2_ALG,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMT_HA,
    TPMU_HA,
    TSS2_Exception,
)

from hyperenclave.tpm.swtpm import Swtpm

# libtss2 prints its own WARNING/ERROR lines for every failed command (an expected unseal
# refusal included); TpmError already carries the operation and response code. Set TSS2_LOG
# (e.g. esys+debug) to see them.
os.environ.setdefault("TSS2_LOG", "all+none")

SHA256_SIZE = 32
PCR_COUNT = 24
_PCRS_PER_READ = 8  # TPM2_PCR_Read returns at most 8 digests per call
_MAX_RESPONSE = 4096  # swtpm's TPM buffer size
_DEATH_GRACE_S = 1.0
_RC_LAYER_SHIFT = 16  # TSS2_RC: bits 23:16 name the layer that failed; 0 is the TPM's own answer

T = TypeVar("T")


def read_pcr_values(esapi: ESAPI, indices: list[int]) -> dict[int, bytes]:
    """sha256 values of `indices` (sorted, 0-23) in batches of 8, inside a caller's sequence."""
    values: dict[int, bytes] = {}
    for start in range(0, len(indices), _PCRS_PER_READ):
        batch = indices[start : start + _PCRS_PER_READ]
        selection = TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, batch)))
        _, _, digests = esapi.pcr_read(selection)
        if len(digests) != len(batch):
            raise TpmError("pcr_read", f"asked for PCRs {batch}, got {len(digests)} digests")
        values.update(zip(batch, (bytes(d) for d in digests)))
    return values


class TpmError(RuntimeError):
    """A TPM or TSS failure; the message names the operation and the response code."""

    def __init__(self, operation: str, detail: str, rc: int | None = None) -> None:
        code = f" (rc=0x{rc:x})" if rc is not None else ""
        super().__init__(f"TPM {operation} failed: {detail}{code}")
        self.operation = operation
        self.rc = rc


class TpmClient:
    """Serialised ESAPI plus raw command passthrough on one swtpm TCTI connection."""

    def __init__(self, port: int, *, swtpm: Swtpm | None = None, host: str = "127.0.0.1") -> None:
        """Connect to swtpm at host:port; pass `swtpm` so a dead process raises SwtpmDied."""
        self.port = port
        self._swtpm = swtpm
        self._lock = threading.Lock()
        self._check_process("connect")
        try:
            self._tcti = TCTILdr("swtpm", f"host={host},port={port}")
        except TSS2_Exception as exc:
            self._check_process("connect", _DEATH_GRACE_S)
            raise TpmError("connect", f"{exc} ({host}:{port})", int(exc.rc)) from exc
        self._esapi: ESAPI | None = ESAPI(self._tcti)

    @classmethod
    def connect(cls, swtpm: Swtpm) -> TpmClient:
        """Client for a running Swtpm, watching its process."""
        return cls(swtpm.port, swtpm=swtpm)

    def _check_process(self, operation: str, grace: float = 0.0) -> None:
        """Raise SwtpmDied if the watched process is gone (`grace`: wait for an exit)."""
        if self._swtpm is not None:
            when = "during" if grace else "before"
            self._swtpm.check_alive(f"{when} TPM {operation}", grace)

    def _call(self, operation: str, fn: Callable[[ESAPI], T], locality: int = 0) -> T:
        """Run fn under the lock, turning TSS failures into SwtpmDied or TpmError."""
        with self._lock:
            if self._esapi is None:
                raise TpmError(operation, "client is closed")
            self._check_process(operation)
            try:
                if locality:
                    self._tcti.set_locality(locality)
                try:
                    return fn(self._esapi)
                finally:
                    if locality:
                        self._tcti.set_locality(0)
            except TSS2_Exception as exc:
                # A response code from the TPM itself (layer 0) means it answered: no death to
                # wait for. Any other layer (TCTI I/O, ESYS) may be swtpm exiting right now.
                answered = (int(exc.rc) >> _RC_LAYER_SHIFT) & 0xFF == 0
                self._check_process(operation, 0.0 if answered else _DEATH_GRACE_S)
                raise TpmError(operation, str(exc), int(exc.rc)) from exc

    def run(self, operation: str, fn: Callable[[ESAPI], T], *, locality: int = 0) -> T:
        """Run a sequence of ESAPI calls as one unit at `locality` (TCG PC Client 0-4).

        Nothing else reaches the TPM in between, so transient objects and sessions created
        by `fn` cannot be seen or flushed by other users; the locality goes back to 0
        (the host's) afterwards. `fn` must flush what it creates.
        """
        if not 0 <= locality <= 4:
            raise ValueError(f"TPM locality {locality} out of range 0..4")
        return self._call(operation, fn, locality)

    def pcr_extend(self, index: int, sha256_digest: bytes, *, locality: int = 0) -> None:
        """TPM2_PCR_Extend of the sha256 bank of PCR `index`."""
        if not 0 <= index < PCR_COUNT:
            raise ValueError(f"PCR index {index} out of range 0..{PCR_COUNT - 1}")
        if len(sha256_digest) != SHA256_SIZE:
            raise ValueError(f"sha256 digest must be {SHA256_SIZE} bytes, got {len(sha256_digest)}")
        digests = TPML_DIGEST_VALUES(
            [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=sha256_digest))]
        )
        self.run(f"pcr_extend(PCR{index})", lambda e: e.pcr_extend(ESYS_TR(index), digests),
                 locality=locality)

    def pcr_read(self, indices: Iterable[int]) -> dict[int, bytes]:
        """sha256 values of the given PCRs, read in batches of 8."""
        wanted = sorted(set(indices))
        for index in wanted:
            if not 0 <= index < PCR_COUNT:
                raise ValueError(f"PCR index {index} out of range 0..{PCR_COUNT - 1}")
        return self._call("pcr_read", lambda e: read_pcr_values(e, wanted))

    def read_pcrs(self, indices: Iterable[int] = range(PCR_COUNT)) -> dict[int, bytes]:
        """All (by default) 24 sha256 PCRs; alias of pcr_read for console/verifier code."""
        return self.pcr_read(indices)

    def get_random(self, n: int, *, locality: int = 0) -> bytes:
        """n bytes from TPM2_GetRandom (which returns at most one digest size per call)."""
        out = bytearray()
        while len(out) < n:
            chunk = self.run("get_random", lambda e: e.get_random(min(n - len(out), SHA256_SIZE)),
                             locality=locality)
            out += bytes(chunk)
        return bytes(out)

    def transmit(self, command: bytes) -> bytes:
        """Send a raw TPM2 command and return the raw response (the guest CRB device path).

        A TPM error inside the response is returned as-is for the guest to see; only a
        transport failure raises.
        """

        def send(_: ESAPI) -> bytes:
            self._tcti.transmit(command)
            return bytes(self._tcti.receive(_MAX_RESPONSE))

        return self._call("transmit", send)

    def close(self) -> None:
        """Finalize ESAPI and the TCTI; safe to call repeatedly."""
        with self._lock:
            if self._esapi is None:
                return
            self._esapi.close()
            self._tcti.close()
            self._esapi = None

    def __enter__(self) -> TpmClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
