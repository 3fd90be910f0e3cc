"""Taking app memory back from an enclave: HyperEnclave's SharedMemoryRemove (HC 0x102),
SharedMemoryInvalidStart (0x103) and SharedMemoryInvalidEnd (0x104).

HC 0x101 (`EnclaveRunner.hc_shared_memory_add`) maps the app's pages into the enclave's GPT as
the app's page table maps them at that moment. When the host is about to change those
mappings (its driver's mmu_notifier: munmap, and anything else that frees or moves the
pages), it calls 0x103 with the part of a shared range that changes: the monitor unmaps it
from the enclave's GPT and EPT and counts one invalidation in progress; 0x104 ends it. An
enclave access to an unmapped shared page is an AEX whose EXINFO says SHARED_MEM_FETCH; the
host faults its page in, and ERESUME maps the app's page at that moment, but only while no
invalidation is in progress. 0x102 removes a whole range for good (the driver's
REMOVE_SHARED_MEMORY ioctl): afterwards the enclave's access is a plain #PF.

0x101-0x103 take RDI = a pointer to {SECS, start, end}; 0x104 takes RDI = the SECS. Results are
0 or -errno (EINVAL for an unknown enclave, a range that is not shared, not page-aligned or
inside ELRANGE, an 0x104 without an 0x103; EBUSY for a remove during an invalidation).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .gu_enclave import SHARED_RANGE, EnclaveAddressSpace
from .hypercall import HypercallArgs, HypercallError
from .sgx import PAGE_SIZE

if TYPE_CHECKING:
    from hyperenclave.platform.cpu import VCpu

    from .gu_enclave import EnclaveRunner


class SharedMemoryCalls:
    """HC 0x102-0x104 for the enclaves of one `EnclaveRunner`."""

    def __init__(self, runner: "EnclaveRunner") -> None:
        self.runner = runner

    def hc_remove(self, args: HypercallArgs, cpu: "VCpu") -> int:
        """0x102: [start, end) must be exactly a range 0x101 shared."""
        secs_pa, space, start, end = self._range(args, cpu)
        if (start, end) not in space.shared:
            raise HypercallError(errno.EINVAL, f"[{start:#x}-{end:#x}) is not a range shared "
                                 f"with enclave {secs_pa:#x} (shared: {self._ranges(space)})")
        if space.invalidating:
            raise HypercallError(errno.EBUSY, f"enclave {secs_pa:#x}: an invalidation of the "
                                 "app's memory is in progress")
        space.shared.remove((start, end))
        self._unmap(secs_pa, space, start, end)
        self.runner.log(f"enclave {secs_pa:#x}: shared [{start:#x}-{end:#x}) removed")
        return 0

    def hc_invalid_start(self, args: HypercallArgs, cpu: "VCpu") -> int:
        """0x103: [start, end) lies in one shared range; unmapped until the enclave faults it
        in again after the matching 0x104."""
        secs_pa, space, start, end = self._range(args, cpu)
        if not any(s <= start and end <= e for s, e in space.shared):
            raise HypercallError(errno.EINVAL, f"[{start:#x}-{end:#x}) is not inside a range "
                                 f"shared with enclave {secs_pa:#x} (shared: "
                                 f"{self._ranges(space)})")
        space.invalidating += 1
        self._unmap(secs_pa, space, start, end)
        self.runner.log(f"enclave {secs_pa:#x}: shared [{start:#x}-{end:#x}) invalidated "
                        f"({space.invalidating} in progress)")
        return 0

    def hc_invalid_end(self, args: HypercallArgs, cpu: "VCpu") -> int:
        """0x104: RDI = the SECS; ends one 0x103."""
        secs_pa = args.arg0
        space = self._space(secs_pa)
        if not space.invalidating:
            raise HypercallError(errno.EINVAL, f"enclave {secs_pa:#x}: SharedMemoryInvalidEnd "
                                 "without SharedMemoryInvalidStart")
        space.invalidating -= 1
        return 0

    # ------------------------------------------------------------------ helpers
    def _space(self, secs_pa: int) -> EnclaveAddressSpace:
        enclave = self.runner.manager.enclaves.get(secs_pa)
        space = self.runner.spaces.get(secs_pa)
        if enclave is None or not enclave.initialized or space is None:
            raise HypercallError(errno.EINVAL, f"{secs_pa:#x} is not an initialized enclave")
        return space

    def _range(self, args: HypercallArgs, cpu: "VCpu"
               ) -> tuple[int, EnclaveAddressSpace, int, int]:
        """The {SECS, start, end} descriptor at RDI, checked like 0x101 checks it."""
        gmem = self.runner.manager.guest_memory
        secs_pa, start, end = SHARED_RANGE.unpack(gmem.read(cpu, args.arg0, SHARED_RANGE.size,
                                                            "shared memory range"))
        space = self._space(secs_pa)
        if start % PAGE_SIZE or end % PAGE_SIZE or not start < end or end >> 47:
            raise HypercallError(errno.EINVAL, f"range [{start:#x}-{end:#x}) is not "
                                 "page-aligned user memory")
        lo, hi = self.runner.manager.enclaves[secs_pa].elrange
        if start < hi and lo < end:
            raise HypercallError(errno.EINVAL, f"range [{start:#x}-{end:#x}) overlaps ELRANGE "
                                 f"[{lo:#x}-{hi:#x})")
        return secs_pa, space, start, end

    def _unmap(self, secs_pa: int, space: EnclaveAddressSpace, start: int, end: int) -> None:
        for va in range(start, end, PAGE_SIZE):
            space.unmap_shared_page(va)
        self.runner.invept(secs_pa)

    @staticmethod
    def _ranges(space: EnclaveAddressSpace) -> str:
        return ", ".join(f"[{s:#x}-{e:#x})" for s, e in space.shared) or "none"
