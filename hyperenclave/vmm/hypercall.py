"""The hypercall ABI (HyperEnclave's `hypercall/mod.rs`): codes, privilege rules, dispatch.

VMCALL with RAX = code, RDI = arg0, RSI = arg1; the monitor advances RIP by 3. Codes with bit
31 or 30 set are user-level (ENCLU replacements, from CPL 3 only); the others are
supervisor-level (the driver's, from CPL 0 only). A code at the wrong privilege level, or a
user call in the wrong CPU state, gets #UD. Supervisor results (0 or a negative errno) go in
RAX. C side: `hyperenclave/guest/include/hyperenclave.h`.
"""

from __future__ import annotations

import errno
from collections import Counter
from enum import IntEnum
from typing import Callable, NamedTuple

USER_BITS = 0xC000_0000


class HypercallCode(IntEnum):
    """Codes from HyperEnclave (supervisor first, then user-level)."""

    HYPERVISOR_DISABLE = 0x0
    ENCLAVE_CREATE = 0x10
    ENCLAVE_ADD_PAGE = 0x11
    ENCLAVE_INIT = 0x12
    ENCLAVE_PREPARE_DESTROY = 0x13
    ENCLAVE_FINISH_DESTROY = 0x14
    TPM_CMD_SYNC = 0x16
    RESET_STATS = 0x100
    SHARED_MEMORY_ADD = 0x101
    SHARED_MEMORY_REMOVE = 0x102
    SHARED_MEMORY_INVALID_START = 0x103
    SHARED_MEMORY_INVALID_END = 0x104
    INIT_CMRM = 0x200
    SET_INIT_CMRM_DONE = 0x201
    ENCLAVE_ENTER = 0x8000_0000
    ENCLAVE_EXIT = 0x8000_0001
    ENCLAVE_ACCEPT = 0x8000_0002
    ENCLAVE_ACCEPT_COPY = 0x8000_0003
    ENCLAVE_EXTEND_PAGE_PERM = 0x8000_0004
    ENCLAVE_RESUME = 0x8000_0005
    ENCLAVE_VERIFY_REPORT = 0x8000_000A
    ENCLAVE_GET_KEY = 0x8000_000B
    ENCLAVE_REPORT = 0x8000_000C
    ENCLAVE_QUOTE = 0x8000_000D


def is_user_code(code: int) -> bool:
    return bool(code & USER_BITS)


def code_name(code: int) -> str:
    try:
        return HypercallCode(code).name
    except ValueError:
        return f"{code:#x}"


class HypercallError(Exception):
    """A supervisor hypercall failed: RAX gets -errno. The message goes to the monitor log."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class InvalidOpcode(Exception):
    """The call must not exist from here: the monitor injects #UD."""


class HypercallArgs(NamedTuple):
    """One hypercall's inputs (a tuple: the fast exit path builds one per call)."""

    code: int
    arg0: int
    arg1: int
    cpl: int
    rip: int = 0            # of the VMCALL (for calls that move the CPU elsewhere)


Handler = Callable[[HypercallArgs], "int | None"]   # None: the handler set RAX/RIP itself


class HypercallTable:
    """Code -> handler, with the privilege rules and per-code counters."""

    def __init__(self) -> None:
        self._handlers: dict[int, Handler] = {}
        self._fast: set[int] = set()
        self.counts: Counter[int] = Counter()
        self.failures: Counter[int] = Counter()

    def register(self, code: HypercallCode, handler: Handler, *, fast: bool = False) -> None:
        """`fast`: the handler only computes RAX (it never injects an event or switches CPU
        mode), so it may run inside the CPU loop without ending the time slice."""
        self._handlers[int(code)] = handler
        if fast:
            self._fast.add(int(code))

    def is_fast(self, code: int, cpl: int) -> bool:
        """Whether `code` from `cpl` ends in RAX only: allowed here and fast, or unknown (ENOSYS)."""
        if code >> 32 or cpl != (3 if is_user_code(code) else 0):
            return False
        return code in self._fast or (cpl == 0 and code not in self._handlers)

    def call(self, args: HypercallArgs) -> int | None:
        """Run one hypercall; returns RAX (None if the handler set the registers itself).
        Raises InvalidOpcode for #UD."""
        code = args.code
        self.counts[code] += 1
        if code >> 32:
            self.failures[code] += 1
            raise InvalidOpcode(f"hypercall code {code:#x} does not fit 32 bits")
        wanted_cpl = 3 if is_user_code(code) else 0
        if args.cpl != wanted_cpl:
            self.failures[code] += 1
            level = "user" if wanted_cpl == 3 else "supervisor"
            raise InvalidOpcode(f"{level}-level hypercall {code_name(code)} from CPL {args.cpl}")
        handler = self._handlers.get(code)
        if handler is None:
            self.failures[code] += 1
            if wanted_cpl == 3:
                raise InvalidOpcode(f"user-level hypercall {code_name(code)} is not available "
                                    "in this CPU state")
            return -errno.ENOSYS
        try:
            return handler(args)
        except HypercallError:
            self.failures[code] += 1
            raise

    def reset(self) -> None:
        self.counts.clear()
        self.failures.clear()
