"""Loading guest images into physical memory: the kernel ELF (pyelftools) and flat blobs."""

from __future__ import annotations

import io
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..memory import PhysicalMemory
from .bootparam import KERNEL_MIN_ADDR


class ImageError(ValueError):
    """A guest image is malformed or does not fit this machine."""


@dataclass(frozen=True)
class LoadedKernel:
    entry: int
    start: int   # lowest physical address used
    end: int     # one past the highest


def load_kernel_elf(memory: PhysicalMemory, image: bytes) -> LoadedKernel:
    """Copy PT_LOAD segments to their physical addresses (p_paddr) and zero the bss."""
    try:
        elf = ELFFile(io.BytesIO(image))
        if elf.get_machine_arch() != "x64" or elf.elfclass != 64:
            raise ImageError(f"kernel is {elf.get_machine_arch()} ELF{elf.elfclass}, need x86-64 ELF64")
        if elf["e_type"] != "ET_EXEC":
            raise ImageError(f"kernel ELF type is {elf['e_type']}, need ET_EXEC")
        segments = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    except ELFError as e:
        raise ImageError(f"kernel is not a valid ELF file: {e}") from None
    if not segments:
        raise ImageError("kernel ELF has no PT_LOAD segments")
    start, end = 1 << 64, 0
    for seg in segments:
        paddr, filesz, memsz = seg["p_paddr"], seg["p_filesz"], seg["p_memsz"]
        if paddr < KERNEL_MIN_ADDR or not memory.is_ram(paddr, max(memsz, 1)):
            raise ImageError(f"kernel segment {paddr:#x}+{memsz:#x} is outside usable RAM")
        data = seg.data()
        if len(data) != filesz or filesz > memsz:
            raise ImageError(f"kernel segment at {paddr:#x} is truncated")
        memory.write(paddr, data)
        memory.fill(paddr + filesz, memsz - filesz)
        start, end = min(start, paddr), max(end, paddr + memsz)
    return LoadedKernel(elf["e_entry"], start, end)
