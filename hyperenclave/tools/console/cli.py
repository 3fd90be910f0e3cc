"""`hyperenclave-console`: boot a machine and open the console on it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hyperenclave.machine import DEFAULT_CMDLINE, Machine, MachineConfig, MachineError
from hyperenclave.platform.memory import parse_size

from .app import open_console
from .memview import ConsoleError


def run_console(config: MachineConfig, *, script: str | None = None, running: bool = False) -> int:
    """Boot a machine from `config`, open the console on it, shut it down afterwards."""
    with Machine(config) as machine:
        machine.boot()
        return open_console(machine, script=script, running=running)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="hyperenclave-console",
        description="Boot an emulated HyperEnclave machine held at its first instruction and "
                    "open the monitor console on it (QEMU-monitor-style commands; `help`).")
    p.add_argument("-m", "--memory", default="1G", help="RAM size (default 1G)")
    p.add_argument("--cmdline", default=DEFAULT_CMDLINE, help="kernel command line")
    p.add_argument("--name", default="console", help="machine name (its TPM state persists per name)")
    p.add_argument("--state-dir", help="TPM state directory (default: ~/.local/state/hyperenclave/NAME)")
    p.add_argument("--rebuild", action="store_true", help="rebuild guest images even if cached")
    p.add_argument("--script", help="run the console commands in FILE first")
    p.add_argument("--run", action="store_true", help="start the guest running instead of held")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the machine does")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        memory = parse_size(args.memory)
    except ValueError:
        print(f"hyperenclave-console: bad --memory {args.memory!r}: use e.g. 1G or 512M", file=sys.stderr)
        return 2
    config = MachineConfig(name=args.name, memory=memory, cmdline=args.cmdline,
                           state_dir=Path(args.state_dir) if args.state_dir else None,
                           rebuild=args.rebuild)
    try:
        return run_console(config, script=args.script, running=args.run)
    except (MachineError, ConsoleError) as err:
        print(f"hyperenclave-console: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
