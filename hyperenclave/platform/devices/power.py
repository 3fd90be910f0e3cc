"""Power control: ACPI PM1a_CNT S5 (power off) at 0x604 as in QEMU, and the 0xCF9 reset port."""

from __future__ import annotations

from .bus import IoBus

PM1A_CNT = 0x604
SLP_EN_S5 = 0x2000
RESET_CONTROL = 0xCF9


class PowerControl:
    def __init__(self, bus: IoBus) -> None:
        self.ports = range(PM1A_CNT, PM1A_CNT + 2)
        self.bus = bus

    def port_read(self, port: int, size: int) -> int:
        return 0

    def port_write(self, port: int, size: int, value: int) -> None:
        if port == PM1A_CNT and value & SLP_EN_S5 == SLP_EN_S5:
            self.bus.request_stop("poweroff")


class ResetControl:
    def __init__(self, bus: IoBus) -> None:
        self.ports = range(RESET_CONTROL, RESET_CONTROL + 1)
        self.bus = bus

    def port_read(self, port: int, size: int) -> int:
        return 0

    def port_write(self, port: int, size: int, value: int) -> None:
        if value & 0x04:
            self.bus.request_stop("reset")
