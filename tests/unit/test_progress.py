"""Progress bars appear for long work on a terminal and never in CI or piped output."""

from __future__ import annotations

import io

import pytest

from hyperenclave import progress as progress_module
from hyperenclave.progress import progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch):
    """Installs a terminal as standard error (inside the test: pytest's capture swaps
    sys.stderr between setup and call)."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("HYPERENCLAVE_QUIET", raising=False)

    def install() -> Tty:
        tty = Tty()
        monkeypatch.setattr(progress_module.sys, "stderr", tty)
        return tty
    return install


def test_a_terminal_gets_a_bar(terminal) -> None:
    terminal = terminal()
    with progress("building guest images", 3, unit="file") as advance:
        for _ in range(3):
            advance(1)
    assert "building guest images" in terminal.getvalue()


@pytest.mark.parametrize("env", ["CI", "HYPERENCLAVE_QUIET"])
def test_ci_and_quiet_mode_get_none(terminal, monkeypatch, env) -> None:
    monkeypatch.setenv(env, "1")
    terminal = terminal()
    with progress("building guest images", 3) as advance:
        advance(3)
    assert terminal.getvalue() == ""


def test_short_work_gets_none(terminal) -> None:
    terminal = terminal()
    with progress("measuring the enclave", 2, show=False) as advance:
        advance(2)
    assert terminal.getvalue() == ""


def test_piped_output_gets_none(monkeypatch) -> None:
    pipe = io.StringIO()
    monkeypatch.setattr(progress_module.sys, "stderr", pipe)
    monkeypatch.delenv("CI", raising=False)
    with progress("building guest images", 3) as advance:
        advance(3)
    assert pipe.getvalue() == ""
