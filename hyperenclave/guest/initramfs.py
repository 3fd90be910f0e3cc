"""cpio "newc" (070701) archives for the guest's initramfs, in pure Python.

`make_initramfs` is deterministic: entries sorted by path, parent directories added, mtime 0,
uid/gid 0, inode numbers 1, 2, ... in order, so the same files always give the same bytes
(the bytes are measured by the firmware and used as attestation reference values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NEWC_MAGIC = b"070701"
NEWC_CRC_MAGIC = b"070702"
TRAILER = "TRAILER!!!"
HEADER_LEN = 110

S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000


class CpioError(ValueError):
    """A malformed cpio newc archive."""


@dataclass(frozen=True)
class CpioEntry:
    name: str        # as stored, without a leading "/" (e.g. "bin/hello")
    mode: int
    data: bytes = b""
    ino: int = 0
    nlink: int = 1

    @property
    def is_dir(self) -> bool:
        return (self.mode & S_IFMT) == S_IFDIR

    @property
    def is_file(self) -> bool:
        return (self.mode & S_IFMT) == S_IFREG


def normalize_path(path: str) -> str:
    """'/bin/hello', './bin/hello' and 'bin/hello' are all 'bin/hello'."""
    p = path
    while p.startswith("./") or p.startswith("/"):
        p = p[2:] if p.startswith("./") else p[1:]
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if not parts or ".." in parts:
        raise CpioError(f"bad initramfs path {path!r}")
    return "/".join(parts)


def default_mode(path: str, data: bytes) -> int:
    """0755 for executables (ELF or under bin/, sbin/), else 0644."""
    name = normalize_path(path)
    if data[:4] == b"\x7fELF" or name.split("/")[0] in ("bin", "sbin") or name.startswith("usr/bin/"):
        return S_IFREG | 0o755
    return S_IFREG | 0o644


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _header(ino: int, mode: int, nlink: int, filesize: int, namesize: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, filesize, 0, 0, 0, 0, namesize, 0)
    return NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)


def write_cpio(entries: list[CpioEntry]) -> bytes:
    """Serialize entries in the given order, followed by the trailer."""
    out = bytearray()
    for e in entries + [CpioEntry(TRAILER, 0, b"", 0, 1)]:
        name = e.name.encode() + b"\0"
        out += _header(e.ino, e.mode, e.nlink, len(e.data), len(name))
        out += name + b"\0" * _pad4(HEADER_LEN + len(name))
        out += e.data + b"\0" * _pad4(len(e.data))
    return bytes(out)


def make_initramfs(files: Mapping[str, bytes], modes: Mapping[str, int] | None = None) -> bytes:
    """A deterministic newc archive holding `files` ({"/bin/hello": b"..."}) and their directories.

    `modes` optionally gives the full st_mode of some paths (default: `default_mode`).
    """
    norm: dict[str, bytes] = {}
    mode_of: dict[str, int] = {}
    for path, data in files.items():
        name = normalize_path(path)
        if name in norm:
            raise CpioError(f"duplicate initramfs path {path!r}")
        norm[name] = bytes(data)
        mode_of[name] = (modes or {}).get(path) or default_mode(name, norm[name])
    dirs = set()
    for name in norm:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    clash = dirs & norm.keys()
    if clash:
        raise CpioError(f"initramfs paths used both as file and directory: {sorted(clash)}")
    entries = []
    for ino, name in enumerate(sorted(dirs | norm.keys()), start=1):
        if name in dirs:
            entries.append(CpioEntry(name, S_IFDIR | 0o755, b"", ino, 2))
        else:
            entries.append(CpioEntry(name, mode_of[name], norm[name], ino, 1))
    return write_cpio(entries)


def read_cpio(archive: bytes) -> list[CpioEntry]:
    """All entries up to the trailer (concatenated archives after it are ignored)."""
    entries = []
    off = 0
    data = bytes(archive)
    while True:
        if off + HEADER_LEN > len(data):
            raise CpioError(f"truncated cpio header at offset {off}")
        magic = data[off:off + 6]
        if magic not in (NEWC_MAGIC, NEWC_CRC_MAGIC):
            raise CpioError(f"bad cpio magic {magic!r} at offset {off}")
        try:
            f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise CpioError(f"bad cpio header at offset {off}") from exc
        ino, mode, nlink, filesize, namesize = f[0], f[1], f[4], f[6], f[11]
        name_end = off + HEADER_LEN + namesize
        if namesize == 0 or name_end > len(data):
            raise CpioError(f"bad cpio name at offset {off}")
        name = data[off + HEADER_LEN:name_end - 1].decode()
        doff = name_end + _pad4(HEADER_LEN + namesize)
        if doff + filesize > len(data):
            raise CpioError(f"truncated cpio data for {name!r}")
        if name == TRAILER:
            return entries
        entries.append(CpioEntry(name, mode, data[doff:doff + filesize], ino, nlink))
        off = doff + filesize + _pad4(filesize)


def read_initramfs(archive: bytes) -> dict[str, bytes]:
    """Regular files of an archive, keyed by absolute path ("/bin/hello")."""
    return {"/" + normalize_path(e.name): e.data for e in read_cpio(archive) if e.is_file}
