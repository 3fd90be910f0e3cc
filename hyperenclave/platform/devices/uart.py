"""A 16550 UART at COM1: the guest's console, in both directions."""

from __future__ import annotations

import collections
import threading
from typing import Callable

THR_RBR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)
LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
IRQ = 4


class Uart16550:
    """Transmit is immediate; received bytes wait in a FIFO and raise IRQ4 when enabled."""

    def __init__(self, base: int = 0x3F8, raise_irq: Callable[[int], None] | None = None) -> None:
        self.ports = range(base, base + 8)
        self.base = base
        self._raise_irq = raise_irq
        self._rx: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        self._regs = [0] * 8
        self._dll = self._dlm = 0
        self.listeners: list[Callable[[bytes], None]] = []
        self.output = bytearray()
        self.input_ready = threading.Event()

    def port_read(self, port: int, size: int) -> int:
        reg = port - self.base
        dlab = self._regs[LCR] & 0x80
        if reg == THR_RBR and not dlab:
            with self._lock:
                value = self._rx.popleft() if self._rx else 0
                if not self._rx:
                    self.input_ready.clear()
            return value
        if reg == THR_RBR:
            return self._dll
        if reg == IER and dlab:
            return self._dlm
        if reg == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0)
        if reg == IIR_FCR:
            return 0x04 if self._rx and self._regs[IER] & 1 else 0x01
        return self._regs[reg]

    def port_write(self, port: int, size: int, value: int) -> None:
        reg = port - self.base
        value &= 0xFF
        dlab = self._regs[LCR] & 0x80
        if reg == THR_RBR and not dlab:
            byte = bytes([value])
            self.output += byte
            for listener in self.listeners:
                listener(byte)
        elif reg == THR_RBR:
            self._dll = value
        elif reg == IER and dlab:
            self._dlm = value
        else:
            self._regs[reg] = value
            if reg == IER and value & 1 and self._rx and self._raise_irq:
                self._raise_irq(IRQ)

    def feed(self, data: bytes) -> None:
        """Bytes typed at the serial console (from any thread)."""
        with self._lock:
            self._rx.extend(data)
        self.input_ready.set()
        if self._regs[IER] & 1 and self._raise_irq:
            self._raise_irq(IRQ)
