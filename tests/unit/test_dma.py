"""The DMA engine and the IOMMU: bus-master copies in pass-through and through a VT-d domain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyperenclave.platform import iommu as iommu_mod
from hyperenclave.platform.devices import dma as D
from hyperenclave.platform.devices.bus import IoBus
from hyperenclave.platform.devices.dma import DmaEngine
from hyperenclave.platform.iommu import FaultRecord, Iommu, IommuFault
from hyperenclave.platform.memory import KiB, MiB, FrameAllocator
from hyperenclave.vmm.ept import Access, EptPerm
from hyperenclave.vmm.iommu_tables import DmaFaultReason, build_dma_domain
from tests.support.baremetal import KERNEL, BareMetal

MONITOR = (32 * MiB, 16 * MiB)     # page tables live here; absent from the domain
EPC = (48 * MiB, 16 * MiB)
HEADER = Path(__file__).parents[2] / "hyperenclave/guest/include/hyperenclave.h"


@pytest.fixture
def domain(mem):
    frames = FrameAllocator(mem, MONITOR[0], 8 * MiB)
    return build_dma_domain(mem, frames, mem.regions, holes=[MONITOR, EPC])


@pytest.fixture
def iommu():
    return Iommu()


@pytest.fixture
def engine(mem, iommu):
    return DmaEngine(mem, iommu)


def outl(engine: DmaEngine, reg: int, value: int) -> None:
    engine.port_write(D.DMA_BASE + reg, 4, value)


def inl(engine: DmaEngine, reg: int) -> int:
    return engine.port_read(D.DMA_BASE + reg, 4)


def copy(engine: DmaEngine, src: int, dst: int, length: int) -> int:
    """What the guest driver does: program, start, poll STATUS."""
    outl(engine, D.DMA_SRC_LO, src & 0xFFFF_FFFF)
    outl(engine, D.DMA_SRC_HI, src >> 32)
    outl(engine, D.DMA_DST_LO, dst & 0xFFFF_FFFF)
    outl(engine, D.DMA_DST_HI, dst >> 32)
    outl(engine, D.DMA_LEN, length)
    outl(engine, D.DMA_CMD, D.DMA_CMD_COPY)
    return inl(engine, D.DMA_STATUS)


def fault_of(engine: DmaEngine) -> tuple[int, int]:
    return inl(engine, D.DMA_FAULT_LO) | inl(engine, D.DMA_FAULT_HI) << 32, inl(engine, D.DMA_FAULT_REASON)


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


# ------------------------------------------------------------------------------ the contract

def test_constants_match_the_guest_header():
    defines = dict(re.findall(r"#define\s+(DMA_\w+)\s+(0x[0-9A-Fa-f]+|\d+)", HEADER.read_text()))
    assert defines and all(getattr(D, name) == int(value, 0) for name, value in defines.items())


def test_register_file(engine):
    bus = IoBus()
    bus.add_port_device(engine)
    assert engine.ports == range(0xD000, 0xD028)
    bus.port_write(0xD000, 4, 0x1234_5678)
    outl(engine, D.DMA_DST_HI, 0x9)
    bus.port_write(D.DMA_BASE + D.DMA_LEN, 1, 0x34)               # byte writes assemble a register
    bus.port_write(D.DMA_BASE + D.DMA_LEN + 1, 1, 0x12)
    assert inl(engine, D.DMA_SRC_LO) == 0x1234_5678
    assert inl(engine, D.DMA_DST_HI) == 0x9
    assert inl(engine, D.DMA_LEN) == 0x1234
    assert inl(engine, D.DMA_CMD) == 0
    assert inl(engine, D.DMA_STATUS) == D.DMA_STATUS_IDLE
    outl(engine, D.DMA_STATUS, 0xFF)                               # read-only
    assert inl(engine, D.DMA_STATUS) == D.DMA_STATUS_IDLE
    assert engine.port_read(D.DMA_BASE + D.DMA_FAULT_REASON + 2, 4) == 0xFFFF_0000   # past the end


# ------------------------------------------------------------------------------ pass-through

def test_copy_with_translation_off(engine, mem):
    data = pattern(3 * 4096 + 100)
    mem.write(0x100000, data)
    assert copy(engine, 0x100000, 0x200123, len(data)) == D.DMA_STATUS_DONE
    assert mem.read(0x200123, len(data)) == data
    assert (engine.transfers, engine.faults, engine.bytes_copied) == (1, 0, len(data))
    assert fault_of(engine) == (0, 0)


def test_translation_off_reaches_all_ram(engine, mem):
    """Before the monitor enables the IOMMU nothing protects monitor memory or the EPC."""
    mem.write(EPC[0], b"enclave secret")
    assert copy(engine, EPC[0], 0x1000, 14) == D.DMA_STATUS_DONE
    assert mem.read(0x1000, 14) == b"enclave secret"


def test_address_outside_ram_is_a_master_abort(engine, iommu, mem):
    assert copy(engine, 0x1000, 64 * MiB - 0x800, 0x1000) == D.DMA_STATUS_FAULT
    assert fault_of(engine) == (64 * MiB, D.DMA_FAULT_MASTER_ABORT)
    assert mem.read(64 * MiB - 0x800, 0x800) == mem.read(0x1000, 0x800)   # copied up to the end of RAM
    assert iommu.faults == []                                               # not a remapping fault


def test_length_limit(engine, mem):
    mem.write(0x100000, pattern(16))
    assert copy(engine, 0x100000, 0x300000, D.DMA_MAX_LEN + 1) == D.DMA_STATUS_FAULT
    assert fault_of(engine) == (0, D.DMA_FAULT_BAD_LENGTH)
    assert mem.read(0x300000, 16) == bytes(16)
    assert copy(engine, 0x100000, 0x300000, D.DMA_MAX_LEN) == D.DMA_STATUS_DONE
    assert mem.read(0x300000, 16) == pattern(16)


def test_empty_copy_is_done(engine):
    assert copy(engine, 0, 0, 0) == D.DMA_STATUS_DONE


# ------------------------------------------------------------------------------ the Unicorn replay

def test_repeated_cmd_write_and_status_read_run_one_copy(engine, mem):
    original = pattern(64)
    mem.write(0x100000, original)
    outl(engine, D.DMA_SRC_LO, 0x100000)
    outl(engine, D.DMA_DST_LO, 0x100010)                    # overlapping: a second run would differ
    outl(engine, D.DMA_LEN, 32)
    outl(engine, D.DMA_CMD, D.DMA_CMD_COPY)
    outl(engine, D.DMA_CMD, D.DMA_CMD_COPY)                 # the same CMD write, replayed
    assert inl(engine, D.DMA_STATUS) == D.DMA_STATUS_DONE
    assert inl(engine, D.DMA_STATUS) == D.DMA_STATUS_DONE   # replayed STATUS read: nothing latched
    assert (engine.transfers, engine.bytes_copied) == (1, 32)
    assert mem.read(0x100010, 32) == original[:32]


def test_cmd_only_latches(engine, mem):
    mem.write(0x100000, pattern(8))
    outl(engine, D.DMA_SRC_LO, 0x100000)
    outl(engine, D.DMA_DST_LO, 0x200000)
    outl(engine, D.DMA_LEN, 8)
    outl(engine, D.DMA_CMD, D.DMA_CMD_COPY)
    assert mem.read(0x200000, 8) == bytes(8) and engine.transfers == 0
    outl(engine, D.DMA_SRC_LO, 0x999000)                    # the latched request keeps its SRC
    assert inl(engine, D.DMA_STATUS) == D.DMA_STATUS_DONE
    assert mem.read(0x200000, 8) == pattern(8)


# ------------------------------------------------------------------------------ through a domain

def test_copy_through_an_identity_domain(engine, iommu, domain, mem):
    iommu.enable(domain)
    mem.write(0x100000, pattern(5000))
    assert copy(engine, 0x100000, 0x200800, 5000) == D.DMA_STATUS_DONE
    assert mem.read(0x200800, 5000) == pattern(5000)
    assert iommu.faults == []


def test_read_from_a_hole_faults(engine, iommu, domain, mem):
    iommu.enable(domain)
    mem.write(EPC[0] + 0x10, b"enclave secret")
    assert copy(engine, EPC[0] + 0x10, 0x1000, 14) == D.DMA_STATUS_FAULT
    assert fault_of(engine) == (EPC[0] + 0x10, DmaFaultReason.READ_DENIED)
    assert mem.read(0x1000, 14) == bytes(14)
    [record] = iommu.faults
    assert (record.addr, record.access, record.reason, record.source_id) == \
        (EPC[0] + 0x10, Access.READ, DmaFaultReason.READ_DENIED, D.DMA_SOURCE_ID)
    assert "READ_DENIED" in str(record)
    assert (engine.transfers, engine.faults) == (0, 1)


def test_write_to_a_hole_faults(engine, iommu, domain, mem):
    iommu.enable(domain)
    mem.write(0x100000, pattern(32))
    target = MONITOR[0] + 8 * MiB
    assert copy(engine, 0x100000, target, 32) == D.DMA_STATUS_FAULT
    assert fault_of(engine) == (target, DmaFaultReason.WRITE_DENIED)
    assert mem.read(target, 32) == bytes(32)
    assert iommu.faults[0].access == Access.WRITE


def test_page_crossing_write_faults_mid_way(engine, iommu, domain, mem):
    iommu.enable(domain)
    domain.unmap(0x302000, 0x1000)
    data = pattern(0x3000)
    mem.write(0x100000, data)
    assert copy(engine, 0x100000, 0x300800, 0x3000) == D.DMA_STATUS_FAULT
    assert fault_of(engine) == (0x302000, DmaFaultReason.WRITE_DENIED)
    assert mem.read(0x300800, 0x1800) == data[:0x1800]             # the pages before the hole
    assert mem.read(0x302000, 0x1800) == bytes(0x1800)             # nothing at or after it
    assert engine.bytes_copied == 0x1800


def test_page_crossing_read_faults_mid_way(engine, iommu, domain, mem):
    iommu.enable(domain)
    domain.unmap(0x401000, 0x1000)
    data = pattern(0x3000)
    mem.write(0x400000, data)
    assert copy(engine, 0x400000, 0x500000, 0x3000) == D.DMA_STATUS_FAULT
    assert fault_of(engine) == (0x401000, DmaFaultReason.READ_DENIED)
    assert mem.read(0x500000, 0x1000) == data[:0x1000]
    assert mem.read(0x501000, 0x2000) == bytes(0x2000)             # a read fault writes nothing more


def test_each_page_is_translated_on_its_own(engine, iommu, domain, mem):
    """Adjacent bus pages need not be adjacent in host memory."""
    domain.unmap(0x700000, 0x1000)
    domain.map(0x700000, 0x900000, 0x1000, EptPerm.RW)             # bus page 0x700000 -> host 0x900000
    iommu.enable(domain)
    mem.write(0x6FF800, b"A" * 0x800)
    mem.write(0x900000, b"B" * 0x800)
    mem.write(0x700000, b"C" * 0x800)                               # host page the bus address does not reach
    assert copy(engine, 0x6FF800, 0x100000, 0x1000) == D.DMA_STATUS_DONE
    assert mem.read(0x100000, 0x1000) == b"A" * 0x800 + b"B" * 0x800


def test_disable_returns_to_pass_through(engine, iommu, domain, mem):
    iommu.enable(domain)
    assert iommu.enabled
    assert copy(engine, EPC[0], 0x1000, 8) == D.DMA_STATUS_FAULT
    iommu.disable()
    assert not iommu.enabled
    assert copy(engine, EPC[0], 0x1000, 8) == D.DMA_STATUS_DONE


# ------------------------------------------------------------------------------ the fault log

def test_fault_log_is_bounded_and_listeners_see_every_fault(mem, domain):
    iommu = Iommu(max_faults=2)
    iommu.enable(domain)
    seen: list[FaultRecord] = []
    iommu.listeners.append(seen.append)
    engine = DmaEngine(mem, iommu)
    for i in range(3):
        assert copy(engine, EPC[0] + i * 0x1000, 0x1000, 4) == D.DMA_STATUS_FAULT
    assert [r.addr for r in seen] == [EPC[0], EPC[0] + 0x1000, EPC[0] + 0x2000]
    assert iommu.faults == seen[:2] and iommu.fault_overflows == 1
    iommu.clear_faults()
    assert iommu.faults == [] and iommu.fault_overflows == 0
    assert iommu_mod.MAX_FAULT_RECORDS == Iommu().max_faults == 256


def test_iommu_translate(domain):
    iommu = Iommu()
    assert iommu.translate(EPC[0] + 5, iommu_mod.WRITE) == EPC[0] + 5      # pass-through
    iommu.enable(domain)
    assert iommu.translate(0x1234, iommu_mod.READ) == 0x1234
    with pytest.raises(IommuFault) as exc:
        iommu.translate(EPC[0] + 5, iommu_mod.WRITE, source_id=0x18)
    assert exc.value.record == iommu.faults[0]
    assert exc.value.record.reason == DmaFaultReason.WRITE_DENIED and exc.value.record.source_id == 0x18
    with pytest.raises(ValueError):              # not a fault: a bug in the caller
        iommu.translate(0, int(Access.FETCH))
    assert len(iommu.faults) == 1


def test_iommu_access_values_are_the_ept_ones():
    assert (iommu_mod.READ, iommu_mod.WRITE) == (Access.READ, Access.WRITE)
    assert KiB * 4 == iommu_mod.PAGE_SIZE


def test_guest_code_drives_the_engine():
    """IN/OUT from real guest code on a vCPU, replays and all."""
    bm = BareMetal()
    engine = DmaEngine(bm.memory, Iommu())
    bm.bus.add_port_device(engine)
    bm.memory.write(0x500000, pattern(0x2000))
    bm.load(KERNEL, f"""
        mov ${D.DMA_BASE}, %edx
        mov $0x500000, %eax ; out %eax, (%dx)
        add ${D.DMA_DST_LO}, %edx ; mov $0x600800, %eax ; out %eax, (%dx)
        mov ${D.DMA_BASE + D.DMA_LEN}, %edx ; mov $0x2000, %eax ; out %eax, (%dx)
        mov ${D.DMA_BASE + D.DMA_CMD}, %edx ; mov ${D.DMA_CMD_COPY}, %eax ; out %eax, (%dx)
        mov ${D.DMA_BASE + D.DMA_STATUS}, %edx ; in (%dx), %eax
        out %eax, $0xe9
    1:  jmp 1b
    """)
    bm.run(KERNEL, slices=5)
    assert bm.recorder.values[:1] == [D.DMA_STATUS_DONE]
    assert bm.memory.read(0x600800, 0x2000) == pattern(0x2000)
    assert engine.transfers == 1
