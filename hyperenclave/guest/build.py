"""Build the guest: boot loader stub, mock Linux kernel, user programs and the initramfs.

    from hyperenclave.guest.build import build_guest
    images = build_guest()            # cached; images.kernel, images.loader, images.initramfs

Everything is compiled from `hyperenclave/guest/` with the system gcc and binutils. Outputs
are cached under `<cache root>/<key>/`, where the key hashes every source file, the build
flags, `gcc --version`/`ld --version` and any extra programs/files; the cache root is
`cache_dir`, else `$HYPERENCLAVE_CACHE/guest`, else `~/.cache/hyperenclave/guest`. A build
goes to a temporary directory that is renamed into place, so concurrent builds
(pytest-xdist) are safe. Builds are reproducible: the same sources and toolchain give
identical bytes (no build-id, no paths, no timestamps).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import progress
from .initramfs import make_initramfs, normalize_path

log = logging.getLogger(__name__)

GUEST_DIR = Path(__file__).resolve().parent
BUILD_FORMAT = 1   # bump when the layout of the outputs changes

#: Command line the platform should pass by default (docs/boot-protocol.md).
DEFAULT_CMDLINE = "console=ttyS0 memmap=256M$0x30000000"

KERNEL_LMA = 0x100000
KERNEL_VMA = 0xFFFFFFFF80100000
LOADER_ADDR = 0x7000
USER_TEXT = 0x401000
MONITOR_PATH = "/lib/firmware/hyperenclave-monitor.bin"

#: The user programs built from user/<name>.c and placed at /bin/<name>.
USER_PROGRAMS = ("hello", "segv", "cpuid", "compute", "fault", "echo", "sleep", "systest", "sysctl",
                 "memattack", "hcall", "cpuidloop", "attack", "enclave_load", "enclave_errors",
                 "enclave_threads", "enclave_shmem")

COMMON_CFLAGS = (
    "-std=gnu11", "-O2", "-Wall", "-ffreestanding", "-nostdlib", "-fno-pic", "-fno-pie",
    "-mno-red-zone", "-mno-sse", "-mno-mmx", "-mno-avx", "-fno-stack-protector",
    "-fcf-protection=none", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
    "-fno-common", "-fno-strict-aliasing", "-fno-ident", "-Wa,--noexecstack",
)
KERNEL_CFLAGS = COMMON_CFLAGS + ("-mcmodel=kernel", "-Iinclude", "-Ikernel/include")
USER_CFLAGS = COMMON_CFLAGS + ("-Iinclude", "-Iuser/libc", "-Iuser/urts")
LOADER_CFLAGS = ("-ffreestanding", "-nostdlib", "-fno-pic", "-Iinclude", "-Wa,--noexecstack")
LDFLAGS = ("-nostdlib", "-static", "--build-id=none", "-z", "max-page-size=4096",
           "-z", "noexecstack")

# tool -> Debian package that provides it
TOOLS = {"gcc": "gcc", "ld": "binutils", "objcopy": "binutils", "ar": "binutils"}
SOURCE_DIRS = ("include", "boot", "kernel", "lib", "user", "rootfs")
SOURCE_SUFFIXES = (".c", ".h", ".S", ".ld")


class GuestBuildError(RuntimeError):
    """The guest could not be built (compiler error, missing tool, bad input)."""


class ToolchainMissing(GuestBuildError):
    """gcc or binutils is not installed."""


@dataclass(frozen=True)
class GuestImages:
    kernel: Path                   # ELF (vmlinux): p_paddr 0x100000, VMA 0xffffffff80100000
    loader: Path                   # flat binary for physical 0x7000
    initramfs: Path                # cpio newc
    user_programs: dict[str, Path]  # name -> static ELF (also in the initramfs at /bin/<name>)
    manifest: dict                 # sha256 hex: kernel, loader, initramfs, files{path: sha}
    directory: Path = field(default=Path("."))
    initramfs_files: dict[str, bytes] = field(default_factory=dict, repr=False)


# ---------------------------------------------------------------- toolchain


def _which(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pkg = TOOLS[tool]
        raise ToolchainMissing(
            f"the guest build needs `{tool}`, which is not on PATH; install the Debian package "
            f"'{pkg}' (apt-get install {pkg})")
    return path


def _run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    log.debug("run: %s", " ".join(cmd))
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        tool = Path(cmd[0]).name
        pkg = TOOLS.get(tool, tool)
        raise ToolchainMissing(f"cannot run `{tool}`: install the Debian package '{pkg}'") from exc
    if proc.returncode != 0:
        raise GuestBuildError(
            f"guest build step failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class _Toolchain:
    gcc: str
    ld: str
    objcopy: str
    ar: str
    gcc_include: str
    version: str


def _toolchain() -> _Toolchain:
    paths = {t: _which(t) for t in TOOLS}
    version = _run([paths["gcc"], "--version"]) + _run([paths["ld"], "--version"])
    gcc_include = _run([paths["gcc"], "-print-file-name=include"]).strip()
    return _Toolchain(paths["gcc"], paths["ld"], paths["objcopy"], paths["ar"], gcc_include, version)


# ---------------------------------------------------------------- sources and cache key


def _source_files() -> list[Path]:
    files = []
    for d in SOURCE_DIRS:
        for p in sorted((GUEST_DIR / d).rglob("*")):
            if p.is_file() and (p.suffix in SOURCE_SUFFIXES or d == "rootfs"):
                files.append(p)
    return files


def _as_sources(v: Path | str | Sequence[Path | str]) -> list[Path]:
    if isinstance(v, (str, Path)):
        return [Path(v).resolve()]
    return [Path(x).resolve() for x in v]


def _as_bytes(v: bytes | bytearray | Path | str) -> bytes:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    return Path(v).read_bytes()


def _cache_key(tc: _Toolchain, extra_programs: Mapping[str, list[Path]],
               extra_files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()

    def add(tag: str, data: bytes) -> None:
        h.update(tag.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

    add("format", str(BUILD_FORMAT).encode())
    add("flags", json.dumps([KERNEL_CFLAGS, USER_CFLAGS, LOADER_CFLAGS, LDFLAGS,
                             USER_PROGRAMS]).encode())
    add("toolchain", tc.version.encode())
    for p in _source_files() + [GUEST_DIR / "build.py", GUEST_DIR / "initramfs.py"]:
        add("src:" + p.relative_to(GUEST_DIR).as_posix(), p.read_bytes())
    for name in sorted(extra_programs):
        for p in extra_programs[name]:
            add(f"prog:{name}:{p.name}", p.read_bytes())
            for header in sorted(p.parent.glob("*.h")):     # headers next to the source
                add(f"prog:{name}:{header.name}", header.read_bytes())
    for path in sorted(extra_files):
        add("file:" + path, extra_files[path])
    return h.hexdigest()[:32]


def default_cache_root() -> Path:
    env = os.environ.get("HYPERENCLAVE_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "hyperenclave"
    return base / "guest"


# ---------------------------------------------------------------- the build


class _Builder:
    def __init__(self, tc: _Toolchain, out: Path,
                 advance: Callable[[int], None] = lambda n: None) -> None:
        self.tc = tc
        self.out = out
        self.obj = out / "obj"
        self.jobs = max(1, os.cpu_count() or 1)
        self.advance = advance          # one step per source compiled (a progress bar)

    def cflags(self, base: Sequence[str], cwd: Path) -> list[str]:
        flags = [f"-I{GUEST_DIR / f[2:]}" if f.startswith("-I") else f for f in base]
        return [*flags, f"-ffile-prefix-map={GUEST_DIR}=.", f"-ffile-prefix-map={cwd}=.",
                "-nostdinc", "-isystem", self.tc.gcc_include]

    def compile(self, srcs: Sequence[Path], flags: Sequence[str], tag: str) -> list[Path]:
        """Compile sources to objects. A source is named relative to GUEST_DIR (or, for extra
        programs, to its own directory) so no absolute path reaches the output."""
        jobs = []
        for src in srcs:
            try:
                rel = src.relative_to(GUEST_DIR).as_posix()
                name, cwd = rel, GUEST_DIR
            except ValueError:
                rel, cwd = src.name, src.parent
                name = "extra/" + hashlib.sha256(str(src).encode()).hexdigest()[:8] + "/" + src.name
            obj = self.obj / tag / (name + ".o")
            obj.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((cwd, [self.tc.gcc, *self.cflags(flags, cwd), "-c", rel, "-o", str(obj)]))
        def run(job: tuple[Path, list[str]]) -> None:
            _run(job[1], cwd=job[0])
            self.advance(1)
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(run, jobs))
        return [Path(cmd[-1]) for _, cmd in jobs]

    def link(self, script: str, objs: Sequence[Path], out: Path) -> Path:
        _run([self.tc.ld, *LDFLAGS, "-T", script, "-o", str(out), *map(str, objs)], cwd=GUEST_DIR)
        return out

    def kernel(self) -> Path:
        srcs = sorted(p for p in (GUEST_DIR / "kernel").rglob("*") if p.suffix in (".c", ".S"))
        srcs += sorted((GUEST_DIR / "lib").glob("*.c"))
        # head.S first so startup_64 is at the start of .text (it is also in .head.text)
        srcs.sort(key=lambda p: (p.name != "head.S", p.relative_to(GUEST_DIR).as_posix()))
        objs = self.compile(srcs, KERNEL_CFLAGS, "kernel")
        return self.link("kernel/kernel.ld", objs, self.out / "vmlinux")

    def loader(self) -> Path:
        objs = self.compile([GUEST_DIR / "boot" / "loader.S"], LOADER_CFLAGS, "boot")
        elf = self.link("boot/loader.ld", objs, self.out / "loader.elf")
        out = self.out / "loader.bin"
        _run([self.tc.objcopy, "-O", "binary", str(elf), str(out)])
        size = out.stat().st_size
        if size > 4096:
            raise GuestBuildError(f"boot loader stub is {size} bytes, it must fit in 4 KiB")
        return out

    def libc(self) -> tuple[Path, Path]:
        crt0, = self.compile([GUEST_DIR / "user" / "libc" / "crt0.S"], USER_CFLAGS, "user")
        # the user library: libc and the enclave SDK's untrusted runtime (user/urts/)
        srcs = [GUEST_DIR / "user" / "libc" / "libc.c", GUEST_DIR / "user" / "urts" / "urts.c",
                *sorted((GUEST_DIR / "lib").glob("*.c"))]
        objs = self.compile(srcs, USER_CFLAGS, "user")
        lib = self.obj / "libc.a"
        _run([self.tc.ar, "rcsD", str(lib), *map(str, objs)])
        return crt0, lib

    def programs(self, progs: Mapping[str, list[Path]]) -> dict[str, Path]:
        crt0, lib = self.libc()
        (self.out / "bin").mkdir(exist_ok=True)
        out = {}
        for name, srcs in progs.items():
            objs = self.compile(srcs, USER_CFLAGS, f"prog/{name}")
            out[name] = self.link("user/user.ld", [crt0, *objs, lib], self.out / "bin" / name)
        return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def base_initramfs_files(user_programs: Mapping[str, Path]) -> dict[str, bytes]:
    """The initramfs contents of a plain build: /bin/<program> and /etc/rc."""
    files = {f"/bin/{name}": Path(p).read_bytes() for name, p in user_programs.items()}
    files["/etc/rc"] = (GUEST_DIR / "rootfs" / "etc" / "rc").read_bytes()
    for p in sorted((GUEST_DIR / "rootfs").rglob("*")):
        if p.is_file():
            files["/" + p.relative_to(GUEST_DIR / "rootfs").as_posix()] = p.read_bytes()
    return files


def make_manifest(kernel: bytes, loader: bytes, initramfs: bytes,
                  files: Mapping[str, bytes]) -> dict:
    return {
        "kernel": _sha256(kernel),
        "loader": _sha256(loader),
        "initramfs": _sha256(initramfs),
        "files": {"/" + normalize_path(p): _sha256(d) for p, d in sorted(files.items())},
    }


def _load(directory: Path) -> GuestImages:
    manifest = json.loads((directory / "manifest.json").read_text())
    progs = {p.name: p for p in sorted((directory / "bin").iterdir())}
    from .initramfs import read_initramfs
    initramfs = directory / "initramfs.cpio"
    return GuestImages(
        kernel=directory / "vmlinux",
        loader=directory / "loader.bin",
        initramfs=initramfs,
        user_programs=progs,
        manifest=manifest,
        directory=directory,
        initramfs_files=read_initramfs(initramfs.read_bytes()),
    )


def build_guest(rebuild: bool = False, cache_dir: Path | None = None, *,
                extra_programs: Mapping[str, Path | str | Sequence[Path | str]] | None = None,
                extra_files: Mapping[str, bytes | Path | str] | None = None) -> GuestImages:
    """Build (or fetch from the cache) the guest images.

    extra_programs: {name: C/asm source(s)} built against the user libc, installed at /bin/<name>.
    extra_files: {initramfs path: bytes or a file path}, e.g. the monitor image at
        MONITOR_PATH; a given "/etc/rc" replaces the default one.
    cache_dir: the cache root (outputs go to cache_dir/<key>/).
    """
    progs_in = {name: _as_sources(v) for name, v in (extra_programs or {}).items()}
    for name in progs_in:
        if not name or "/" in name:
            raise GuestBuildError(f"bad program name {name!r}")
    files_in = {"/" + normalize_path(p): _as_bytes(v) for p, v in (extra_files or {}).items()}
    tc = _toolchain()
    key = _cache_key(tc, progs_in, files_in)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    final = root / key
    if not rebuild and (final / "manifest.json").is_file():
        log.debug("guest images from cache %s", final)
        return _load(final)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    os.chmod(tmp, 0o755)
    try:
        log.info("building guest images in %s", tmp)
        progs = {name: [GUEST_DIR / "user" / f"{name}.c"] for name in USER_PROGRAMS}
        progs.update(progs_in)
        with progress("building guest images", unit="file") as advance:
            b = _Builder(tc, tmp, advance)
            kernel = b.kernel()
            loader = b.loader()
            programs = b.programs(progs)
        files = base_initramfs_files(programs)
        files.update(files_in)
        cpio = make_initramfs(files)
        (tmp / "initramfs.cpio").write_bytes(cpio)
        manifest = make_manifest(kernel.read_bytes(), loader.read_bytes(), cpio, files)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(tmp / "obj")
        if rebuild and final.exists():
            trash = Path(tempfile.mkdtemp(prefix=".old-", dir=root))
            try:
                os.rename(final, trash / "old")
            except OSError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "manifest.json").is_file():   # lost a race: the winner's copy is complete
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("guest images ready in %s", final)
    return _load(final)


def build_initramfs(images: GuestImages, extra_files: Mapping[str, bytes | Path | str] | None = None,
                    out: Path | None = None) -> bytes:
    """A new initramfs: the built one's files plus/overridden by `extra_files` (no recompiling)."""
    files = dict(images.initramfs_files)
    for p, v in (extra_files or {}).items():
        files["/" + normalize_path(p)] = _as_bytes(v)
    data = make_initramfs(files)
    if out is not None:
        Path(out).write_bytes(data)
    return data


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(description="Build the hyperenclave guest images.")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    img = build_guest(rebuild=args.rebuild, cache_dir=args.cache_dir)
    print(f"kernel    {img.kernel}\nloader    {img.loader}\ninitramfs {img.initramfs}")
    for name, p in img.user_programs.items():
        print(f"bin/{name:<7} {p}")


if __name__ == "__main__":
    main()
