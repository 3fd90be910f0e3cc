"""Build enclave ELFs from C sources with the system gcc, linked with the trusted runtime.

    from hyperenclave.sdk.build import build_enclave
    elf = build_enclave([Path("hello.c")])        # cached; a position-independent ELF at base 0

The enclave is freestanding (no libc: the trusted runtime `trts/` and the guest's `lib/`, string
functions and snprintf, provide what it needs), compiled -fPIE and without SSE (this emulator's
AEX saves only the general-purpose registers in the SSA, no XSAVE area) and linked `ld -pie`
with `trts/enclave.ld`. Outputs are cached by content hash (sources, runtime, headers,
flags, toolchain) under `<cache root>/enclaves/<key>/enclave.elf`, next to the guest build's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hyperenclave.guest.build import (COMMON_CFLAGS, GUEST_DIR, _run, _toolchain,
                                      default_cache_root)

SDK_DIR = Path(__file__).resolve().parent
TRTS_DIR = SDK_DIR / "trts"
TRTS_SOURCES = (TRTS_DIR / "entry.S", TRTS_DIR / "trts.c", TRTS_DIR / "heap.c",
                TRTS_DIR / "crypto.c", TRTS_DIR / "seal.c",
                GUEST_DIR / "lib" / "string.c", GUEST_DIR / "lib" / "vsnprintf.c")
INCLUDE_DIRS = (SDK_DIR / "include", GUEST_DIR / "include")
LINKER_SCRIPT = TRTS_DIR / "enclave.ld"
#: the guest's user flags, position-independent instead (and no GOT for the enclave's own symbols)
ENCLAVE_CFLAGS = tuple(f for f in COMMON_CFLAGS if f not in ("-fno-pic", "-fno-pie")) + (
    "-fPIE", "-fvisibility=hidden")
ENCLAVE_LDFLAGS = ("-pie", "--no-dynamic-linker", "-nostdlib", "--build-id=none",
                   "-z", "max-page-size=4096", "-z", "noexecstack", "-z", "text",
                   "--hash-style=sysv")


class EnclaveBuildError(RuntimeError):
    """An enclave could not be built (no sources, compiler error, missing toolchain)."""


def _inputs(sources: Sequence[Path]) -> list[Path]:
    headers = sorted(p for d in INCLUDE_DIRS for p in d.glob("*.h"))
    local = sorted({h for s in sources for h in s.parent.glob("*.h")})
    return [*TRTS_SOURCES, LINKER_SCRIPT, *headers, *local, *sources]


def build_enclave(sources: Sequence[Path | str], *, cache_dir: Path | None = None,
                  rebuild: bool = False) -> Path:
    """Compile `sources` (C or assembly) with the trusted runtime into an enclave ELF."""
    srcs = [Path(s).resolve() for s in sources]
    if not srcs:
        raise EnclaveBuildError("an enclave needs at least one source file")
    for s in srcs:
        if not s.is_file():
            raise EnclaveBuildError(f"enclave source {s} does not exist")
    try:
        tc = _toolchain()
    except RuntimeError as err:
        raise EnclaveBuildError(f"cannot build enclaves: {err}") from None
    h = hashlib.sha256()
    h.update(json.dumps([ENCLAVE_CFLAGS, ENCLAVE_LDFLAGS, tc.version]).encode())
    for p in _inputs(srcs):
        data = p.read_bytes()
        h.update(p.name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root().parent / "enclaves"
    final = root / h.hexdigest()[:32]
    elf = final / "enclave.elf"
    if elf.is_file() and not rebuild:
        return elf
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        flags = [*ENCLAVE_CFLAGS, *(f"-I{d}" for d in INCLUDE_DIRS), "-nostdinc", "-isystem",
                 tc.gcc_include, f"-ffile-prefix-map={GUEST_DIR.parent}=."]
        objs = []
        for i, src in enumerate([*TRTS_SOURCES, *srcs]):
            obj = tmp / f"{i}-{src.stem}.o"
            _run([tc.gcc, *flags, f"-ffile-prefix-map={src.parent}=.", "-c", str(src), "-o",
                  str(obj)])
            objs.append(str(obj))
        _run([tc.ld, *ENCLAVE_LDFLAGS, "-T", str(LINKER_SCRIPT), "-o", str(tmp / "enclave.elf"),
              *objs])
        for obj in objs:
            os.unlink(obj)
        try:
            os.rename(tmp, final)
        except OSError:
            if not elf.is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, RuntimeError) and not isinstance(err, EnclaveBuildError):
            raise EnclaveBuildError(f"enclave build failed: {err}") from None
        raise
    return elf
