"""From an enclave ELF and a signing config to an `EnclaveLayout` (what `hyperenclave-sign
sign` measures and signs).

The config is JSON; every key is optional:

    {"heap_size": 65536,      bytes of heap (R|W pages), a multiple of 4096
     "stack_size": 16384,     bytes of stack per thread, a multiple of 4096
     "tcs_count": 1,          threads (TCSs)
     "isv_prod_id": 0,        SIGSTRUCT.ISVPRODID (u16)
     "isv_svn": 0,            SIGSTRUCT.ISVSVN (u16)
     "debug": false,          ATTRIBUTES.DEBUG
     "ms_buf_size": 4096}     SECS.MS_BUF_SIZE: marshalling buffer bytes per TCS

The enclave's layout, from offset 0 (ELRANGE is the next power of two):

    the ELF's PT_LOAD segments      R|X or R|W pages (R|W|X is refused), measured
    a guard page                    not added: a stray heap or stack access faults
    heap                            R|W, zero, measured
    per thread:  guard page, stack (R|W), TCS, NSSA SSA frames (R|W), thread-data page (R|W)

The TCS enters at the ELF's entry point (`enclave_entry` of the trusted runtime) with FS/GS base
at the thread-data page (`struct he_thread_data` in he_edge.h, whose first fields this module
writes); the global `he_enclave_config` is filled in before measuring. Both go in as offsets
from the base, so MRENCLAVE does not depend on where the loader puts the enclave. The ELF must
be position-independent and linked at 0 with only R_X86_64_RELATIVE relocations, which the
trusted runtime applies at first entry.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from hyperenclave.vmm.sgx import PAGE_SIZE, AttributeFlags, Attributes, PageFlags, PageType, Tcs

from .signer import SIMPLE_NSSA, XFRM_X87_SSE, EnclaveLayout, EnclavePage

CONFIG_MAGIC = b"HECONFIG"
CONFIG = struct.Struct("<8sQQQQ")                 # struct he_enclave_config
THREAD_DATA = struct.Struct("<QQQQQ")             # the signed fields of struct he_thread_data
R_X86_64_RELATIVE = 8
ENTRY_SYMBOL = "enclave_entry"
CONFIG_SYMBOL = "he_enclave_config"
SEGMENT_LIMIT = 0xFFF                             # TCS.FSLIMIT/GSLIMIT: one page
MAX_SEGMENT = 1 << 30                             # larger than any EPC: refuse before allocating


class EnclaveImageError(ValueError):
    """An ELF or config that cannot become an enclave."""


@dataclass(frozen=True)
class EnclaveConfig:
    """The signing config (see the module docstring for the JSON keys)."""

    heap_size: int = 0x10000
    stack_size: int = 0x4000
    tcs_count: int = 1
    isv_prod_id: int = 0
    isv_svn: int = 0
    debug: bool = False
    ms_buf_size: int = PAGE_SIZE

    def __post_init__(self) -> None:
        for name in ("heap_size", "stack_size", "tcs_count", "isv_prod_id", "isv_svn",
                     "ms_buf_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise EnclaveImageError(f"config: {name} must be a non-negative integer, "
                                        f"not {value!r}")
        for name in ("heap_size", "stack_size", "ms_buf_size"):
            if getattr(self, name) % PAGE_SIZE:
                raise EnclaveImageError(f"config: {name} {getattr(self, name):#x} is not a "
                                        "multiple of 4096")
        if self.stack_size == 0 or self.tcs_count == 0 or self.ms_buf_size == 0:
            raise EnclaveImageError("config: stack_size, tcs_count and ms_buf_size must be > 0")
        for name in ("isv_prod_id", "isv_svn"):
            if getattr(self, name) > 0xFFFF:
                raise EnclaveImageError(f"config: {name} {getattr(self, name)} does not fit in "
                                        "16 bits")
        if not isinstance(self.debug, bool):
            raise EnclaveImageError(f"config: debug must be true or false, not {self.debug!r}")

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> EnclaveConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise EnclaveImageError(f"{source}: not JSON: {err}") from None
        if not isinstance(raw, dict):
            raise EnclaveImageError(f"{source}: must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise EnclaveImageError(f"{source}: unknown key(s) {', '.join(unknown)} (known: "
                                    f"{', '.join(sorted(known))})")
        return cls(**raw)

    @classmethod
    def load(cls, path: Path) -> EnclaveConfig:
        return cls.from_json(Path(path).read_text(), str(path))


@dataclass(frozen=True)
class _Elf:
    entry: int
    config_at: int
    segments: list[tuple[int, bytes, PageFlags]]     # vaddr, file bytes padded to memsz, flags


def _read_elf(data: bytes) -> _Elf:
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.get_machine_arch() != "x64" or elf["e_type"] != "ET_DYN":
            raise EnclaveImageError("the enclave must be a position-independent x86-64 ELF "
                                    f"(ET_DYN), not {elf['e_type']} for "
                                    f"{elf.get_machine_arch()}")
        segments = []
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                raise EnclaveImageError("the enclave ELF asks for a dynamic linker (PT_INTERP)")
            if seg["p_type"] != "PT_LOAD":
                continue
            flags = PageFlags.R
            if seg["p_flags"] & P_FLAGS.PF_W:
                flags |= PageFlags.W
            if seg["p_flags"] & P_FLAGS.PF_X:
                flags |= PageFlags.X
            if flags & PageFlags.W and flags & PageFlags.X:
                raise EnclaveImageError(f"segment at {seg['p_vaddr']:#x} is writable and "
                                        "executable")
            if seg["p_vaddr"] % PAGE_SIZE:
                raise EnclaveImageError(f"segment at {seg['p_vaddr']:#x} is not page-aligned")
            if not seg["p_filesz"] <= seg["p_memsz"] <= MAX_SEGMENT:
                raise EnclaveImageError(f"segment at {seg['p_vaddr']:#x}: file size "
                                        f"{seg['p_filesz']:#x}, memory size {seg['p_memsz']:#x}")
            body = seg.data().ljust(seg["p_memsz"], b"\0")
            segments.append((seg["p_vaddr"], body, flags))
        for section in elf.iter_sections():
            if isinstance(section, RelocationSection):
                for rel in section.iter_relocations():
                    if rel["r_info_type"] != R_X86_64_RELATIVE:
                        raise EnclaveImageError(
                            f"relocation type {rel['r_info_type']} at {rel['r_offset']:#x} in "
                            f"{section.name}: only R_X86_64_RELATIVE is supported (compile "
                            "with -fPIE -fvisibility=hidden)")
        symtab = elf.get_section_by_name(".symtab")
        symbols = ({s.name: s["st_value"] for s in symtab.iter_symbols()}
                   if isinstance(symtab, SymbolTableSection) else {})
    except EnclaveImageError:
        raise
    except ELFError as err:
        raise EnclaveImageError(f"not an ELF file: {err}") from None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error) as err:
        # pyelftools trusts offsets and sizes; a damaged file fails inside it in many ways
        raise EnclaveImageError(f"damaged ELF file: {type(err).__name__}: {err}") from None
    if not segments:
        raise EnclaveImageError("the enclave ELF has no loadable segment")
    if CONFIG_SYMBOL not in symbols:
        raise EnclaveImageError(f"the enclave ELF has no `{CONFIG_SYMBOL}` symbol: it was not "
                                "linked with the trusted runtime (or was stripped)")
    return _Elf(elf["e_entry"], symbols[CONFIG_SYMBOL], segments)


def layout_from_elf(data: bytes, config: EnclaveConfig) -> EnclaveLayout:
    """The enclave `config` makes of the ELF bytes `data` (see the module docstring)."""
    elf = _read_elf(data)
    image: dict[int, tuple[bytearray, PageFlags]] = {}
    for vaddr, body, flags in elf.segments:
        for pos in range(0, len(body), PAGE_SIZE):
            page = vaddr + pos
            if page in image:
                raise EnclaveImageError(f"two segments share the page at {page:#x}")
            image[page] = (bytearray(body[pos:pos + PAGE_SIZE].ljust(PAGE_SIZE, b"\0")), flags)
    image_end = max(image) + PAGE_SIZE
    heap = image_end + PAGE_SIZE
    offset = heap + config.heap_size
    threads = []
    for _ in range(config.tcs_count):
        stack = offset + PAGE_SIZE
        tcs = stack + config.stack_size
        ssa = tcs + PAGE_SIZE
        td = ssa + SIMPLE_NSSA * PAGE_SIZE
        threads.append((stack, tcs, ssa, td))
        offset = td + PAGE_SIZE
    size = 2 * PAGE_SIZE
    while size < offset:
        size *= 2

    page, flags = image.get(elf.config_at & ~0xFFF, (None, None))
    at = elf.config_at & 0xFFF
    if page is None or at + CONFIG.size > PAGE_SIZE or page[at:at + 8] != CONFIG_MAGIC:
        raise EnclaveImageError(f"`{CONFIG_SYMBOL}` at {elf.config_at:#x} does not hold the "
                                "trusted runtime's config")
    page[at:at + CONFIG.size] = CONFIG.pack(CONFIG_MAGIC, size, heap, config.heap_size,
                                            config.tcs_count)

    def zero(at: int, count: int) -> list[EnclavePage]:
        return [EnclavePage(at + i, PageType.PT_REG, PageFlags.R | PageFlags.W, bytes(PAGE_SIZE))
                for i in range(0, count, PAGE_SIZE)]

    pages = [EnclavePage(va, PageType.PT_REG, f, bytes(body)) for va, (body, f) in
             sorted(image.items())]
    pages += zero(heap, config.heap_size)
    for stack, tcs, ssa, td in threads:
        pages += zero(stack, config.stack_size)
        pages.append(EnclavePage(tcs, PageType.PT_TCS, PageFlags(0), Tcs(
            ossa=ssa, nssa=SIMPLE_NSSA, oentry=elf.entry, ofsbase=td, ogsbase=td,
            fslimit=SEGMENT_LIMIT, gslimit=SEGMENT_LIMIT).pack()))
        pages += zero(ssa, SIMPLE_NSSA * PAGE_SIZE)
        thread_data = THREAD_DATA.pack(td, tcs, stack, ssa, 1).ljust(PAGE_SIZE, b"\0")
        pages.append(EnclavePage(td, PageType.PT_REG, PageFlags.R | PageFlags.W, thread_data))
    attributes = AttributeFlags.MODE64BIT | (AttributeFlags.DEBUG if config.debug else 0)
    return EnclaveLayout(size, pages, ms_buf_size=config.ms_buf_size,
                         attributes=Attributes(attributes, XFRM_X87_SSE),
                         isv_prod_id=config.isv_prod_id, isv_svn=config.isv_svn)


def layout_from_json(raw: Any) -> EnclaveLayout:
    """The layout of `measure --layout`: {"size", "ssa_frame_pages", "pages": [{"offset",
    "flags" (SECINFO.FLAGS), "measure", "content"}]}; content is "zero", "counter" (byte i =
    i mod 256), "fill:XX", {"tcs": {"ossa", "nssa", "oentry"}} or {"hex": "..."}."""
    def need(obj: Any, key: str, kind: type, where: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise EnclaveImageError(f"layout: {where} has no \"{key}\"")
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise EnclaveImageError(f"layout: {where}.{key} must be {kind.__name__}, not "
                                    f"{value!r}")
        return value

    size = need(raw, "size", int, "the layout")
    ssa_frame_pages = need(raw, "ssa_frame_pages", int, "the layout")
    pages = []
    for i, entry in enumerate(need(raw, "pages", list, "the layout")):
        where = f"pages[{i}]"
        offset = need(entry, "offset", int, where)
        flags = need(entry, "flags", int, where)
        measure = entry.get("measure", True) if isinstance(entry, dict) else True
        if not isinstance(measure, bool):
            raise EnclaveImageError(f"layout: {where}.measure must be true or false")
        content = need(entry, "content", (str, dict), where)
        data = _content(content, where)
        try:
            page_type = PageType((flags >> 8) & 0xFF)
        except ValueError:
            raise EnclaveImageError(f"layout: {where}.flags {flags:#x} has no valid page "
                                    "type") from None
        try:
            pages.append(EnclavePage(offset, page_type, PageFlags(flags & 0xFF), data, measure))
        except ValueError as err:
            raise EnclaveImageError(f"layout: {where}: {err}") from None
    layout = EnclaveLayout(size, pages, ssa_frame_size=ssa_frame_pages)
    try:
        layout.validate()
    except ValueError as err:
        raise EnclaveImageError(f"layout: {err}") from None
    return layout


def _content(content: str | dict, where: str) -> bytes:
    if content == "zero":
        return bytes(PAGE_SIZE)
    if content == "counter":
        return bytes(i % 256 for i in range(PAGE_SIZE))
    if isinstance(content, str) and content.startswith("fill:"):
        try:
            if len(content) == 7:
                return bytes.fromhex(content[5:]) * PAGE_SIZE
        except ValueError:
            pass
        raise EnclaveImageError(f"layout: {where}.content {content!r} is not fill:XX (one hex "
                                "byte)")
    if isinstance(content, dict) and set(content) == {"tcs"} and isinstance(content["tcs"], dict):
        t = content["tcs"]
        unknown = set(t) - {"ossa", "nssa", "oentry"}
        if unknown or not all(isinstance(t.get(k, 0), int) for k in ("ossa", "nssa", "oentry")):
            raise EnclaveImageError(f"layout: {where}.content.tcs takes integers ossa, nssa, "
                                    "oentry")
        return Tcs(ossa=t.get("ossa", 0), nssa=t.get("nssa", 0), oentry=t.get("oentry", 0),
                   fslimit=SEGMENT_LIMIT, gslimit=SEGMENT_LIMIT).pack()
    if isinstance(content, dict) and set(content) == {"hex"} and isinstance(content["hex"], str):
        try:
            data = bytes.fromhex(content["hex"])
        except ValueError:
            raise EnclaveImageError(f"layout: {where}.content.hex is not hex") from None
        if len(data) > PAGE_SIZE:
            raise EnclaveImageError(f"layout: {where}.content.hex has {len(data)} bytes, more "
                                    "than a page")
        return data.ljust(PAGE_SIZE, b"\0")
    raise EnclaveImageError(f"layout: {where}.content {content!r} is not \"zero\", \"counter\", "
                            "\"fill:XX\", {\"tcs\": {...}} or {\"hex\": \"...\"}")
