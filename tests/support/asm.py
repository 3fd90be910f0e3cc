"""Assemble small guest snippets with the system binutils (tests only)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def assemble(source: str, base: int) -> bytes:
    """GNU as (AT&T syntax, .code64) -> flat binary linked at `base`."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "a.S").write_text(".code64\n" + source + "\n")
        subprocess.run(["as", "--64", "-o", str(t / "a.o"), str(t / "a.S")], check=True,
                       capture_output=True)
        subprocess.run(["ld", "-Ttext", hex(base), "--oformat=binary", "-o", str(t / "a.bin"),
                        str(t / "a.o")], check=True, capture_output=True)
        return (t / "a.bin").read_bytes()
