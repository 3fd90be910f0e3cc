"""The 8254 PIT (channel 0 only) and the fixed 8259 PIC: a periodic tick on vector 0x20."""

from __future__ import annotations

PIT_HZ = 1_193_182
IRQ0_VECTOR = 0x20


class Pit:
    """Turns the programmed divisor into a period in virtual nanoseconds."""

    def __init__(self) -> None:
        self.ports = range(0x40, 0x44)
        self.period_ns: int | None = None
        self._divisor = 0
        self._low: int | None = None

    def port_read(self, port: int, size: int) -> int:
        return 0

    def port_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == 0x43:
            self._low = None
        elif port == 0x40:
            if self._low is None:
                self._low = value
            else:
                divisor = self._low | value << 8 or 0x10000
                self._low = None
                self.period_ns = divisor * 1_000_000_000 // PIT_HZ


class Pic:
    """A PIC with a fixed mapping (IRQ n -> vector 0x20+n); EOIs and masks are accepted."""

    def __init__(self, base: int = 0x20) -> None:
        self.ports = range(base, base + 2)

    def port_read(self, port: int, size: int) -> int:
        return 0

    def port_write(self, port: int, size: int, value: int) -> None:
        pass

