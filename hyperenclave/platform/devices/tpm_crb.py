"""TPM 2.0 CRB interface (TCG PC Client PTP, locality 0) at 0xFED40000.

Guest code writes a raw TPM2 command into the data buffer and sets CTRL_START; the command goes
to swtpm unchanged, through a filter the monitor may install once it owns the machine.
"""

from __future__ import annotations

import logging
import struct
from typing import Callable

log = logging.getLogger(__name__)

CRB_BASE = 0xFED40000
CRB_SIZE = 0x5000
LOC_STATE, LOC_CTRL, LOC_STS = 0x00, 0x08, 0x0C
CTRL_REQ, CTRL_STS, CTRL_CANCEL, CTRL_START = 0x40, 0x44, 0x48, 0x4C
CTRL_CMD_SIZE, CTRL_CMD_LADDR, CTRL_CMD_HADDR, CTRL_RSP_SIZE, CTRL_RSP_ADDR = 0x58, 0x5C, 0x60, 0x64, 0x68
DATA_BUFFER = 0x80
BUFFER_SIZE = 0x1000 - DATA_BUFFER

TPM_ST_NO_SESSIONS = 0x8001
TPM_RC_FAILURE = 0x101

Transport = Callable[[bytes], bytes]


def error_response(rc: int) -> bytes:
    """A 10-byte TPM2 response carrying only a response code."""
    return struct.pack(">HII", TPM_ST_NO_SESSIONS, 10, rc)


class TpmCrb:
    """The CRB registers and buffer; `transport` sends a command and returns the response."""

    def __init__(self, transport: Transport) -> None:
        self.base = CRB_BASE
        self.size = CRB_SIZE
        self.transport = transport
        self.filter: Callable[[bytes], bytes | None] | None = None  # monitor's mediation
        self._buf = bytearray(BUFFER_SIZE)
        self._granted = False
        self._started = False
        self.commands = 0

    def mmio_read(self, uc, offset: int, size: int, _user) -> int:
        if offset >= DATA_BUFFER and offset + size <= DATA_BUFFER + BUFFER_SIZE:
            return int.from_bytes(self._buf[offset - DATA_BUFFER:offset - DATA_BUFFER + size], "little")
        regs = {
            LOC_STATE: 0x80 | (0x03 if self._granted else 0x01),  # tpmRegValidSts|locAssigned|established
            LOC_STS: 1 if self._granted else 0,
            CTRL_STS: 0x2,  # idle
            CTRL_START: self._poll_start(),
            CTRL_CMD_SIZE: BUFFER_SIZE,
            CTRL_CMD_LADDR: CRB_BASE + DATA_BUFFER,
            CTRL_CMD_HADDR: 0,
            CTRL_RSP_SIZE: BUFFER_SIZE,
            CTRL_RSP_ADDR: CRB_BASE + DATA_BUFFER,
        }
        return regs.get(offset & ~3, 0) & ((1 << (8 * size)) - 1)

    def mmio_write(self, uc, offset: int, size: int, value: int, _user) -> None:
        if offset >= DATA_BUFFER and offset + size <= DATA_BUFFER + BUFFER_SIZE:
            start = offset - DATA_BUFFER
            self._buf[start:start + size] = value.to_bytes(size, "little")
        elif offset == LOC_CTRL:
            if value & 1:
                self._granted = True
            if value & 2:
                self._granted = False
        elif offset == CTRL_START and value & 1:
            self._started = True  # latched; the command runs when the guest polls START

    def _poll_start(self) -> int:
        """START reads 0 once the response is in the buffer.

        Running the command here rather than in the START write keeps both accesses
        idempotent: Unicorn may re-execute an I/O instruction whose slice ended inside its
        callback (measured: doubled TPM commands with 200 us slices), and a second START
        write only sets the latch again, a second poll after completion just reads 0.
        """
        if self._started:
            self._started = False
            self._execute()
        return 0

    def _execute(self) -> None:
        self.commands += 1
        if len(self._buf) < 10:
            return
        length = struct.unpack_from(">I", self._buf, 2)[0]
        if not 10 <= length <= BUFFER_SIZE:
            response = error_response(TPM_RC_FAILURE)
        else:
            command = bytes(self._buf[:length])
            response = (self.filter(command) if self.filter else None)
            if response is None:
                try:
                    response = self.transport(command)
                except Exception as e:  # a dead swtpm must not kill the vCPU thread
                    log.error("TPM command failed: %s", e)
                    response = error_response(TPM_RC_FAILURE)
        self._buf[:len(response)] = response
