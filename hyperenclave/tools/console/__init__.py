"""The interactive hypervisor monitor console (issue 6): QEMU-monitor-style commands over a
running machine. `hyperenclave-console` or `python boot.py --console`; see README.md."""

from .app import HvConsole, open_console
from .memview import ConsoleError

__all__ = ["ConsoleError", "HvConsole", "open_console"]
