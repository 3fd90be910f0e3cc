"""The monitor image file: what the host driver loads, measures into PCR 12 and enters.

Layout (C side: `hyperenclave/guest/include/hyperenclave.h`; HyperEnclave's `header.rs`):

    0x000  header (HE_HEADER_SIZE bytes): "HYPERENC", version, sizes, entry, code digest,
           then fields the driver fills in the copy it places in monitor memory
    0x100  arch_entry: the x86 entry stub (arch_entry.S), assembled with the system toolchain
    ...    code manifest: "sha256  path" of every source file of the monitor

The monitor itself is this package's Python code; the CPU runs it in VMX root operation from
the stub's VMXON on. The manifest ties the image to that code: the measured image changes when
any monitor source changes, and the CPU refuses (at VMXON) an image whose code digest is not
the code it would run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from elftools.elf.elffile import ELFFile

HE_SIGNATURE = b"HYPERENC"
HE_VERSION = 1
HE_HEADER_SIZE = 0x100
HE_HV_ALIGN = 2 << 20
PERCPU_SIZE = 0x10000            # VMXON region, VMCS, I/O and MSR bitmaps, stack
HEAP_SIZE = 14 << 20             # EPT/IOMMU tables, the 2 MiB zero page, enclave tables

# Offsets (hyperenclave.h HE_OFF_*).
OFF_VERSION, OFF_HEADER_SIZE, OFF_IMAGE_SIZE, OFF_ENTRY = 0x08, 0x0C, 0x10, 0x18
OFF_PERCPU_SIZE, OFF_HEAP_SIZE, OFF_CODE_DIGEST = 0x20, 0x28, 0x30
OFF_MAX_CPUS, OFF_ONLINE_CPUS, OFF_HV_PHYS, OFF_HV_SIZE = 0x50, 0x54, 0x58, 0x60
OFF_EPC_PHYS, OFF_EPC_SIZE, OFF_PERCPU_PHYS, OFF_TPM_MMIO = 0x68, 0x70, 0x78, 0x80
OFF_TPM_TYPE, OFF_FEATURE_MASK = 0x88, 0x8C

_BUILT = struct.Struct("<8sIIQQQQ32s")          # the fields the image builder writes
_DRIVER = struct.Struct("<IIQQQQQQII")          # the fields the driver fills in (at 0x50)

VMM_DIR = Path(__file__).resolve().parent
IMAGE_SRC = VMM_DIR / "image"
GUEST_INCLUDE = VMM_DIR.parent / "guest" / "include"


class MonitorImageError(ValueError):
    """The bytes are not a monitor image this monitor accepts; the message says why."""


@dataclass(frozen=True)
class MonitorImage:
    """A parsed header (the driver fields are zero in a file, filled in monitor memory)."""

    version: int
    image_size: int
    entry_offset: int
    percpu_size: int
    heap_size: int
    code_digest: bytes
    max_cpus: int = 0
    online_cpus: int = 0
    hv_phys: int = 0
    hv_size: int = 0
    epc_phys: int = 0
    epc_size: int = 0
    percpu_phys: int = 0
    tpm_mmio: int = 0
    tpm_type: int = 0
    feature_mask: int = 0

    @classmethod
    def parse(cls, data: bytes, file_size: int | None = None) -> "MonitorImage":
        """Check and decode a header; `file_size` is the size the image must claim."""
        if len(data) < HE_HEADER_SIZE:
            raise MonitorImageError(f"monitor image is {len(data)} bytes, shorter than its "
                                    f"{HE_HEADER_SIZE}-byte header")
        sig, version, hsize, size, entry, percpu, heap, digest = _BUILT.unpack_from(data, 0)
        if sig != HE_SIGNATURE:
            raise MonitorImageError(f"monitor image has a bad signature {sig!r} "
                                    f"(expected {HE_SIGNATURE!r})")
        if version != HE_VERSION:
            raise MonitorImageError(f"monitor image version {version} does not match this "
                                    f"monitor's version {HE_VERSION}")
        if hsize != HE_HEADER_SIZE:
            raise MonitorImageError(f"monitor image header size {hsize} is not {HE_HEADER_SIZE}")
        if file_size is not None and size != file_size:
            raise MonitorImageError(f"monitor image claims {size} bytes but has {file_size}")
        if not HE_HEADER_SIZE <= entry < size:
            raise MonitorImageError(f"monitor entry offset {entry:#x} is outside the image "
                                    f"({size:#x} bytes)")
        if percpu < 0x5000 or percpu % 0x1000 or heap < HE_HV_ALIGN or heap % 0x1000:
            raise MonitorImageError(f"monitor image asks for per-CPU size {percpu:#x} and heap "
                                    f"{heap:#x}; both must be page multiples (per-CPU >= 20 KiB, "
                                    f"heap >= 2 MiB)")
        fields = _DRIVER.unpack_from(data, OFF_MAX_CPUS)
        return cls(version, size, entry, percpu, heap, digest, *fields)

    @property
    def percpu_offset(self) -> int:
        """Per-CPU areas start at the first page after the image."""
        return (self.image_size + 0xFFF) & ~0xFFF

    def vmxon_region(self, cpu: int) -> int:
        return self.percpu_phys + cpu * self.percpu_size


# ---------------------------------------------------------------- the code the image names


def monitor_sources() -> list[Path]:
    """Every file whose content is the monitor: its Python modules and the entry stub."""
    files = [p for p in VMM_DIR.rglob("*") if p.is_file() and p.suffix in (".py", ".S", ".ld")
             and "__pycache__" not in p.parts]
    files.append(GUEST_INCLUDE / "hyperenclave.h")
    return sorted(files)


@cache
def code_manifest() -> bytes:
    """`sha256  path` lines, sorted, for every monitor source (computed once per process)."""
    lines = []
    for p in monitor_sources():
        rel = p.relative_to(VMM_DIR.parent.parent).as_posix()
        lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {rel}\n")
    return "".join(lines).encode()


def code_digest() -> bytes:
    return hashlib.sha256(code_manifest()).digest()


# ---------------------------------------------------------------- building


def _assemble_stub(workdir: Path) -> tuple[bytes, int]:
    """Assemble and link arch_entry.S; return (flat bytes from offset 0, entry offset)."""
    from hyperenclave.guest.build import _run, _toolchain
    tc = _toolchain()
    obj, elf, flat = workdir / "arch_entry.o", workdir / "image.elf", workdir / "image.flat"
    _run([tc.gcc, "-c", "-nostdinc", f"-I{GUEST_INCLUDE}", "-Wa,--noexecstack",
          str(IMAGE_SRC / "arch_entry.S"), "-o", str(obj)])
    _run([tc.ld, "-nostdlib", "-static", "--build-id=none", "-T", str(IMAGE_SRC / "image.ld"),
          "-o", str(elf), str(obj)])
    _run([tc.objcopy, "-O", "binary", str(elf), str(flat)])
    with open(elf, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        entry = symtab.get_symbol_by_name("arch_entry")[0]["st_value"]
    return flat.read_bytes(), entry


def build_monitor_image(*, version: int = HE_VERSION, cache_dir: Path | None = None) -> bytes:
    """The image file for this monitor (cached by content under the guest build cache)."""
    from hyperenclave.guest.build import default_cache_root
    manifest = code_manifest()
    key = hashlib.sha256(manifest + version.to_bytes(4, "little")).hexdigest()[:32]
    root = Path(cache_dir) if cache_dir else default_cache_root().parent / "monitor"
    cached = root / key / "hyperenclave-monitor.bin"
    if cached.is_file():
        return cached.read_bytes()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        flat, entry = _assemble_stub(tmp)
        body = bytearray(flat) + manifest
        _BUILT.pack_into(body, 0, HE_SIGNATURE, version, HE_HEADER_SIZE, len(body), entry,
                         PERCPU_SIZE, HEAP_SIZE, hashlib.sha256(manifest).digest())
        image = bytes(body)
        (tmp / "hyperenclave-monitor.bin").write_bytes(image)
        for name in ("arch_entry.o", "image.elf", "image.flat"):
            (tmp / name).unlink()
        try:
            os.rename(tmp, root / key)
        except OSError:           # a concurrent build won; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return image
