"""Port-I/O and MMIO dispatch: the only doors from guest code to devices."""

from __future__ import annotations

from typing import Protocol


class PortDevice(Protocol):
    ports: range

    def port_read(self, port: int, size: int) -> int: ...

    def port_write(self, port: int, size: int, value: int) -> None: ...


class MmioDevice(Protocol):
    base: int
    size: int

    def mmio_read(self, uc, offset: int, size: int, user_data) -> int: ...

    def mmio_write(self, uc, offset: int, size: int, value: int, user_data) -> None: ...


class IoBus:
    """Routes IN/OUT to devices; unclaimed ports read as all-ones, like an empty ISA bus."""

    def __init__(self) -> None:
        self._ports: dict[int, PortDevice] = {}
        self.mmio_devices: list[MmioDevice] = []
        self.stop_requested: str | None = None  # "poweroff" or "reset", set by the power device
        self.unclaimed: dict[int, int] = {}

    def add_port_device(self, dev: PortDevice) -> None:
        for port in dev.ports:
            if port in self._ports:
                raise ValueError(f"port {port:#x} is already claimed")
            self._ports[port] = dev

    def add_mmio_device(self, dev: MmioDevice) -> None:
        self.mmio_devices.append(dev)

    def port_read(self, port: int, size: int) -> int:
        dev = self._ports.get(port)
        if dev is None:
            self.unclaimed[port] = self.unclaimed.get(port, 0) + 1
            return (1 << (8 * size)) - 1
        return dev.port_read(port, size)

    def port_write(self, port: int, size: int, value: int) -> None:
        dev = self._ports.get(port)
        if dev is None:
            self.unclaimed[port] = self.unclaimed.get(port, 0) + 1
            return
        dev.port_write(port, size, value)

    def request_stop(self, reason: str) -> None:
        self.stop_requested = reason
