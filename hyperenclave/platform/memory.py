"""Host-physical memory: one anonymous mmap, so only touched pages cost resident memory."""

from __future__ import annotations

import ctypes
import mmap
import struct
from dataclasses import dataclass, field

PAGE_SIZE = 4096
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# PC layout: RAM above 3 GiB is moved above 4 GiB so the MMIO hole (TPM CRB at 0xFED40000) stays free.
LOW_RAM_LIMIT = 3 * GiB
HIGH_RAM_BASE = 4 * GiB

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class MemoryError_(Exception):
    """An access outside host-physical RAM (a bug in the caller or a hostile guest pointer)."""


@dataclass(frozen=True)
class Region:
    """A host-physical RAM range and its offset in the backing mmap."""

    base: int
    size: int
    offset: int

    @property
    def end(self) -> int:
        return self.base + self.size


class PhysicalMemory:
    """Host-physical RAM with a PC-style hole below 4 GiB.

    The bytes live in one mmap; `regions` says where each piece of RAM sits in the physical
    address space. Python code reads and writes through `read`/`write` (physical addresses);
    Unicorn maps the same bytes with `mem_map_ptr` so guest code and Python see one memory.
    """

    def __init__(self, size: int) -> None:
        if size < 64 * MiB or size % (2 * MiB):
            raise ValueError(f"RAM size {size:#x} must be a multiple of 2 MiB and at least 64 MiB")
        self.size = size
        self._mmap = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._mmap)
        self._cbuf = (ctypes.c_char * size).from_buffer(self._mmap)
        self.host_address = ctypes.addressof(self._cbuf)
        low = min(size, LOW_RAM_LIMIT)
        self.regions: list[Region] = [Region(0, low, 0)]
        if size > low:
            self.regions.append(Region(HIGH_RAM_BASE, size - low, low))

    @property
    def top(self) -> int:
        """One past the highest RAM address."""
        return self.regions[-1].end

    def is_ram(self, paddr: int, length: int = 1) -> bool:
        return any(r.base <= paddr and paddr + length <= r.end for r in self.regions)

    def offset(self, paddr: int, length: int = 1) -> int:
        """Offset of `paddr` in the backing mmap; raises if the range is not all RAM."""
        for r in self.regions:
            if r.base <= paddr and paddr + length <= r.end:
                return r.offset + paddr - r.base
        raise MemoryError_(f"physical range {paddr:#x}+{length:#x} is not RAM")

    def read(self, paddr: int, length: int) -> bytes:
        off = self.offset(paddr, length)
        return self._mmap[off:off + length]

    def write(self, paddr: int, data: bytes) -> None:
        off = self.offset(paddr, len(data))
        self._mmap[off:off + len(data)] = data

    def fill(self, paddr: int, length: int, byte: int = 0) -> None:
        off = self.offset(paddr, length)
        ctypes.memset(self.host_address + off, byte, length)

    def zero(self, paddr: int, length: int) -> None:
        """Zero a range and give whole host pages back to the OS (MADV_DONTNEED: they read as
        zeros and cost no resident memory until written), so scrubbing 256 MiB is cheap."""
        off = self.offset(paddr, length)
        first = (off + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
        last = (off + length) & ~(mmap.PAGESIZE - 1)
        if last <= first:
            ctypes.memset(self.host_address + off, 0, length)
            return
        ctypes.memset(self.host_address + off, 0, first - off)
        self._mmap.madvise(mmap.MADV_DONTNEED, first, last - first)
        ctypes.memset(self.host_address + last, 0, off + length - last)

    def read_u64(self, paddr: int) -> int:
        return _U64.unpack_from(self._mmap, self.offset(paddr, 8))[0]

    def write_u64(self, paddr: int, value: int) -> None:
        _U64.pack_into(self._mmap, self.offset(paddr, 8), value)

    def read_u32(self, paddr: int) -> int:
        return _U32.unpack_from(self._mmap, self.offset(paddr, 4))[0]

    def write_u32(self, paddr: int, value: int) -> None:
        _U32.pack_into(self._mmap, self.offset(paddr, 4), value)

    def close(self) -> None:
        self.view.release()
        del self._cbuf
        self._mmap.close()


@dataclass
class FrameAllocator:
    """A bump-and-free-list allocator of 4 KiB frames inside one physical range.

    The monitor uses one over its own memory for EPT and VMCS frames; frames come back zeroed.
    """

    memory: PhysicalMemory
    base: int
    size: int
    _next: int = field(init=False)
    _free: list[int] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.base % PAGE_SIZE or self.size % PAGE_SIZE:
            raise ValueError("frame allocator range must be page aligned")
        self._next = self.base

    def alloc(self) -> int:
        if self._free:
            frame = self._free.pop()
        elif self._next < self.base + self.size:
            frame = self._next
            self._next += PAGE_SIZE
        else:
            raise MemoryError_(f"out of frames in {self.base:#x}+{self.size:#x}")
        self.memory.fill(frame, PAGE_SIZE)
        return frame

    def free(self, frame: int) -> None:
        if not (self.base <= frame < self._next) or frame % PAGE_SIZE:
            raise ValueError(f"{frame:#x} was not allocated here")
        self._free.append(frame)

    @property
    def used(self) -> int:
        return (self._next - self.base) // PAGE_SIZE - len(self._free)


@dataclass(frozen=True)
class ReservedRange:
    """The `memmap=SIZE$START` range the host kernel keeps out of its allocator."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    @classmethod
    def parse(cls, text: str) -> "ReservedRange":
        """Parse Linux's `memmap=256M$0x30000000` syntax (the `memmap=` prefix is optional)."""
        text = text.removeprefix("memmap=")
        try:
            size_s, start_s = text.split("$")
            return cls(int(start_s, 0), parse_size(size_s))
        except ValueError as e:
            raise ValueError(f"bad memmap= value {text!r}: expected SIZE$START, e.g. 256M$0x30000000") from e

    @classmethod
    def from_cmdline(cls, cmdline: str) -> "ReservedRange | None":
        """The range a kernel command line reserves with `memmap=`, if any."""
        for word in cmdline.split():
            if word.startswith("memmap="):
                return cls.parse(word)
        return None

    def __str__(self) -> str:
        return f"memmap={format_size(self.size)}${self.start:#x}"


def parse_size(text: str) -> int:
    """Parse '1G', '256M', '4096K' or a plain integer."""
    text = text.strip()
    units = {"K": KiB, "M": MiB, "G": GiB}
    if text and text[-1].upper() in units:
        return int(text[:-1], 0) * units[text[-1].upper()]
    return int(text, 0)


def format_size(size: int) -> str:
    for unit, mult in (("G", GiB), ("M", MiB), ("K", KiB)):
        if size % mult == 0:
            return f"{size // mult}{unit}"
    return str(size)
