"""An enclave's translations survive EEXIT/EENTER (the refills after a switch are lookups), and
are never used after a change of what they were made from: the monitor's edits of the
enclave's tables (shared memory remove and invalidate, each with its INVEPT), the enclave's
destruction, a TLB flush while the enclave runs, other CR0.WP/EFER.NXE. The app's own
translations survive an enclave visit too, as a VPID-tagged TLB's would, but only until the
host kernel next runs: only ring 0 can edit page tables and INVLPG or write CR3, and Unicorn does
not report those, so every entry to the kernel drops them."""

from __future__ import annotations

import struct
from types import SimpleNamespace

from hyperenclave.platform.cpu import MSR_EFER, VCpu
from hyperenclave.platform.paging import ACCESS_READ, ACCESS_WRITE, ADDR_MASK, EFER_NXE
from hyperenclave.vmm.hypercall import HypercallArgs
from hyperenclave.vmm.monitor import Monitor
from hyperenclave.vmm.shared_mem import SharedMemoryCalls
from tests.support.baremetal import KCS, KDS, PML4
from tests.unit.test_enclave_execution import MARSHAL, SHARED, SHARED_RANGE, run
from tests.unit.test_enclave_lifecycle import BASE, SECS_EPC, key, monitor_image  # noqa: F401

CODE = BASE + 0x1000


def ran_with_shared_buffer(monitor_image: bytes, key) -> tuple[Monitor, VCpu]:  # noqa: F811
    """The enclave ran once and wrote the app's buffer through its shared mapping."""
    def before(mem) -> None:
        mem.write(SHARED_RANGE, struct.pack("<QQQ", SECS_EPC, SHARED, SHARED + 0x1000))
        mem.write(SHARED, struct.pack("<Q", 35))
    out, setup, mon = run(monitor_image, key, middle=MARSHAL,
                          after_init=((0x101, SHARED_RANGE, 0),), before=before)
    assert setup[-1] == 0 and out[1] == 0x40 + 0x1111, mon.log_lines
    return mon, mon._cpus[0]


def enter(mon: Monitor, cpu: VCpu) -> None:
    """EENTER on the enclave's TCS from where the app stopped."""
    cpu.write_registers(rbx=BASE, rcx=cpu.rip)
    mon.runner.eenter(cpu, cpu.rip, 3, False)


def fill(cpu: VCpu, vaddr: int, access: int = ACCESS_READ) -> int | None:
    """What a TLB fill for `vaddr` gives now: the host page, or None for a fault."""
    entry = SimpleNamespace(paddr=None, perms=0)
    return entry.paddr if cpu._tlb_fill(cpu.uc, vaddr, access, entry, None) else None


def shared_call(mon: Monitor, cpu: VCpu, name: str) -> int:
    args = HypercallArgs(0x102, SHARED_RANGE, 0, 0)
    return getattr(SharedMemoryCalls(mon.runner), name)(args, cpu)


def test_the_enclave_translations_outlive_its_exit_and_serve_the_next_entry(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    space = mon.runner.spaces[SECS_EPC]
    assert cpu.translation_cache is cpu.user_translations, "back in the app: the app's own"
    assert (SHARED >> 12, ACCESS_READ) in space.translations
    enter(mon, cpu)
    assert cpu.translation_cache is space.translations
    walks = cpu.second_stage.walks
    assert fill(cpu, SHARED) == SHARED
    assert fill(cpu, CODE) is not None
    assert cpu.second_stage.walks == walks, "served without walking"


def test_shared_memory_remove_drops_them(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    assert shared_call(mon, cpu, "hc_remove") == 0
    assert not mon.runner.spaces[SECS_EPC].translations
    enter(mon, cpu)
    assert fill(cpu, SHARED, ACCESS_WRITE) is None, "the removed page faults"
    assert fill(cpu, CODE) is not None


def test_shared_memory_invalidation_drops_them(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    assert shared_call(mon, cpu, "hc_invalid_start") == 0
    enter(mon, cpu)
    assert fill(cpu, SHARED, ACCESS_READ) is None


def test_an_invept_for_the_enclave_drops_them(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    space = mon.runner.spaces[SECS_EPC]
    space.unmap_shared_page(SHARED)            # a monitor edit of the tables ...
    mon.runner.invept(SECS_EPC)                # ... and the INVEPT that must follow it
    enter(mon, cpu)
    assert fill(cpu, SHARED, ACCESS_WRITE) is None


def test_destroying_the_enclave_drops_them(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    space = mon.runner.spaces[SECS_EPC]
    assert space.translations
    mon.enclaves.destroy_all()
    assert not space.translations and SECS_EPC not in mon.runner.spaces


def test_a_tlb_flush_inside_the_enclave_drops_them(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    enter(mon, cpu)
    assert fill(cpu, SHARED, ACCESS_WRITE) == SHARED
    cpu.flush_tlb()
    assert not cpu.translation_cache, "a flush while attached empties the cache as well"


def test_other_paging_controls_at_entry_drop_them(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    space = mon.runner.spaces[SECS_EPC]
    cpu.set_msr(MSR_EFER, cpu.msr(MSR_EFER) ^ EFER_NXE)
    enter(mon, cpu)
    assert cpu.translation_cache is space.translations and (SHARED >> 12, ACCESS_READ) \
        not in space.translations, "walks made under the other EFER.NXE are not reused"


def leave(mon: Monitor, cpu: VCpu) -> None:
    """EEXIT back to where the app entered."""
    cpu.write_registers(rbx=cpu.rip)
    mon.runner.eexit(cpu)


def remap_shared_pde(to: int) -> None:
    """The host's 2 MiB PDE over SHARED now points at `to` (an edit of its page table)."""
    pde = PML4 + 0x2000 + 8 * (SHARED >> 21)
    run.memory.write_u64(pde, (run.memory.read_u64(pde) & ~ADDR_MASK) | to)


def test_the_app_keeps_its_translations_across_the_enclave_until_its_kernel_runs(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    enter(mon, cpu)
    leave(mon, cpu)
    assert cpu.translation_cache is cpu.user_translations, "back in the app, its cache is on"
    assert fill(cpu, SHARED) == SHARED
    enter(mon, cpu)
    assert cpu.translation_cache is mon.runner.spaces[SECS_EPC].translations
    leave(mon, cpu)
    # An edit nobody published (no INVLPG: the app cannot run one): the app may use what its
    # TLB held, as on hardware ...
    remap_shared_pde(0x800000)
    assert fill(cpu, SHARED) == SHARED, "the app's translation outlived the enclave visit"
    # ... and once its kernel runs (which is where an edit and its INVLPG come from), the next
    # fill walks the tables as they are now.
    cpu.load_segments(0, KCS, KDS)
    assert cpu.translation_cache is None and not cpu.user_translations
    assert fill(cpu, SHARED) == 0x800000


def test_the_host_sees_its_own_page_table_edit_after_the_enclave(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    enter(mon, cpu)
    assert fill(cpu, SHARED) == SHARED
    leave(mon, cpu)
    cpu.load_segments(0, KCS, KDS)         # the host kernel runs and remaps SHARED
    remap_shared_pde(0x800000)
    assert fill(cpu, SHARED) == 0x800000


def test_a_tlb_flush_drops_the_apps_translations(monitor_image, key) -> None:  # noqa: F811
    mon, cpu = ran_with_shared_buffer(monitor_image, key)
    enter(mon, cpu)
    leave(mon, cpu)
    assert fill(cpu, SHARED) == SHARED and cpu.user_translations
    cpu.flush_tlb()                        # an INVEPT of the host's EPT, say
    assert not cpu.user_translations
