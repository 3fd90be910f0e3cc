"""What a scenario script gets from `python boot.py SCENARIO.py`: machines to start, named checks,
evidence written to --out and a short human summary at the end.

A scenario is a Python file with a docstring (its first line is what `--list` shows) and

    def run(ctx: ScenarioContext) -> None:
        with ctx.start(rc=[...]) as s:            # a Session (hyperenclave.session)
            out = s.sh("/bin/hello_app")
            ctx.check("hello ECALL", "= 42" in out.output, out.output)

The scenario passes when every check passed and no exception escaped.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .machine import MachineConfig
from .platform.firmware.measured_boot import BootImages
from .session import Session

BUNDLED = Path(__file__).resolve().parent.parent / "scenarios"


class ScenarioError(RuntimeError):
    """A scenario file that cannot be found or has no run(ctx)."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ScenarioContext:
    """The options the user gave (`config`, `out`, `timeout`) and what the scenario found."""

    config: MachineConfig
    out: Path
    timeout: float = 120.0
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _sessions: list[Session] = field(default_factory=list)
    _errors: list[str] = field(default_factory=list)

    def start(self, *, evidence: str | None = "", **options: Any) -> Session:
        """A running machine built from the user's options, overridden by `options` (any
        Session.start argument). Its evidence goes to `out` (or `out/<evidence>` when several
        machines run; None: no evidence) when the scenario ends."""
        base = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}
        base.update(options)
        session = Session.start(boot_timeout=self.timeout, **base)
        if evidence is not None:
            session.before_shutdown.append(lambda s: self._export(s, self.out / evidence))
        self._sessions.append(session)
        return session

    def _export(self, session: Session, where: Path) -> None:
        try:
            session.export_evidence(where)
        except Exception as e:  # reported by finish(); the machine still shuts down
            self._errors.append(f"evidence of machine {session.machine.config.name}: {e}")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a named check (shown in the summary); returns `ok` for chaining."""
        self.checks.append(Check(name, bool(ok), detail if not ok else ""))
        return bool(ok)

    def note(self, text: str) -> None:
        """A line for the summary that is not a pass/fail check (a measured figure, a digest)."""
        self.notes.append(text)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def finish(self) -> None:
        """Stop the machines still running; each writes its evidence as it stops."""
        for session in self._sessions:
            session.stop()
        if self._errors:
            raise ScenarioError("; ".join(self._errors))

    def summary(self, title: str) -> str:
        lines = [f"== {title}: {'PASSED' if self.passed else 'FAILED'}"]
        lines += [f"   {'ok  ' if c.ok else 'FAIL'} {c.name}" + (f": {c.detail}" if c.detail else "")
                  for c in self.checks]
        lines += [f"   {n}" for n in self.notes]
        if not self.checks:
            lines.append("   (the scenario made no checks)")
        lines.append(f"   evidence: {self.out}/")
        return "\n".join(lines)


def attest_tampered_boot(ctx: ScenarioContext, genuine: BootImages, tampered: dict[str, Any],
                         pcr: int, what: str) -> Session:
    """The tampering scenarios' shared course: the deployed boot (`genuine` images) attests and
    seals the monitor's root secret; the same machine booted with `tampered` (Session.start
    options) cannot unseal it and its attestation against the deployer's reference is refused,
    the verifier naming PCR `pcr`. Returns the tampered session for more checks."""
    from .sdk.samples import sign_sample
    from .verifier import failures
    hello = sign_sample("hello")
    s = ctx.start(images=genuine, evidence="genuine")
    verdict = s.attest("/bin/hello_app", expect=hello, out=ctx.out / "genuine")
    ctx.check("the deployed boot attests", verdict["ok"], str(failures(verdict)))
    deployed = s.pcrs()[pcr]
    s.stop()
    t = ctx.start(evidence="tampered", **tampered)
    ctx.check(f"PCR {pcr} differs from the deployed boot's", t.pcrs()[pcr] != deployed)
    ctx.check("the monitor cannot unseal its root secret and says so",
              any("root secret unseal failed" in line for line in t.monitor.log_lines))
    verdict = t.attest("/bin/hello_app", expect=hello, out=ctx.out / "tampered",
                       reference=genuine)
    failed = failures(verdict)
    ctx.check("remote attestation is refused", not verdict["ok"])
    ctx.check(f"the verifier names the changed {what} measurement (PCR {pcr})",
              f"PCR {pcr} " in failed.get("boot_measurements", ""), str(failed))
    ctx.note(f"refused by: {', '.join(failed)}")
    return t


def load(path_or_name: str) -> ModuleType:
    """A scenario module from a file path or the name of a bundled one."""
    file = Path(path_or_name)
    if not file.exists():
        file = BUNDLED / f"{path_or_name.removesuffix('.py')}.py"
    if not file.exists():
        raise ScenarioError(f"no scenario file {path_or_name!r} (bundled: "
                            f"{', '.join(p.stem for p in bundled())}; try --list)")
    spec = importlib.util.spec_from_file_location(f"scenario_{file.stem.replace('-', '_')}", file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise ScenarioError(f"scenario {file} has no run(ctx) function")
    return module


def bundled() -> list[Path]:
    return sorted(BUNDLED.glob("*.py"))


def describe(module: ModuleType) -> str:
    doc = (module.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""
