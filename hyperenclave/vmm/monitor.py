"""The monitor (HyperEnclave's RustMonitor): launch under a running host, VM exits, teardown.

The host driver calls the image's entry stub on each CPU; its VMXON hands the CPU to
`Monitor.vmxon`, which is the monitor's code running in VMX root operation:

1. find and check its own image (header, version, code digest, the layout the driver chose);
2. capture the host's CPU state into the VMCS guest-state area (the host becomes a guest),
   fill the host-state area and the controls;
3. build the root EPT in monitor memory (GPA = HPA for RAM; monitor memory and the EPC map to
   one read-only zero page), the IOMMU domain from the same rules, the I/O bitmaps;
4. VM entry: the vCPU's second translation stage becomes the EPT and every guest event goes
   through `on_event` as a VM exit; the host resumes at the driver's return address, RAX = 0.

From then on the monitor only answers through the VMCS and memory: exit handlers update the
guest state (RIP, RAX, ...) and inject events; `HC_DISABLE` undoes it all and scrubs.
"""

from __future__ import annotations

import errno
import logging
import secrets
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from hyperenclave.platform.cpu import (CR4_VMXE, GP, PF, UD, EventKind, GuestEvent,
                                       IdentityStage, MachineCheck, VCpu, _native_cpuid)
from hyperenclave.platform.devices.power import PM1A_CNT, RESET_CONTROL
from hyperenclave.platform.interrupts import deliver
from hyperenclave.platform.memory import FrameAllocator, PhysicalMemory

from . import vmcs as V
from .ept import TPM_CRB_MMIO, EptMisconfig, EptViolation, build_identity_ept
from .enclave import Enclave, EnclaveManager
from .gu_enclave import ENCLU_EENTER, ENCLU_EEXIT, ENCLU_ERESUME, EnclaveRunner
from .ept_tlb import EptTlb
from .gaccess import GuestMemory
from .hypercall import (HypercallArgs, HypercallCode, HypercallError, HypercallTable,
                        InvalidOpcode, code_name)
from .image import HE_HV_ALIGN, MonitorImage, MonitorImageError, code_digest
from .key_leaves import KeyLeaves
from .keys import ROOT_SECRET_SIZE, PlatformKeys
from .quoting import enclave_quote
from .sgx import AttributeFlags, SgxFault
from .iommu_tables import build_dma_domain
from .tpm_anchor import ANCHOR_ERRORS, AnchorKeys, EnclaveIdentity, MonitorTpm
from .shared_mem import SharedMemoryCalls
from .vmcs import ExitReason, Vmcs, VmcsField as F

if TYPE_CHECKING:
    from hyperenclave.platform.iommu import Iommu

log = logging.getLogger(__name__)

MiB = 1 << 20
MAX_IMAGE = 16 * MiB
MAX_CPUS = 64
HV_SIGNATURE = b"HyperEnclave"
CPUID_HV_LEAF = 0x4000_0000
CPUID1_ECX_VMX, CPUID1_ECX_HYPERVISOR = 1 << 5, 1 << 31
#: Ports whose writes can end the platform (reset, power off): the monitor scrubs first.
IO_EXIT_PORTS = frozenset({RESET_CONTROL, PM1A_CNT, PM1A_CNT + 1})
MAX_CMRM_REGIONS = 128


class LaunchError(Exception):
    """The monitor refuses to launch: the stub returns -errno to the driver."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


@dataclass(frozen=True)
class Layout:
    """Monitor memory and EPC as the driver laid them out and the monitor accepted them."""

    hv_start: int
    hv_size: int
    epc_start: int
    epc_size: int
    image_size: int
    percpu_start: int
    percpu_size: int
    cpus: int

    @property
    def hv_end(self) -> int:
        return self.hv_start + self.hv_size

    @property
    def heap_start(self) -> int:
        return self.percpu_start + self.cpus * self.percpu_size

    @property
    def zero_page(self) -> int:
        """The 2 MiB read-only "empty page" every monitor/EPC GPA maps to: the last 2 MiB."""
        return self.hv_end - HE_HV_ALIGN

    def percpu(self, cpu: int) -> "PerCpuArea":
        return PerCpuArea(self.percpu_start + cpu * self.percpu_size, self.percpu_size)

    def holes(self) -> list[tuple[int, int]]:
        return [(self.hv_start, self.hv_size), (self.epc_start, self.epc_size)]


@dataclass(frozen=True)
class PerCpuArea:
    """One CPU's pages in monitor memory, in this order."""

    base: int
    size: int

    @property
    def vmxon_region(self) -> int:
        return self.base

    @property
    def vmcs_region(self) -> int:
        return self.base + 0x1000

    @property
    def io_bitmap_a(self) -> int:
        return self.base + 0x2000

    @property
    def io_bitmap_b(self) -> int:
        return self.base + 0x3000

    @property
    def msr_bitmap(self) -> int:
        return self.base + 0x4000

    @property
    def stack_top(self) -> int:
        return self.base + self.size


@dataclass(frozen=True)
class EptViolationRecord:
    """One logged EPT violation: what the exit information fields said."""

    rip: int
    cpl: int
    gpa: int
    linear: int | None
    qualification: int
    access: str


class Monitor:
    """The VMX-root software of one machine (all its CPUs), enabled and disabled at run time."""

    def __init__(self, memory: PhysicalMemory, iommu: "Iommu | None" = None,
                 log_sink: Callable[[str], None] | None = None) -> None:
        self.memory = memory
        self.iommu = iommu
        self.log_lines: deque[str] = deque(maxlen=10_000)
        self._log_sink = log_sink
        self.enabled = False
        self.launches = 0
        self.layout: Layout | None = None
        self.image: MonitorImage | None = None
        self.vmcs: dict[int, Vmcs] = {}
        self.exit_counts: Counter[ExitReason] = Counter()
        #: Called on every VM exit before it is handled (a debugger's "stop at the next exit").
        self.exit_listeners: list[Callable[[VCpu, ExitReason], None]] = []
        self.violations: deque[EptViolationRecord] = deque(maxlen=1000)
        self.dma_faults: deque[str] = deque(maxlen=1000)
        self.io_exit_ports: frozenset[int] = frozenset()
        self.hypercalls = HypercallTable()
        self.cmrm: list[tuple[int, int]] = []
        self.cmrm_done = False
        self.ept = None
        self.dma_domain = None
        self._ept_stage: EptTlb | None = None
        self._guest_mem: GuestMemory | None = None
        self._frames: FrameAllocator | None = None
        self.enclaves: EnclaveManager | None = None
        self.runner: EnclaveRunner | None = None
        self.key_leaves: KeyLeaves | None = None
        self.tpm: MonitorTpm | None = None                 # set by a machine that has a TPM
        self.anchor_keys: AnchorKeys | None = None         # this launch's TPM-anchored secrets
        self.hypercalls.register(HypercallCode.HYPERVISOR_DISABLE, self._hc_disable)
        for code, handler in ((HypercallCode.RESET_STATS, self._hc_reset_stats),
                              (HypercallCode.INIT_CMRM, self._hc_init_cmrm),
                              (HypercallCode.SET_INIT_CMRM_DONE, self._hc_set_init_cmrm_done)):
            self.hypercalls.register(code, handler, fast=True)
        for code, name in ((HypercallCode.ENCLAVE_CREATE, "hc_create"),
                           (HypercallCode.ENCLAVE_ADD_PAGE, "hc_add_page"),
                           (HypercallCode.ENCLAVE_INIT, "hc_init"),
                           (HypercallCode.ENCLAVE_PREPARE_DESTROY, "hc_prepare_destroy"),
                           (HypercallCode.ENCLAVE_FINISH_DESTROY, "hc_finish_destroy")):
            self.hypercalls.register(code, self._enclave_call(name), fast=True)
        self.hypercalls.register(HypercallCode.SHARED_MEMORY_ADD, self._hc_shared_memory_add,
                                 fast=True)
        for code, name in ((HypercallCode.SHARED_MEMORY_REMOVE, "hc_remove"),
                           (HypercallCode.SHARED_MEMORY_INVALID_START, "hc_invalid_start"),
                           (HypercallCode.SHARED_MEMORY_INVALID_END, "hc_invalid_end")):
            self.hypercalls.register(code, self._shared_memory_call(name), fast=True)
        self.hypercalls.register(HypercallCode.ENCLAVE_ENTER, self._hc_eenter)
        self.hypercalls.register(HypercallCode.ENCLAVE_RESUME, self._hc_eresume)
        self.hypercalls.register(HypercallCode.ENCLAVE_EXIT, self._hc_eexit)
        self.hypercalls.register(HypercallCode.ENCLAVE_QUOTE, self._hc_enclave_quote)
        self._cpus: dict[int, VCpu] = {}

    def _enclave_call(self, name: str) -> Callable[[HypercallArgs], int]:
        def call(args: HypercallArgs) -> int:
            assert self.enclaves is not None      # registered handlers run only while enabled
            return getattr(self.enclaves, name)(args)
        return call

    def _shared_memory_call(self, name: str) -> Callable[[HypercallArgs], int]:
        def call(args: HypercallArgs) -> int:
            assert self.runner is not None
            return getattr(SharedMemoryCalls(self.runner), name)(args, self._cpu_for(args))
        return call

    # ------------------------------------------------------------------ logging
    def log(self, message: str, level: int = logging.INFO) -> None:
        line = f"[hv] {message}"
        self.log_lines.append(line)
        log.log(level, "%s", line)
        if self._log_sink is not None:
            self._log_sink(line)

    # ------------------------------------------------------------------ launch (VMX root)
    def vmxon(self, cpu: VCpu, region: int) -> None:
        """The CPU executed the image's VMXON: launch, or return -errno to the stub."""
        try:
            self._launch(cpu, region)
        except LaunchError as err:
            self.log(f"CPU {cpu.index}: launch refused: {err} (-{errno.errorcode.get(err.errno, err.errno)})",
                     logging.ERROR)
            cpu.vmx_operation = False        # VMXOFF on the way back to the stub
            cpu.set_reg("rax", -err.errno)
            cpu.vm_succeed()

    def _launch(self, cpu: VCpu, region: int) -> None:
        if self.enabled:
            raise LaunchError(errno.EBUSY, "the monitor is already running")
        cpu_id = cpu.reg("rdi") & 0xFFFF_FFFF
        image, layout = self._check_image(cpu, cpu.reg("rsi"), cpu_id, region)
        stub_hpa, _ = cpu.translate(cpu.rip)
        if not layout.hv_start <= stub_hpa < layout.hv_start + layout.image_size:
            raise LaunchError(errno.EPERM, f"VMXON at physical {stub_hpa:#x} is not the "
                              "monitor's own entry stub")
        rsp = cpu.reg("rsp")
        return_rip = int.from_bytes(cpu.read_virtual(rsp + 8, 8), "little")
        for what, addr in (("host page-table root", cpu.reg("cr3") & ~0xFFF),
                           ("host stack", cpu.translate(rsp)[0])):
            for start, size in layout.holes():
                if start <= addr < start + size:
                    raise LaunchError(errno.EINVAL, f"the {what} {addr:#x} is inside the range "
                                      f"given to the monitor [{start:#x}-{start + size - 1:#x}]")
        anchor = self._anchor_in_tpm()

        percpu = layout.percpu(cpu_id)
        frames = FrameAllocator(self.memory, layout.heap_start, layout.zero_page - layout.heap_start)
        self.memory.zero(layout.heap_start, layout.hv_end - layout.heap_start)
        self.memory.fill(percpu.base + 0x1000, percpu.size - 0x1000)   # keep the VMXON region

        vmcs = Vmcs()
        self.memory.write(percpu.vmcs_region, vmcs.revision_id.to_bytes(4, "little"))
        vmcs.capture_guest_state(cpu)
        vmcs.write(F.GUEST_RIP, return_rip)
        vmcs.write(F.GUEST_RSP, rsp + 16)           # pop the VMXON operand and the return address
        self._fill_host_state(vmcs, cpu, percpu)

        ept = build_identity_ept(self.memory, frames, self.memory.regions, layout.holes(),
                                 layout.zero_page, mmio=(TPM_CRB_MMIO,))
        vmcs.write(F.EPT_POINTER, ept.eptp)
        self._write_io_bitmaps(percpu)
        self._fill_controls(vmcs, percpu)

        self.layout, self.image, self.ept, self._frames = layout, image, ept, frames
        self._guest_mem = GuestMemory(self.memory, [("monitor memory", layout.hv_start, layout.hv_size),
                                                    ("the EPC", layout.epc_start, layout.epc_size)])
        if self.iommu is not None:
            self.dma_domain = build_dma_domain(self.memory, frames, self.memory.regions,
                                               layout.holes())
            self.iommu.enable(self.dma_domain)
            self.iommu.listeners.append(self._on_dma_fault)
        self.vmcs[cpu_id] = vmcs
        self._cpus[cpu_id] = cpu
        self.enclaves = EnclaveManager(self.memory, layout.epc_start, layout.epc_size,
                                       self._guest_mem, lambda: cpu, self.log)
        self.runner = EnclaveRunner(self.memory, frames, self.enclaves, self.log)
        self.enclaves.initialized_hooks.append(self.runner.build)
        self.enclaves.destroyed_hooks.append(self.runner.forget)
        self.enclaves.initialized_hooks.insert(0, self._measure_enclave)   # before it can run
        self.anchor_keys = anchor
        # The root of every enclave key (EGETKEY, EREPORT): the TPM-sealed root secret.
        # Without it (no TPM, or the unseal was refused) a fresh one per launch: REPORT keys
        # work within the launch, SEAL keys never equal those of the genuine boot chain.
        root = anchor.root_secret if anchor is not None else None
        self.key_leaves = KeyLeaves(self.runner, self.enclaves.epcm,
                                    PlatformKeys(root or secrets.token_bytes(ROOT_SECRET_SIZE)))
        self.cmrm, self.cmrm_done = [], False
        self.enabled = True
        self.launches += 1
        self.log(f"HyperEnclave monitor v{image.version} launched on CPU {cpu_id}: monitor memory "
                 f"[{layout.hv_start:#x}-{layout.hv_end - 1:#x}], EPC [{layout.epc_start:#x}-"
                 f"{layout.epc_start + layout.epc_size - 1:#x}], root EPT {ept.table_count} tables "
                 f"(EPTP {ept.eptp:#x}), zero page {layout.zero_page:#x}")
        self._vm_launch(cpu, vmcs, ept.eptp)

    # ------------------------------------------------------------------ the TPM anchor
    def _anchor_in_tpm(self) -> AnchorKeys | None:
        """Root secret, attestation key in PCR 13, AK (tpm_anchor.py). A TPM that does not
        answer, or an AK that cannot be enrolled, refuses the launch: the host goes on natively
        and is told why."""
        if self.tpm is None:
            self.log("no TPM: no sealed root secret, attestation key or quotes")
            return None
        try:
            return self.tpm.launch(self.memory, self.log)
        except ANCHOR_ERRORS as err:
            raise LaunchError(errno.EIO, f"TPM anchor failed: {err}") from None

    def _measure_enclave(self, enclave: Enclave) -> None:
        """EINIT hook: the enclave's identity into PCR 14 before it can be entered; if that
        fails, EINIT does not complete (#GP) and the enclave stays uninitialized."""
        if self.tpm is None:
            return
        identity = EnclaveIdentity.of(enclave.secs)
        try:
            self.tpm.measure_enclave(self.memory, identity)
        except ANCHOR_ERRORS as err:
            enclave.initialized = False
            enclave.secs.attributes.flags &= ~AttributeFlags.INIT
            self.memory.write(enclave.secs_pa, enclave.secs.pack())
            raise SgxFault.gp(f"enclave {enclave.secs_pa:#x} could not be measured into "
                              f"PCR 14: {err}") from None
        self.log(f"enclave {enclave.secs_pa:#x} measured into PCR 14: MRENCLAVE "
                 f"{identity.mr_enclave.hex()[:16]}... ISVPRODID {identity.isv_prod_id} "
                 f"ISVSVN {identity.isv_svn}")

    def mediate_tpm_command(self, command: bytes) -> bytes | None:
        """The CRB's filter: while the monitor runs, a host command that would touch its
        PCRs or handles gets an error response instead of reaching the TPM."""
        if not self.enabled or self.tpm is None:
            return None
        return self.tpm.mediate(command, self.log)

    def _check_image(self, cpu: VCpu, base: int, cpu_id: int, region: int
                     ) -> tuple[MonitorImage, Layout]:
        """The driver's placement and header fields, checked before anything is trusted."""
        if base % HE_HV_ALIGN or not self.memory.is_ram(base, 0x1000):
            raise LaunchError(errno.EINVAL, f"monitor memory start {base:#x} is not 2 MiB-aligned RAM")
        try:
            head = MonitorImage.parse(self.memory.read(base, 0x100))
            if head.image_size > MAX_IMAGE or not self.memory.is_ram(base, head.image_size):
                raise MonitorImageError(f"monitor image size {head.image_size:#x} is out of range")
            image = MonitorImage.parse(self.memory.read(base, head.image_size), head.image_size)
        except MonitorImageError as err:
            raise LaunchError(errno.ENOEXEC, str(err)) from None
        if image.code_digest != code_digest():
            raise LaunchError(errno.ENOEXEC, f"the image names monitor code "
                              f"{image.code_digest.hex()[:16]}..., this CPU runs "
                              f"{code_digest().hex()[:16]}... (rebuild the image)")
        if image.hv_phys != base:
            raise LaunchError(errno.EINVAL, f"header says monitor memory starts at "
                              f"{image.hv_phys:#x}, but the image is at {base:#x}")
        if not 1 <= image.online_cpus <= image.max_cpus <= MAX_CPUS or cpu_id >= image.online_cpus:
            raise LaunchError(errno.EINVAL, f"CPU {cpu_id} with {image.online_cpus} online / "
                              f"{image.max_cpus} max CPUs")
        if cpu_id != cpu.index:
            raise LaunchError(errno.EINVAL, f"entry called with CPU id {cpu_id} on CPU {cpu.index}")
        layout = Layout(base, image.hv_size, image.epc_phys, image.epc_size, image.image_size,
                        image.percpu_phys, image.percpu_size, image.max_cpus)
        need = image.percpu_offset + image.max_cpus * image.percpu_size + image.heap_size
        if layout.hv_size % HE_HV_ALIGN or layout.hv_size < need:
            raise LaunchError(errno.EINVAL, f"monitor memory size {layout.hv_size:#x} is not a "
                              f"2 MiB multiple of at least {need:#x}")
        if image.percpu_phys != base + image.percpu_offset:
            raise LaunchError(errno.EINVAL, f"per-CPU areas at {image.percpu_phys:#x}, expected "
                              f"{base + image.percpu_offset:#x}")
        if layout.epc_size <= 0 or layout.epc_start % 0x1000 or layout.epc_size % 0x1000:
            raise LaunchError(errno.EINVAL, f"EPC [{layout.epc_start:#x}+{layout.epc_size:#x}] "
                              "is empty or not page-aligned")
        for name, start, size in (("monitor memory", base, layout.hv_size),
                                  ("EPC", layout.epc_start, layout.epc_size)):
            if not self.memory.is_ram(start, size):
                raise LaunchError(errno.EINVAL, f"{name} [{start:#x}+{size:#x}] is not RAM")
        if layout.epc_start < layout.hv_end and base < layout.epc_start + layout.epc_size:
            raise LaunchError(errno.EINVAL, "EPC overlaps monitor memory")
        if region != layout.percpu(cpu_id).vmxon_region:
            raise LaunchError(errno.EINVAL, f"VMXON region {region:#x} is not CPU {cpu_id}'s "
                              f"({layout.percpu(cpu_id).vmxon_region:#x})")
        return image, layout

    def _fill_host_state(self, vmcs: Vmcs, cpu: VCpu, percpu: PerCpuArea) -> None:
        """Where a VM exit would land on hardware: the monitor's own stack and exit handler."""
        vmcs.write(F.HOST_CR0, cpu.reg("cr0"))
        vmcs.write(F.HOST_CR3, 0)                   # the monitor runs here, not on x86 code
        vmcs.write(F.HOST_CR4, cpu.reg("cr4") | CR4_VMXE)
        vmcs.write(F.HOST_RSP, percpu.stack_top)
        vmcs.write(F.HOST_RIP, percpu.base)         # stands for the exit handler entry
        vmcs.write(F.HOST_IA32_EFER, cpu.msr(0xC0000080))

    def _fill_controls(self, vmcs: Vmcs, percpu: PerCpuArea) -> None:
        """HyperEnclave's host VMCS: EPT + unrestricted guest, no interrupt or exception
        exiting, I/O bitmaps for the platform reset/power ports, HLT exiting."""
        vmcs.write(F.PIN_BASED_VM_EXEC_CONTROL, V.PIN_BASED_NMI_EXITING)
        vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL,
                   V.CPU_BASED_HLT_EXITING | V.CPU_BASED_USE_IO_BITMAPS
                   | V.CPU_BASED_USE_MSR_BITMAPS | V.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS)
        vmcs.write(F.SECONDARY_VM_EXEC_CONTROL,
                   V.SECONDARY_EXEC_ENABLE_EPT | V.SECONDARY_EXEC_UNRESTRICTED_GUEST
                   | V.SECONDARY_EXEC_ENABLE_RDTSCP | V.SECONDARY_EXEC_ENABLE_INVPCID)
        vmcs.write(F.VM_EXIT_CONTROLS, V.VM_EXIT_HOST_ADDR_SPACE_SIZE | V.VM_EXIT_SAVE_IA32_EFER
                   | V.VM_EXIT_LOAD_IA32_EFER | V.VM_EXIT_SAVE_IA32_PAT | V.VM_EXIT_LOAD_IA32_PAT)
        vmcs.write(F.VM_ENTRY_CONTROLS, V.VM_ENTRY_IA32E_MODE | V.VM_ENTRY_LOAD_IA32_EFER
                   | V.VM_ENTRY_LOAD_IA32_PAT)
        vmcs.write(F.EXCEPTION_BITMAP, 0)
        vmcs.write(F.IO_BITMAP_A, percpu.io_bitmap_a)
        vmcs.write(F.IO_BITMAP_B, percpu.io_bitmap_b)
        vmcs.write(F.MSR_BITMAP, percpu.msr_bitmap)
        vmcs.write(F.CR4_GUEST_HOST_MASK, CR4_VMXE)
        vmcs.write(F.CR4_READ_SHADOW, vmcs.read(F.GUEST_CR4) & ~CR4_VMXE)

    def _write_io_bitmaps(self, percpu: PerCpuArea) -> None:
        """Bitmap A covers ports 0-0x7FFF, B 0x8000-0xFFFF; a set bit makes IN/OUT exit."""
        bitmaps = {percpu.io_bitmap_a: bytearray(0x1000), percpu.io_bitmap_b: bytearray(0x1000)}
        for port in IO_EXIT_PORTS:
            page = percpu.io_bitmap_a if port < 0x8000 else percpu.io_bitmap_b
            bitmaps[page][(port & 0x7FFF) >> 3] |= 1 << (port & 7)
        for addr, data in bitmaps.items():
            self.memory.write(addr, bytes(data))
        self.io_exit_ports = frozenset(self._read_io_bitmaps(percpu))

    def _read_io_bitmaps(self, percpu: PerCpuArea) -> list[int]:
        ports = []
        for page, first in ((percpu.io_bitmap_a, 0), (percpu.io_bitmap_b, 0x8000)):
            data = self.memory.read(page, 0x1000)
            ports += [first + i * 8 + bit for i, byte in enumerate(data) if byte
                      for bit in range(8) if byte >> bit & 1]
        return ports

    def _vm_launch(self, cpu: VCpu, vmcs: Vmcs, eptp: int) -> None:
        """VMLAUNCH: the host continues from the VMCS guest state, translated by the EPT."""
        self._ept_stage = EptTlb(self.ept.walker, eptp, cpu.flush_tlb)
        cpu.second_stage = self._ept_stage
        cpu.intercept = self
        vmcs.load_guest_state(cpu)
        cpu.set_reg("rax", 0)
        vmcs.launch_state = "launched"
        self._ept_stage.invept()

    # ------------------------------------------------------------------ teardown
    def _vmxoff(self, cpu: VCpu) -> None:
        """Leave VMX operation: the host runs natively again, monitor memory is scrubbed."""
        layout = self.layout
        assert layout is not None
        if self.iommu is not None:
            self.iommu.disable()
            if self._on_dma_fault in self.iommu.listeners:
                self.iommu.listeners.remove(self._on_dma_fault)
        cpu.intercept = None
        cpu.second_stage = IdentityStage(cpu.memory)
        cpu.vmx_operation = False
        cpu.set_reg("cr4", cpu.reg("cr4") & ~CR4_VMXE)
        cpu.flush_tlb()
        self.vmcs.clear()
        self.ept = self.dma_domain = self._ept_stage = self._frames = self.enclaves = None
        self.runner = self.key_leaves = self.anchor_keys = None
        self.enabled = False
        self.scrub()
        self.log(f"monitor disabled on CPU {cpu.index}; monitor memory and EPC scrubbed")

    def scrub(self) -> None:
        """Zero monitor memory and the EPC, so no secret outlives the monitor."""
        if self.layout is not None:
            for start, size in self.layout.holes():
                self.memory.zero(start, size)

    # ------------------------------------------------------------------ VM exits (Intercept)
    def _exit(self, cpu: VCpu, reason: ExitReason, rip: int, qualification: int = 0,
              length: int = 0) -> Vmcs:
        self.exit_counts[reason] += 1
        vmcs = self.vmcs[cpu.index]
        vmcs.record_exit(reason, qualification, length, rip)
        for listener in self.exit_listeners:
            listener(cpu, reason)
        return vmcs

    def on_cpuid(self, cpu: VCpu, leaf: int, subleaf: int) -> tuple[int, int, int, int] | None:
        self._exit(cpu, ExitReason.CPUID, cpu.rip, length=2)
        if leaf == CPUID_HV_LEAF:
            b, c, d = (int.from_bytes(HV_SIGNATURE[i:i + 4], "little") for i in (0, 4, 8))
            return CPUID_HV_LEAF, b, c, d
        if leaf == 1:
            eax, ebx, ecx, edx = _native_cpuid(1)
            return eax, ebx, (ecx & ~CPUID1_ECX_VMX) | CPUID1_ECX_HYPERVISOR, edx
        return None

    def on_io(self, cpu: VCpu, port: int, size: int, is_in: bool, value: int) -> int:
        self._exit(cpu, ExitReason.IO_INSTRUCTION, cpu.rip,
                   V.io_qualification(port, size, is_in, string=False, rep=False), length=1)
        if is_in:
            return cpu.io.port_read(port, size)
        cpu.io.port_write(port, size, value)
        if cpu.io.stop_requested:
            self.log(f"host asked for {cpu.io.stop_requested} (port {port:#x}); scrubbing "
                     "monitor memory and EPC first")
            self.scrub()
        return 0

    def on_triple_fault(self, cpu: VCpu, check: MachineCheck) -> None:
        self._exit(cpu, ExitReason.TRIPLE_FAULT, cpu.rip)
        self.log(f"host triple fault ({check.reason}); scrubbing and resetting the platform",
                 logging.ERROR)
        self.scrub()
        raise check

    def on_event(self, cpu: VCpu, event: GuestEvent) -> bool:
        kind = event.kind
        if self.runner is not None and cpu.index in self.runner.inside:
            return self._on_enclave_event(cpu, event)
        if kind is EventKind.ENCLU and cpu.cpl == 3 and self.runner is not None:
            leaf = cpu.reg("rax")
            if leaf in (ENCLU_EENTER, ENCLU_ERESUME):
                enter = self.runner.eenter if leaf == ENCLU_EENTER else self.runner.eresume
                self._sgx_leaf(cpu, event.rip, lambda: enter(cpu, event.rip, 3, False))
                return True
            return False                  # other leaves outside an enclave: #UD
        if kind is EventKind.VMCALL:
            self._on_vmcall(cpu, event.rip)
        elif kind is EventKind.SECOND_STAGE_FAULT:
            self._on_ept_fault(cpu, event)
        elif kind is EventKind.HLT:
            self._exit(cpu, ExitReason.HLT, event.rip, length=1)
            cpu.handle_natively(event)
        elif kind is EventKind.VMXON:
            self._exit(cpu, ExitReason.VMXON, event.rip, length=len(event.instruction))
            self.log(f"host executed VMXON at {event.rip:#x}; no nested VMX: #UD")
            self._inject(cpu, UD, event.rip)
        else:
            return False     # exceptions, interrupts, SYSCALL: not intercepted for the host
        return True

    def on_vmcall_fast(self, cpu: VCpu, rip: int, regs: tuple[int, int, int, int]) -> bool:
        """A VMCALL exit handled inside the CPU loop when its result is only RAX (most
        supervisor hypercalls): the same exit, counters and checks, without ending the slice."""
        if not self.hypercalls.is_fast(regs[0], regs[3]):
            return False
        self._on_vmcall(cpu, rip, regs)
        return True

    def on_enclu_fast(self, cpu: VCpu, rip: int, regs: tuple[int, int, int, int]) -> bool:
        """EENTER/ERESUME by the app and EEXIT by the enclave inside the CPU loop: the same
        switch as `on_event` makes, without ending the slice (an ECALL is then two traps, not
        two slice restarts, and a resumed enclave runs on in the slice instead of meeting the
        next pending interrupt at once). A leaf that faults, a resume that must map a shared
        page again, and every other leaf end the slice as before."""
        runner, leaf = self.runner, regs[0]
        if runner is None:
            return False
        if cpu.index in runner.inside:
            if leaf != ENCLU_EEXIT:
                return False
            self._exit(cpu, ExitReason.EXCEPTION_NMI, rip, length=3)
            runner.eexit(cpu)
            return True
        if leaf not in (ENCLU_EENTER, ENCLU_ERESUME) or regs[3] != 3:
            return False
        try:
            if leaf == ENCLU_ERESUME:
                return runner.eresume(cpu, rip, 3, False, map_shared=False)
            runner.eenter(cpu, rip, 3, False)
        except SgxFault:
            return False              # nothing changed yet: on_event injects the fault
        return True

    def _on_enclave_event(self, cpu: VCpu, event: GuestEvent) -> bool:
        """Inside an enclave everything exits (exception bitmap all ones, interrupt exiting):
        EEXIT leaves; EREPORT/EGETKEY (and their hypercalls) run and continue, or fault; any
        other event, and their faults, are an AEX, then the event goes to the host at the AEP."""
        assert self.runner is not None
        kind = event.kind
        if kind in (EventKind.ENCLU, EventKind.VMCALL) and self.key_leaves is not None and \
                self.key_leaves.handles(kind is EventKind.ENCLU, cpu.reg("rax")):
            fault = self._key_leaf(cpu, event)
            if fault is None:
                return True
            event = GuestEvent(EventKind.EXCEPTION, event.rip, vector=fault.vector,
                               error_code=fault.error_code, address=fault.address)
            kind = event.kind
        if kind is EventKind.ENCLU and cpu.reg("rax") == ENCLU_EEXIT:
            self._exit(cpu, ExitReason.EXCEPTION_NMI, event.rip, length=3)
            self.runner.eexit(cpu)
            return True
        if kind is EventKind.VMCALL and cpu.reg("rax") == HypercallCode.ENCLAVE_EXIT:
            self._on_vmcall(cpu, event.rip)
            return True
        vector, error_code, address = event.vector, event.error_code, event.address
        external = kind is EventKind.INTERRUPT
        if kind is EventKind.ENCLU:
            vector, error_code = GP, 0           # EENTER/ERESUME inside, or a leaf not offered
        elif kind in (EventKind.SYSCALL, EventKind.VMCALL, EventKind.VMXON):
            vector, error_code = UD, None        # no SYSCALL (EFER.SCE clear)
        elif kind is EventKind.SECOND_STAGE_FAULT:
            vector, error_code = PF, 0           # outside the enclave's EPT: a #PF for the host
        elif kind is EventKind.HLT:
            vector, error_code = GP, 0
        reason = ExitReason.EXTERNAL_INTERRUPT if external else ExitReason.EXCEPTION_NMI
        self._exit(cpu, reason, event.rip)
        # the vCPU reports SYSCALL with the RIP of the next instruction
        rip = event.rip - 2 if kind is EventKind.SYSCALL else event.rip
        thread = self.runner.aex(cpu, vector or 0, rip, address, error_code)
        self.log(f"AEX from enclave {thread.enclave.secs_pa:#x} (TCS {thread.tcs_la:#x}) at "
                 f"{rip:#x}: vector {vector:#x}" + (" (interrupt)" if external else ""))
        self.runner.deliver_to_host(cpu, vector or 0, error_code, address, external,
                                    thread.shared_fetch)
        return True

    def _key_leaf(self, cpu: VCpu, event: GuestEvent) -> SgxFault | None:
        """EREPORT/EGETKEY/VerifyReport inside an enclave; their #GP/#PF is returned for an AEX."""
        assert self.key_leaves is not None
        enclu = event.kind is EventKind.ENCLU
        self._exit(cpu, ExitReason.EXCEPTION_NMI if enclu else ExitReason.VMCALL, event.rip,
                   length=3)
        try:
            self.key_leaves.run(cpu, cpu.reg("rax"))
        except SgxFault as fault:
            self.log(f"{'ENCLU' if enclu else 'hypercall'} leaf {cpu.reg('rax'):#x} at "
                     f"{event.rip:#x} in an enclave: {fault}")
            return fault
        cpu.rip = event.rip + 3
        return None

    def _sgx_leaf(self, cpu: VCpu, rip: int, body: Callable[[], None]) -> None:
        """Run an ENCLU leaf for the app; an SGX fault becomes that fault in the app."""
        try:
            body()
        except SgxFault as fault:
            self._inject_sgx_fault(cpu, rip, f"ENCLU at {rip:#x}", fault)

    def _inject_sgx_fault(self, cpu: VCpu, rip: int, what: str, fault: SgxFault) -> None:
        """The #GP/#PF an SGX leaf raises, delivered to the caller at `rip`."""
        self.log(f"{what}: {fault}")
        if fault.vector == PF:
            cpu.set_reg("cr2", fault.address or 0)
        self._inject(cpu, fault.vector, rip, fault.error_code)

    def _hc_shared_memory_add(self, args: HypercallArgs) -> int:
        assert self.runner is not None
        return self.runner.hc_shared_memory_add(args, self._cpu_for(args))

    def _hc_eenter(self, args: HypercallArgs) -> None:
        cpu = self._cpu_for(args)
        assert self.runner is not None
        self.runner.eenter(cpu, args.rip, 3, True)

    def _hc_eresume(self, args: HypercallArgs) -> None:
        cpu = self._cpu_for(args)
        assert self.runner is not None
        self.runner.eresume(cpu, args.rip, 3, True)

    def _hc_enclave_quote(self, args: HypercallArgs) -> int:
        assert self.key_leaves is not None and self._guest_mem is not None
        return enclave_quote(self._cpu_for(args), args, self._guest_mem, self.key_leaves.keys,
                             self.anchor_keys, self.tpm, self.log)

    def _hc_eexit(self, args: HypercallArgs) -> None:
        cpu = self._cpu_for(args)
        assert self.runner is not None
        if cpu.index not in self.runner.inside:
            raise InvalidOpcode("EnclaveExit outside an enclave")
        self.runner.eexit(cpu)

    def _on_vmcall(self, cpu: VCpu, rip: int,
                   regs: tuple[int, int, int, int] | None = None) -> None:
        self._exit(cpu, ExitReason.VMCALL, rip, length=3)
        args = HypercallArgs(*(regs or cpu.hypercall_registers()), rip=rip)
        try:
            result = self.hypercalls.call(args)
        except InvalidOpcode as err:
            self.log(f"hypercall at {rip:#x}: {err}: #UD")
            self._inject(cpu, UD, rip)
            return
        except HypercallError as err:
            self.log(f"hypercall {code_name(args.code)} failed: {err} "
                     f"(-{errno.errorcode.get(err.errno, err.errno)})")
            result = -err.errno
        except SgxFault as fault:
            self._inject_sgx_fault(cpu, rip,
                                   f"hypercall {code_name(args.code)} at {rip:#x}", fault)
            return
        if result is not None:
            cpu.complete_hypercall(result, rip + 3)

    def _on_ept_fault(self, cpu: VCpu, event: GuestEvent) -> None:
        fault = event.fault
        linear = event.address if getattr(fault, "linear", None) is not None else None
        if isinstance(fault, EptMisconfig):
            vmcs = self._exit(cpu, ExitReason.EPT_MISCONFIG, event.rip)
            vmcs.write(F.GUEST_PHYSICAL_ADDRESS, fault.gpa)
            self.log(f"EPT misconfiguration at rip {event.rip:#x}: {fault}", logging.ERROR)
        elif isinstance(fault, EptViolation):
            qual = V.ept_violation_qualification(int(fault.access), int(fault.perms_found),
                                                 linear_valid=linear is not None,
                                                 translated_access=bool(getattr(fault, "translated", True)))
            vmcs = self._exit(cpu, ExitReason.EPT_VIOLATION, event.rip, qual)
            gpa = fault.gpa | (linear & 0xFFF if linear is not None and fault.translated else 0)
            vmcs.write(F.GUEST_PHYSICAL_ADDRESS, gpa)
            vmcs.write(F.GUEST_LINEAR_ADDRESS, linear or 0)
            record = EptViolationRecord(event.rip, cpu.cpl, gpa, linear, qual,
                                        fault.access.name.lower())
            self.violations.append(record)
            where = f", linear {linear:#x}" if linear is not None else ""
            self.log(f"EPT violation: {record.access} of GPA {gpa:#x}{where} at rip "
                     f"{event.rip:#x} (CPL {record.cpl}), qualification {qual:#x} "
                     f"[{V.describe_ept_violation_qualification(qual)}]; injecting #GP(0)")
        else:
            raise TypeError(f"unexpected second-stage fault {fault!r}")
        self._inject(cpu, GP, event.rip, 0)

    def _inject(self, cpu: VCpu, vector: int, rip: int, error_code: int | None = None) -> None:
        """VM entry with event injection: the fault is delivered through the host's IDT."""
        vmcs = self.vmcs[cpu.index]
        vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD,
                   V.intr_info(vector, V.InterruptionType.HARDWARE_EXCEPTION, error_code is not None))
        vmcs.write(F.VM_ENTRY_EXCEPTION_ERROR_CODE, error_code or 0)
        cpu.rip = rip
        deliver(cpu, vector, rip=rip, error_code=error_code)
        vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, 0)

    def _on_dma_fault(self, fault: Exception) -> None:
        line = f"IOMMU blocked DMA: {fault}"
        self.dma_faults.append(line)
        self.log(line, logging.WARNING)

    # ------------------------------------------------------------------ hypercalls
    def _cpu_for(self, args: HypercallArgs) -> VCpu:
        return next(iter(self._cpus.values()))

    def _hc_disable(self, args: HypercallArgs) -> int:
        if args.arg0 != 1:
            raise HypercallError(errno.EINVAL, f"HC_DISABLE argument {args.arg0} (expected 1)")
        if self.enclaves is not None and self.enclaves.enclaves:
            raise HypercallError(errno.EBUSY, f"{len(self.enclaves.enclaves)} enclave(s) still "
                                 "exist; destroy them first")
        self._vmxoff(self._cpu_for(args))
        return 0

    def _hc_reset_stats(self, args: HypercallArgs) -> int:
        self.exit_counts.clear()
        self.hypercalls.reset()
        return 0

    def _hc_init_cmrm(self, args: HypercallArgs) -> int:
        count = args.arg1
        if not 0 < count <= MAX_CMRM_REGIONS:
            raise HypercallError(errno.EINVAL, f"INIT_CMRM with {count} regions "
                                 f"(1-{MAX_CMRM_REGIONS})")
        assert self._guest_mem is not None and self.layout is not None
        raw = self._guest_mem.read(self._cpu_for(args), args.arg0, 16 * count, "INIT_CMRM regions")
        regions = []
        for i in range(count):
            start = int.from_bytes(raw[16 * i:16 * i + 8], "little")
            size = int.from_bytes(raw[16 * i + 8:16 * i + 16], "little")
            if start % 0x1000 or size % 0x1000 or not size:
                raise HypercallError(errno.EINVAL, f"CMRM region {i} [{start:#x}+{size:#x}] is "
                                     "empty or not page-aligned")
            self._guest_mem.check_gpa(start, size, f"CMRM region {i}")
            regions.append((start, size))
        if self.cmrm_done:
            raise HypercallError(errno.EBUSY, "CMRM initialisation is already done")
        self.cmrm += regions
        return 0

    def _hc_set_init_cmrm_done(self, args: HypercallArgs) -> int:
        if not self.cmrm:
            raise HypercallError(errno.EINVAL, "SET_INIT_CMRM_DONE before any INIT_CMRM")
        self.cmrm_done = True
        total = sum(size for _, size in self.cmrm)
        self.log(f"CMRM: {len(self.cmrm)} normal-memory regions, {total >> 20} MiB")
        return 0
