"""Progress bars for long work (guest image builds, measuring large enclaves), on a terminal only.

Quiet when standard error is not a terminal, in CI (`CI` set) or with HYPERENCLAVE_QUIET=1, so
logs and test output stay clean; tqdm draws the bar otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def enabled() -> bool:
    return (sys.stderr.isatty() and not os.environ.get("CI")
            and os.environ.get("HYPERENCLAVE_QUIET", "") in ("", "0"))


@contextmanager
def progress(description: str, total: int | None = None, unit: str = "it", *,
             show: bool = True) -> Iterator[Callable[[int], None]]:
    """`advance(n)` for each piece of work done; a bar only when `show` (the work is long enough
    to deserve one) and `enabled()`."""
    if not show or not enabled():
        yield lambda n=1: None
        return
    from tqdm import tqdm
    with tqdm(total=total, desc=description, unit=unit, leave=False, file=sys.stderr) as bar:
        yield bar.update
