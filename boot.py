#!/usr/bin/env python3
"""Boot an emulated HyperEnclave machine and run a scenario (the default one if none is given).

Exit status 0 when the scenario succeeded, 1 with a clear message otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from hyperenclave.machine import DEFAULT_CMDLINE, MachineConfig, MachineError
from hyperenclave.platform.memory import parse_size

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Boot an emulated HyperEnclave machine (measured boot into swtpm, a mock "
                    "Linux host on Unicorn) and run a scenario.")
    p.add_argument("scenario", nargs="?", default=str(SCENARIOS / "default.py"),
                   help="scenario file (a Python file with run(ctx)); default: scenarios/default.py")
    p.add_argument("--list", action="store_true", help="list the bundled scenarios and exit")
    p.add_argument("-m", "--memory", default="1G", help="RAM size, e.g. 1G, 4G, 512M (default 1G)")
    p.add_argument("--cmdline", default=DEFAULT_CMDLINE,
                   help=f"kernel command line (default: {DEFAULT_CMDLINE!r})")
    p.add_argument("--out", default="out", help="where evidence is written (default: out/)")
    p.add_argument("--name", default="default",
                   help="machine name: its TPM state persists per name (default: default)")
    p.add_argument("--state-dir", help="TPM state directory (default: ~/.local/state/hyperenclave/NAME)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up (default 120)")
    p.add_argument("--rebuild", action="store_true", help="rebuild guest images even if cached")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    g.add_argument("-q", "--quiet", action="store_true", help="do not echo the guest's console")
    return p.parse_args(argv)


def load_scenario(path: str):
    file = Path(path)
    if not file.exists() and (SCENARIOS / f"{path}.py").exists():
        file = SCENARIOS / f"{path}.py"
    if not file.exists():
        raise SystemExit(f"boot.py: no scenario file {path!r} (try --list)")
    spec = importlib.util.spec_from_file_location(f"scenario_{file.stem}", file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "run"):
        raise SystemExit(f"boot.py: scenario {file} has no run(ctx) function")
    return module


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for file in sorted(SCENARIOS.glob("*.py")):
            doc = (load_scenario(str(file)).__doc__ or "").strip().splitlines()
            print(f"{file.stem:24} {doc[0] if doc else ''}")
        return 0
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        memory = parse_size(args.memory)
    except ValueError:
        raise SystemExit(f"boot.py: bad --memory {args.memory!r}: use e.g. 1G or 512M") from None
    config = MachineConfig(name=args.name, memory=memory, cmdline=args.cmdline,
                           state_dir=Path(args.state_dir) if args.state_dir else None,
                           echo_serial=not args.quiet, rebuild=args.rebuild)
    scenario = load_scenario(args.scenario)
    try:
        ok = scenario.run(config=config, out=Path(args.out), timeout=args.timeout)
    except MachineError as e:
        print(f"boot.py: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a clear one-line message instead of a traceback for users
        if args.verbose:
            raise
        print(f"boot.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
