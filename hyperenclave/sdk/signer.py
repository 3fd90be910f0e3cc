"""The enclave signer (HyperEnclave's `sgx_sign_hyper`): layout -> MRENCLAVE -> SIGSTRUCT -> bundle.

An `EnclaveLayout` is what the loader will build: the SECS parameters and the pages, in EADD
order. `sign()` computes MRENCLAVE exactly as the monitor's EINIT will (`vmm.measure`) and signs
a SIGSTRUCT for it (`vmm.sigstruct`); `SignedEnclave.to_bytes()` writes the bundle that
`/bin/enclave_load` reads. The bundle ("HEENCL01"; C: hyperenclave/guest/include/he_enclave_file.h)
is little-endian and packed:

    header (64 bytes)   magic "HEENCL01" | size u64 | ms_buf_size u64 | attributes u64 |
                        xfrm u64 | ssa_frame_size u32 | misc_select u32 | nr_pages u32 |
                        12 zero bytes
    nr_pages entries    offset u64 (from the enclave base) | SECINFO.FLAGS u64 |
    (24 bytes each)     flags u64 (bit 0: measured, i.e. EEXTENDed)
    nr_pages pages      4096 bytes each, in entry order
    SIGSTRUCT           1808 bytes

The base address is not in the bundle: MRENCLAVE does not depend on it and the loader picks it.
ISVPRODID and ISVSVN travel in the SIGSTRUCT only (EINIT copies them into the SECS).

The command line is `hyperenclave-sign` (also `python -m hyperenclave.sdk`):

    hyperenclave-sign gen-key KEY.pem                       RSA-3072, e = 3 (alias: keygen)
    hyperenclave-sign sign --key KEY.pem --config CFG.json ENCLAVE.elf OUT
                           (an ELF built with the trusted runtime; CFG: sdk/image.py);
                           prints MRENCLAVE and MRSIGNER
    hyperenclave-sign sign --key KEY.pem --code CODE.bin [--data DATA.bin] OUT
                           (EnclaveLayout.simple: hand-written code, no runtime)
    hyperenclave-sign measure --layout LAYOUT.json          MRENCLAVE of a JSON layout
    hyperenclave-sign show BUNDLE
"""

from __future__ import annotations

import argparse
import datetime
import json
import struct
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from hyperenclave.progress import progress
from hyperenclave.vmm.measure import EnclaveMeasurement
from hyperenclave.vmm.sgx import (PAGE_SIZE, AttributeFlags, Attributes, PageFlags, PageType,
                                  SecInfo, SigStruct, Tcs)
from hyperenclave.vmm.sigstruct import (generate_signing_key, load_signing_key, mrsigner,
                                        save_signing_key, sign_sigstruct, sigstruct_date)

MAGIC = b"HEENCL01"
HEADER = struct.Struct("<8sQQQQIII12x")
ENTRY = struct.Struct("<QQQ")
PAGE_MEASURED = 1
XFRM_X87_SSE = 0x3
#: SIGSTRUCT.ATTRIBUTEMASK by default: every attribute must match except INIT (EINIT sets it).
DEFAULT_ATTRIBUTE_MASK = Attributes(0xFFFF_FFFF_FFFF_FFFF & ~AttributeFlags.INIT,
                                    0xFFFF_FFFF_FFFF_FFFF)
#: Enclaves of at least this many pages (16 MiB) show a progress bar while measured.
PROGRESS_PAGES = 4096
#: SSA frames per thread in `EnclaveLayout.simple` (the SGX SDK's NSSA): room for one nested AEX.
SIMPLE_NSSA = 2

assert HEADER.size == 64 and ENTRY.size == 24


class BundleError(ValueError):
    """Bytes that are not a well-formed enclave bundle."""


@dataclass(frozen=True)
class EnclavePage:
    """One page as EADD adds it: where, with which SECINFO, its contents, whether EEXTENDed."""

    offset: int
    page_type: PageType
    flags: PageFlags
    data: bytes
    measured: bool = True

    def __post_init__(self) -> None:
        if self.offset % PAGE_SIZE or self.offset < 0:
            raise ValueError(f"page offset {self.offset:#x} is not page-aligned")
        if len(self.data) != PAGE_SIZE:
            raise ValueError(f"page at {self.offset:#x} has {len(self.data)} bytes, not "
                             f"{PAGE_SIZE}")

    @property
    def secinfo(self) -> SecInfo:
        return SecInfo.of(self.page_type, self.flags)


def _pages(blob: bytes) -> list[bytes]:
    """`blob` cut into zero-padded pages."""
    return [blob[i:i + PAGE_SIZE].ljust(PAGE_SIZE, b"\0") for i in range(0, len(blob), PAGE_SIZE)]


@dataclass
class EnclaveLayout:
    """The SECS parameters and the pages of an enclave, in the order the loader adds them."""

    size: int
    pages: list[EnclavePage]
    ssa_frame_size: int = 1
    misc_select: int = 0
    ms_buf_size: int = PAGE_SIZE
    attributes: Attributes = field(
        default_factory=lambda: Attributes(AttributeFlags.MODE64BIT, XFRM_X87_SSE))
    isv_prod_id: int = 0
    isv_svn: int = 0

    def validate(self) -> None:
        """What ECREATE/EADD would refuse about the shape (contents are the monitor's business)."""
        if self.size < 2 * PAGE_SIZE or self.size & (self.size - 1):
            raise ValueError(f"enclave size {self.size:#x} is not a power of two of at least "
                             "2 pages")
        seen: set[int] = set()
        for page in self.pages:
            if page.offset >= self.size:
                raise ValueError(f"page at {page.offset:#x} is outside the {self.size:#x}-byte "
                                 "enclave")
            if page.offset in seen:
                raise ValueError(f"two pages at offset {page.offset:#x}")
            seen.add(page.offset)

    def mrenclave(self) -> bytes:
        """MRENCLAVE after ECREATE, every EADD (+EEXTEND) in order and EINIT."""
        self.validate()
        m = EnclaveMeasurement()
        m.ecreate(self.ssa_frame_size, self.size)
        with progress("measuring the enclave", len(self.pages), unit="page",
                      show=len(self.pages) >= PROGRESS_PAGES) as advance:
            for page in self.pages:
                m.add_pages(page.offset, page.data, page.secinfo, page.measured)
                advance(1)
        return m.finalize()

    @classmethod
    def simple(cls, code: bytes, data: bytes = b"", threads: int = 1, *,
               ssa_frame_size: int = 1, **params: Any) -> EnclaveLayout:
        """Code pages (R|X) from offset 0, then data pages (R|W), then per thread a TCS (entry
        at offset 0, the start of the code) followed by its SIMPLE_NSSA SSA frames (R|W); the
        size is the next power of two. `params` sets the other SECS/SIGSTRUCT parameters."""
        if threads < 1:
            raise ValueError(f"an enclave needs at least one thread, not {threads}")
        pages = [EnclavePage(i * PAGE_SIZE, PageType.PT_REG, PageFlags.R | PageFlags.X, page)
                 for i, page in enumerate(_pages(code))]
        pages += [EnclavePage(len(pages) * PAGE_SIZE + i * PAGE_SIZE, PageType.PT_REG,
                              PageFlags.R | PageFlags.W, page)
                  for i, page in enumerate(_pages(data))]
        offset = len(pages) * PAGE_SIZE
        for _ in range(threads):
            ssa = offset + PAGE_SIZE
            tcs = Tcs(ossa=ssa, nssa=SIMPLE_NSSA, oentry=0)
            pages.append(EnclavePage(offset, PageType.PT_TCS, PageFlags(0), tcs.pack()))
            pages += [EnclavePage(ssa + i * PAGE_SIZE, PageType.PT_REG,
                                  PageFlags.R | PageFlags.W, bytes(PAGE_SIZE))
                      for i in range(SIMPLE_NSSA * ssa_frame_size)]
            offset = ssa + SIMPLE_NSSA * ssa_frame_size * PAGE_SIZE
        size = 2 * PAGE_SIZE
        while size < offset:
            size *= 2
        return cls(size, pages, ssa_frame_size=ssa_frame_size, **params)


@dataclass(frozen=True)
class SignedEnclave:
    """A layout with its SIGSTRUCT: what the bundle file holds."""

    layout: EnclaveLayout
    sigstruct: SigStruct

    @property
    def mrenclave(self) -> bytes:
        """The MRENCLAVE the signer vouched for (SIGSTRUCT.ENCLAVEHASH)."""
        return self.sigstruct.enclave_hash

    @property
    def mrsigner(self) -> bytes:
        return mrsigner(self.sigstruct)

    def to_bytes(self) -> bytes:
        layout = self.layout
        layout.validate()
        attrs = layout.attributes
        parts = [HEADER.pack(MAGIC, layout.size, layout.ms_buf_size, attrs.flags, attrs.xfrm,
                             layout.ssa_frame_size, layout.misc_select, len(layout.pages))]
        parts += [ENTRY.pack(p.offset, p.secinfo.flags, PAGE_MEASURED if p.measured else 0)
                  for p in layout.pages]
        parts += [p.data for p in layout.pages]
        parts.append(self.sigstruct.pack())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SignedEnclave:
        """Parse a bundle. Its SIGSTRUCT is not checked against the pages: EINIT does that."""
        if len(raw) < HEADER.size or raw[:8] != MAGIC:
            raise BundleError(f"not an enclave bundle (no {MAGIC.decode()} header)")
        _, size, ms_buf_size, flags, xfrm, ssa_frame_size, misc_select, count = \
            HEADER.unpack_from(raw)
        expected = HEADER.size + count * (ENTRY.size + PAGE_SIZE) + SigStruct.SIZE
        if len(raw) != expected:
            raise BundleError(f"{len(raw)} bytes, but {count} pages make a bundle of "
                              f"{expected} bytes")
        data_at = HEADER.size + count * ENTRY.size
        pages = []
        try:
            for i in range(count):
                offset, secinfo, page_flags = ENTRY.unpack_from(raw, HEADER.size + i * ENTRY.size)
                info = SecInfo(secinfo)
                info.validate()
                data = raw[data_at + i * PAGE_SIZE:data_at + (i + 1) * PAGE_SIZE]
                pages.append(EnclavePage(offset, info.page_type, info.page_flags, data,
                                         bool(page_flags & PAGE_MEASURED)))
            sig = SigStruct.unpack(raw[-SigStruct.SIZE:])
        except ValueError as err:                # SgxStructureError is one too
            raise BundleError(str(err)) from None
        layout = EnclaveLayout(size, pages, ssa_frame_size, misc_select, ms_buf_size,
                               Attributes(flags, xfrm), sig.isv_prod_id, sig.isv_svn)
        return cls(layout, sig)


def sign(layout: EnclaveLayout, key: rsa.RSAPrivateKey, *, date: datetime.date | None = None,
         attribute_mask: Attributes = DEFAULT_ATTRIBUTE_MASK) -> SignedEnclave:
    """Measure `layout` and sign a SIGSTRUCT for it with `key` (RSA-3072, e = 3), dated `date`
    (default: today, as sgx_sign does)."""
    template = SigStruct(
        date=sigstruct_date(date or datetime.date.today()),
        misc_select=layout.misc_select, misc_mask=0xFFFF_FFFF,
        attributes=replace(layout.attributes), attribute_mask=replace(attribute_mask),
        enclave_hash=layout.mrenclave(), isv_prod_id=layout.isv_prod_id,
        isv_svn=layout.isv_svn)
    return SignedEnclave(layout, sign_sigstruct(template, key))


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """`hyperenclave-sign` (also `python -m hyperenclave.sdk`); see the module docstring."""
    from .image import EnclaveImageError, layout_from_json

    p = argparse.ArgumentParser(prog="hyperenclave-sign",
                                description="Sign HyperEnclave enclaves into HEENCL01 bundles.")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("gen-key", aliases=["keygen"],
                       help="write a new RSA-3072 e=3 signing key (PEM)")
    k.add_argument("key", type=Path)
    s = sub.add_parser("sign", help="sign an enclave ELF with --config (or, with --code, "
                       "EnclaveLayout.simple(code, data, threads))")
    s.add_argument("--key", type=Path, required=True)
    s.add_argument("--config", type=Path, help="JSON signing config (hyperenclave/sdk/image.py)")
    s.add_argument("--code", type=Path)
    s.add_argument("--data", type=Path)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--isv-prod-id", type=int, default=0)
    s.add_argument("--isv-svn", type=int, default=0)
    s.add_argument("files", type=Path, nargs="+", metavar="[ELF] OUT")
    m = sub.add_parser("measure", help="print the MRENCLAVE of a JSON layout")
    m.add_argument("--layout", type=Path, required=True)
    d = sub.add_parser("show", help="print a bundle's identity and pages")
    d.add_argument("bundle", type=Path)
    args = p.parse_args(argv)

    try:
        if args.command in ("gen-key", "keygen"):
            save_signing_key(generate_signing_key(), args.key)
            return 0
        if args.command == "sign":
            return _sign(args)
        if args.command == "measure":
            try:
                raw = json.loads(args.layout.read_text())
            except json.JSONDecodeError as err:
                raise EnclaveImageError(f"{args.layout}: not JSON: {err}") from None
            print(layout_from_json(raw).mrenclave().hex())
            return 0
        return _show(args.bundle)
    except (OSError, EnclaveImageError) as err:
        print(f"hyperenclave-sign: {err}", file=sys.stderr)
        return 1


def _sign(args: argparse.Namespace) -> int:
    from .image import EnclaveConfig, layout_from_elf      # sdk.image imports this module
    if args.code is not None:
        if args.config is not None or len(args.files) != 1:
            print("hyperenclave-sign: sign takes either --code CODE OUT or --config CFG ELF "
                  "OUT", file=sys.stderr)
            return 2
        layout = EnclaveLayout.simple(args.code.read_bytes(),
                                      args.data.read_bytes() if args.data else b"",
                                      args.threads, isv_prod_id=args.isv_prod_id,
                                      isv_svn=args.isv_svn)
    else:
        if args.config is None or len(args.files) != 2:
            print("hyperenclave-sign: sign needs --config CFG ELF OUT", file=sys.stderr)
            return 2
        layout = layout_from_elf(args.files[0].read_bytes(), EnclaveConfig.load(args.config))
    signed = sign(layout, load_signing_key(args.key))
    out = args.files[-1]
    out.write_bytes(signed.to_bytes())
    print(f"{out}: MRENCLAVE {signed.mrenclave.hex()}\n{out}: MRSIGNER  {signed.mrsigner.hex()}")
    return 0


def _show(path: Path) -> int:
    try:
        signed = SignedEnclave.from_bytes(path.read_bytes())
    except BundleError as err:
        print(f"{path}: {err}", file=sys.stderr)
        return 1
    layout = signed.layout
    print(f"MRENCLAVE {signed.mrenclave.hex()}\nMRSIGNER  {signed.mrsigner.hex()}\n"
          f"size {layout.size:#x}, ssa_frame_size {layout.ssa_frame_size}, ms_buf_size "
          f"{layout.ms_buf_size:#x}, attributes {layout.attributes.flags:#x}/"
          f"{layout.attributes.xfrm:#x}, ISVPRODID {layout.isv_prod_id}, ISVSVN {layout.isv_svn}")
    for page in layout.pages:
        rwx = "".join(c if page.flags & f else "-"
                      for c, f in zip("rwx", (PageFlags.R, PageFlags.W, PageFlags.X)))
        print(f"  {page.offset:#010x} {page.page_type.name:<7} {rwx} "
              f"{'measured' if page.measured else 'unmeasured'}")
    if layout.mrenclave() != signed.mrenclave:
        print("the pages do not match the signed MRENCLAVE", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
