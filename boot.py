#!/usr/bin/env python3
"""Boot an emulated HyperEnclave machine and run a scenario (the default one if none is given).

Exit status 0 when the scenario succeeded, 1 with a clear message otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hyperenclave import scenario as scenario_files
from hyperenclave.machine import DEFAULT_CMDLINE, MachineConfig, MachineError
from hyperenclave.platform.memory import parse_size
from hyperenclave.scenario import ScenarioContext, ScenarioError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Boot an emulated HyperEnclave machine (measured boot into swtpm, a mock "
                    "Linux host on Unicorn) and run a scenario.")
    p.add_argument("scenario", nargs="?", default="default",
                   help="a bundled scenario's name (see --list) or a scenario file (a Python file "
                        "with run(ctx)); default: default")
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
    p.add_argument("--console", action="store_true",
                   help="instead of a scenario, boot the machine held at its first instruction and "
                        "open the monitor console (batch mode when stdin is not a terminal)")
    p.add_argument("--script", help="with --console: run the console commands in FILE first")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    g.add_argument("-q", "--quiet", action="store_true", help="do not echo the guest's console")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for file in scenario_files.bundled():
            print(f"{file.stem:24} {scenario_files.describe(scenario_files.load(str(file)))}")
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
    if args.console or args.script:
        return console(args, config)
    try:
        scenario = scenario_files.load(args.scenario)
    except ScenarioError as e:
        print(f"boot.py: {e}", file=sys.stderr)
        return 1
    ctx = ScenarioContext(config, Path(args.out), args.timeout)
    try:
        try:
            scenario.run(ctx)
        finally:
            ctx.finish()
    except (MachineError, ScenarioError) as e:
        ctx.check("the scenario ran to its end", False, str(e))
    except Exception as e:  # a clear one-line message instead of a traceback for users
        if args.verbose:
            raise
        ctx.check("the scenario ran to its end", False, f"{type(e).__name__}: {e}")
    print(ctx.summary(Path(args.scenario).stem))
    return 0 if ctx.passed else 1


def console(args: argparse.Namespace, config: MachineConfig) -> int:
    from hyperenclave.tools.console import ConsoleError
    from hyperenclave.tools.console.cli import run_console
    if args.scenario != "default":
        raise SystemExit("boot.py: --console opens a machine booted from the options; "
                         "it does not run a scenario")
    config.echo_serial = False              # the console's `serial` shows it
    try:
        return run_console(config, script=args.script)
    except (MachineError, ConsoleError) as e:
        print(f"boot.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
