"""Assembles a Machine from options: memory, devices, vCPU, swtpm, firmware (the builder).

    from hyperenclave.machine import Machine, MachineConfig
    with Machine(MachineConfig(name="demo")) as m:
        m.boot()                      # build guest images (cached), start swtpm, measured boot
        m.run(timeout=60)             # until the guest powers off
        print(m.serial_text())
        m.export_evidence("out")      # serial.log, eventlog.bin, pcrs.json (+ the AK quote)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from .platform.cpu import MachineCheck, VCpu
from .platform.devices.bus import IoBus
from .platform.devices.dma import DmaEngine
from .platform.devices.pit import IRQ0_VECTOR, Pic, Pit
from .platform.devices.power import PowerControl, ResetControl
from .platform.devices.tpm_crb import TpmCrb
from .platform.devices.uart import Uart16550
from .platform.firmware.bootparam import BOOT_PARAMS_ADDR, BootParams
from .platform.firmware.measured_boot import BootImages, MeasuredBoot
from .platform.iommu import Iommu
from .platform.memory import GiB, PhysicalMemory, ReservedRange, format_size
from .tpm.client import TpmClient
from .tpm.eventlog import parse_eventlog
from .tpm.quote import QUOTE_PCRS, Quote
from .tpm.swtpm import Swtpm
from .vmm.monitor import Monitor
from .vmm.tpm_anchor import MonitorTpm

if TYPE_CHECKING:
    from .runcontrol import RunControl

log = logging.getLogger(__name__)

DEFAULT_CMDLINE = "console=ttyS0 memmap=256M$0x30000000"
MANUFACTURER_CA_DIR = "swtpm-localca"      # the TPM vendor's CA that signs the EK certificate
QUOTE_FILES = ("quote.msg", "quote.sig", "pcrs.ser", "nonce.bin", "ak.pub.pem", "ak.crt.pem",
               "ca.crt.pem")


class MachineError(RuntimeError):
    """The machine cannot be built, booted or run as asked."""


class MachineTimeout(MachineError):
    """A blocking call ran out of time; the message says what was awaited."""


def default_state_root() -> Path:
    return Path(os.environ.get("HYPERENCLAVE_STATE", Path.home() / ".local/state/hyperenclave"))


@dataclass
class MachineConfig:
    """Options a user picks; everything else is derived."""

    name: str = "default"
    memory: int = GiB
    cmdline: str = DEFAULT_CMDLINE
    state_dir: Path | None = None      # TPM state persists here across boots of this machine
    timeslice_us: int = 10_000          # longest uninterrupted run of guest code
    echo_serial: bool = False           # copy guest console output to our stdout
    rebuild: bool = False               # rebuild guest images even if cached

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_root() / self.name

    @property
    def reserved(self) -> ReservedRange | None:
        return ReservedRange.from_cmdline(self.cmdline)


@dataclass
class RunResult:
    """How a run ended: 'poweroff', 'reset' (with the reason) or 'stopped'."""

    state: str
    reason: str = ""
    seconds: float = 0.0
    stats: dict[str, object] = field(default_factory=dict)


def default_boot_images(rebuild: bool = False, extra_files: dict[str, bytes] | None = None,
                        extra_programs: dict[str, object] | None = None) -> BootImages:
    """The guest (built or cached) with this monitor's image in its initramfs at
    /lib/firmware/hyperenclave-monitor.bin, the SDK's sample enclaves (/enclaves/<name>.bin,
    signed with the SDK's sample key) and their apps (/bin/hello_app, ...), plus `extra_files`
    (e.g. a custom /etc/rc) and `extra_programs` ({name: C/asm sources}, built into
    /bin/<name>)."""
    from .guest.build import MONITOR_PATH, build_guest, build_initramfs
    from .sdk.samples import sample_bundles, sample_programs
    from .vmm.image import build_monitor_image
    built = build_guest(rebuild=rebuild, extra_programs={**sample_programs(),
                                                         **(extra_programs or {})})
    files = {MONITOR_PATH: build_monitor_image(), **sample_bundles(), **(extra_files or {})}
    return BootImages(built.loader.read_bytes(), built.kernel.read_bytes(),
                      build_initramfs(built, files))


class Machine:
    """One emulated PC with its own swtpm and state directory; nothing global."""

    def __init__(self, config: MachineConfig | None = None, images: BootImages | None = None) -> None:
        self.config = config or MachineConfig()
        self._images = images
        self.memory: PhysicalMemory | None = None
        self.swtpm: Swtpm | None = None
        self.tpm: TpmClient | None = None
        self.cpu: VCpu | None = None
        self.boot_params: BootParams | None = None
        self.result: RunResult | None = None
        self._t0 = time.perf_counter_ns()
        self._stop = threading.Event()
        self._line_buffer = bytearray()
        self.serial_lines: list[str] = []
        self.line_listeners: list[Callable[[str], None]] = []  # each completed console line
        self.run_control: RunControl | None = None   # a debugger holding the run (runcontrol.py)
        self._line_cond = threading.Condition()

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def clock(self) -> int:
        """The virtual TSC: nanoseconds since power-on at 1 GHz."""
        return time.perf_counter_ns() - self._t0

    def skip_clock(self, ns: int) -> None:
        """Time the machine spent stopped by a debugger does not pass for the guest (QEMU's
        `stop` freezes the virtual clock the same way)."""
        self._t0 += ns

    def _build(self) -> None:
        cfg = self.config
        reserved = cfg.reserved
        self.memory = memory = PhysicalMemory(cfg.memory)
        if reserved and not memory.is_ram(reserved.start, reserved.size):
            raise MachineError(f"{reserved} is not inside the machine's {format_size(cfg.memory)} of RAM")
        self.bus = bus = IoBus()
        self.uart = Uart16550(raise_irq=lambda irq: self.cpu and self.cpu.raise_irq(IRQ0_VECTOR + irq))
        self.uart.listeners.append(self._on_serial)
        self.pit = Pit()
        for dev in (self.uart, PowerControl(bus), ResetControl(bus), self.pit, Pic(0x20), Pic(0xA0)):
            bus.add_port_device(dev)
        self.crb = TpmCrb(self._tpm_transmit)
        bus.add_mmio_device(self.crb)
        self.iommu = Iommu()
        self.dma = DmaEngine(memory, self.iommu)
        bus.add_port_device(self.dma)
        self.cpu = VCpu(memory, bus, self.clock)
        self.monitor = Monitor(memory, self.iommu)
        self.crb.filter = self.monitor.mediate_tpm_command
        self.cpu.vmx_root = self.monitor

    def _tpm_transmit(self, command: bytes) -> bytes:
        assert self.tpm is not None
        return self.tpm.transmit(command)

    def boot(self) -> "Machine":
        """Build images (cached), start swtpm, run the measured boot; the host is ready to run."""
        images = self._images or self._default_images()
        self._build()
        state = self.config.resolved_state_dir()
        (state / "tpm").mkdir(parents=True, exist_ok=True)
        self.swtpm = Swtpm(state / "tpm")
        self.swtpm.manufacture(state / MANUFACTURER_CA_DIR)     # EK + EK certificate, once
        self.swtpm.start()
        self.tpm = TpmClient.connect(self.swtpm)
        self.monitor.tpm = MonitorTpm(self.tpm, state, state / MANUFACTURER_CA_DIR / "issuercert.pem",
                                      self.config.name)
        config = {"memory": self.config.memory, "cpus": 1, "firmware": "hyperenclave-emu"}
        fw = MeasuredBoot(self.memory, self.tpm, config)
        self._t0 = time.perf_counter_ns()      # power-on: the TSC starts here
        self.boot_params = fw.boot(self.cpu, images, self.config.cmdline)
        self.images = images
        return self

    def _default_images(self) -> BootImages:
        return default_boot_images(rebuild=self.config.rebuild)

    def shutdown(self) -> None:
        """Stop swtpm and free memory; safe to call twice."""
        if self.tpm is not None:
            self.tpm.close()
            self.tpm = None
        if self.swtpm is not None:
            self.swtpm.stop()
            self.swtpm = None
        if self.cpu is not None:
            self.cpu.close()
            self.cpu = None

    # ------------------------------------------------------------------ running
    def run(self, timeout: float | None = 120.0) -> RunResult:
        """Run the guest until it powers off, resets, `stop()` is called or `timeout` passes."""
        cpu, pit, bus = self.cpu, self.pit, self.bus
        if cpu is None:
            raise MachineError("boot() the machine before run()")
        started = time.monotonic()
        deadline = started + timeout if timeout else None
        next_tick: int | None = None
        state, reason = "stopped", ""
        try:
            while not self._stop.is_set():
                if self.run_control is not None and not self.run_control.wait_until_running():
                    break                       # the debugger ended the run (quit, reset)
                if bus.stop_requested:
                    state, reason = bus.stop_requested, "requested by the guest"
                    break
                now = self.clock()
                if pit.period_ns:
                    if next_tick is None:
                        next_tick = now + pit.period_ns
                    elif now >= next_tick:
                        cpu.raise_irq(IRQ0_VECTOR)
                        next_tick = max(next_tick + pit.period_ns, now)
                if deadline and time.monotonic() > deadline:
                    raise MachineTimeout(f"guest still running after {timeout} s "
                                         f"(last serial line: {self.last_line()!r})")
                if cpu.halted:
                    # Sleep until the next tick or console input; the next slice delivers it.
                    wait_ns = (next_tick - now) if next_tick else 10_000_000
                    self.uart.input_ready.wait(max(wait_ns, 0) / 1e9)
                    continue
                slice_us = self.config.timeslice_us
                if next_tick is not None:
                    slice_us = max(200, min(slice_us, (next_tick - now) // 1000))
                if self.run_control is not None:
                    self.run_control.run_slice(slice_us)
                else:
                    cpu.run_slice(slice_us)
        except MachineCheck as mc:
            state, reason = ("reset" if mc.reset else "crashed"), mc.reason
            log.error("machine %s: %s", self.config.name, mc.reason)
        self._flush_line()
        stats = asdict(cpu.stats)
        stats["exits"] = {reason.name: n for reason, n in self.monitor.exit_counts.items()}
        self.result = RunResult(state, reason, time.monotonic() - started, stats)
        return self.result

    def stop(self) -> None:
        """Ask a running `run()` (from another thread) to return."""
        self._stop.set()
        if self.cpu is not None:
            self.cpu.uc.emu_stop()

    # ------------------------------------------------------------------ serial console
    def _on_serial(self, byte: bytes) -> None:
        if self.config.echo_serial:
            os.write(1, byte)
        if byte == b"\n":
            self._flush_line()
        elif byte != b"\r":
            self._line_buffer += byte

    def _flush_line(self) -> None:
        if not self._line_buffer:
            return
        line = self._line_buffer.decode(errors="replace")
        self._line_buffer.clear()
        with self._line_cond:
            self.serial_lines.append(line)
            self._line_cond.notify_all()
        for listener in self.line_listeners:
            listener(line)

    def last_line(self) -> str:
        return self.serial_lines[-1] if self.serial_lines else ""

    def serial_text(self) -> str:
        return self.uart.output.decode(errors="replace")

    # ------------------------------------------------------------------ evidence
    def eventlog_bytes(self) -> bytes:
        """The TCG log as it is now in guest memory (code after firmware may have appended)."""
        assert self.memory is not None
        params = BootParams.unpack(self.memory.read(BOOT_PARAMS_ADDR, 0x1000))
        if params.eventlog_size > params.eventlog_max:
            raise MachineError(f"event log size {params.eventlog_size} exceeds its area")
        return self.memory.read(params.eventlog_addr, params.eventlog_size)

    def pcrs(self) -> dict[int, bytes]:
        assert self.tpm is not None
        return self.tpm.read_pcrs(range(24))

    def quote(self, nonce: bytes, pcrs: Iterable[int] = QUOTE_PCRS) -> Quote:
        """A TPM2_Quote by the monitor's AK (what the quote hypercall asks the monitor for)."""
        tpm = self.monitor.tpm
        if tpm is None or tpm.ak_cert is None:
            raise MachineError("no TPM quote: the monitor has not launched on this boot")
        return tpm.quote(nonce, pcrs)

    def export_evidence(self, out: str | os.PathLike[str], nonce: bytes | None = None, *,
                        tpm_evidence: bool = True) -> Path:
        """serial.log and monitor.log, as boot.py promises, and with `tpm_evidence` eventlog.bin,
        pcrs.json and, once the monitor has launched, the TPM quote (with `nonce`, default 32
        random bytes) and what verifies it: quote.msg, quote.sig, pcrs.ser, nonce.bin,
        ak.pub.pem, ak.crt.pem, ca.crt.pem. Without it the TPM files already in `out` (from an
        attestation, which they must keep matching) are left alone."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "serial.log").write_bytes(bytes(self.uart.output))
        (out / "monitor.log").write_text("".join(line + "\n" for line in self.monitor.log_lines))
        if not tpm_evidence:
            return out
        for name in QUOTE_FILES:
            (out / name).unlink(missing_ok=True)       # never leave an older boot's quote
        tpm = self.monitor.tpm
        if nonce is not None or (tpm is not None and tpm.ak_cert is not None):
            self.quote(nonce if nonce is not None else os.urandom(32)).write(out)
            assert tpm is not None                     # quote() raised otherwise
            tpm.write_credentials(out)
        log_bytes = self.eventlog_bytes()
        parse_eventlog(log_bytes)  # refuse to export a log we cannot read back
        (out / "eventlog.bin").write_bytes(log_bytes)
        pcrs = {"sha256": {str(i): v.hex() for i, v in self.pcrs().items()}}
        (out / "pcrs.json").write_text(json.dumps(pcrs, indent=2) + "\n")
        return out
