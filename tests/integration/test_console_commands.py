"""The monitor console's commands on a real machine, driven like a script: held at power-on,
stepped, run to the first hypercall (the monitor has just launched), into the first enclave
entry (the default guest's /bin/hello_app), to a breakpoint and to power off. Each test checks
what one command printed against the machine itself."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hyperenclave.machine import Machine, MachineConfig
from hyperenclave.platform import paging
from hyperenclave.platform.cpu import MSR_LSTAR, VMCALL
from hyperenclave.vmm.sgx import PAGE_SIZE, Tcs
from tests.support.console import ConsoleSession

pytestmark = pytest.mark.integration

KERNEL_MAP = 0xFFFF_FFFF_8000_0000       # docs/boot-protocol.md: kernel text at this + p_paddr


@pytest.fixture(scope="module")
def session(guest_images, tmp_path_factory):
    """Run one session through the machine's life; record outputs and facts along the way."""
    tmp: Path = tmp_path_factory.mktemp("console")
    machine = Machine(MachineConfig(name="console", state_dir=tmp / "state"), guest_images)
    machine.boot()
    s = ConsoleSession(machine)
    out: dict[str, object] = {"tmp": tmp}
    run = s.run
    out["pcr0_at_boot"] = machine.pcrs()[0]
    for cmd in ("info status", "info registers", "info vmcs", "info ept", "info epc", "memmap"):
        out["poweron " + cmd] = run(cmd)
    out["rip0"] = machine.cpu.rip
    out["step"] = run("step")
    out["rip1"] = machine.cpu.rip
    out["step 3"] = run("step 3")
    out["rip4"] = machine.cpu.rip

    out["until hypercall"] = run("until hypercall")
    cpu, monitor = machine.cpu, machine.monitor
    out["hc_rip"] = cpu.rip
    out["hc_insn"] = cpu.read_virtual(cpu.rip - 3, 3)
    for cmd in ("info vmcs", "info exits", "info hypercalls", "info vms", "info ept", "info iommu",
                "info epc", "x/3i $rip", "xp/4xw 0x1000", "gva2gpa $rip", "gpa2hpa 0x1000",
                "memmap"):
        out[cmd] = run(cmd)
    layout = monitor.layout
    out["layout"], out["eptp"] = layout, monitor.ept.eptp
    out["xp guest"] = run(f"xp/2xg {layout.hv_start:#x}")
    out["xp host"] = run(f"xp -H -f 8c {layout.hv_start:#x}")
    out["gpa2hpa monitor"] = run(f"gpa2hpa {layout.hv_start:#x}")

    # reads must not touch the guest: no TLB fill, no EPT walk, no accessed bit set
    levels, _ = s.app.mem.guest_levels(cpu.reg("rsp"))
    leaf = levels[-1]
    machine.memory.write_u64(leaf.address, leaf.value & ~paging.PTE_A)   # setup: A clear
    fills, walks = cpu.stats.tlb_fills, cpu.second_stage.walks
    out["x/2gx $rsp"] = run("x/2gx $rsp")
    out["side effects"] = (cpu.stats.tlb_fills - fills, cpu.second_stage.walks - walks,
                           machine.memory.read_u64(leaf.address) & paging.PTE_A)
    machine.memory.write_u64(leaf.address, leaf.value)
    out["stack"] = [int.from_bytes(cpu.read_virtual(cpu.reg("rsp") + 8 * i, 8), "little")
                    for i in range(2)]

    out["until exit CPUID"] = run("until exit CPUID")
    out["cpuid_insn"] = cpu.read_virtual(cpu.rip - 2, 2)
    out["until enclave"] = run("until enclave")
    enclave = next(iter(monitor.enclaves.enclaves.values()))
    out["enclave"] = enclave
    out["enclave_rip"] = cpu.rip
    out["tcs"] = Tcs.unpack(machine.memory.read(enclave.pages[enclave.tcs[0]], PAGE_SIZE))
    eid = f"{enclave.secs_pa:#x}"
    for cmd in ("info vms", "info registers", "info epc", "memmap"):
        out["enclave " + cmd] = run(cmd)
    for key, cmd in (("info enclave ID", f"info enclave {eid}"), ("info ept ID", f"info ept {eid}"),
                     ("gpa2hpa enclave", f"gpa2hpa --vm {eid} {enclave.pages[enclave.secs.base]:#x}"),
                     ("gpa2hpa enclave SECS", f"gpa2hpa --vm {eid} {eid}"),
                     ("gpa2hpa host", f"gpa2hpa --vm host {enclave.pages[enclave.secs.base]:#x}")):
        out[key] = run(cmd)
    out["memmap --svg"] = run(f"memmap --svg {tmp / 'memmap.svg'}")
    out["enclave step"] = run("step")
    out["enclave rip after step"] = cpu.rip
    out["monitor log"] = list(monitor.log_lines)

    out["info pcrs"] = run("info pcrs")
    out["pcrs"] = machine.pcrs()
    out["info eventlog"] = run("info eventlog")
    out["info eventlog --pcr 12"] = run("info eventlog --pcr 12")

    lstar = cpu.msr(MSR_LSTAR)
    out["lstar"] = lstar
    out["break"] = run(f"break {lstar:#x}")
    out["break list"] = run("break")
    out["cont to breakpoint"] = run("cont --wait --timeout 30")
    out["breakpoint rip"] = cpu.rip
    out["delete"] = run("delete 1")

    for cmd in ("info registers 1", "info enclave 0x1234", "info enclave nope", "x/2z 0",
                "x 0x7fff00000000", "x $nosuch", "gpa2hpa --vm 0x1234 0", "dmesg -n 0",
                "until exit NOSUCH", "step 0", "info pcrs 99", "frobnicate"):
        s.app.exit_code = 0
        out["error " + cmd] = (run(cmd), s.app.exit_code)

    out["cont to poweroff"] = run("cont --wait --timeout 60")
    out["dmesg -n 2"] = run("dmesg -n 2")
    out["dmesg --hv -n 2"] = run("dmesg --hv -n 2")
    out["serial"] = run("serial")
    out["serial_lines"] = list(machine.serial_lines)
    out["cont after poweroff"] = run("cont")
    out["reset"] = run("reset")
    out["rip after reset"] = machine.cpu.rip
    out["pcr0 after reset"] = machine.pcrs()[0]
    out["status after reset"] = run("info status")
    s.close()
    machine.shutdown()
    return out


def _hex(text: str, pattern: str) -> int:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in:\n{text}"
    return int(m.group(1), 16)


def test_at_power_on_the_machine_is_held_at_the_loader_stub(session) -> None:
    assert "VM status: paused" in session["poweron info status"]
    assert "held at the first instruction" in session["poweron info status"]
    regs = session["poweron info registers"]
    assert "RIP=0000000000007000" in regs and "CS =0008" in regs        # boot-protocol.md: Entry
    assert session["rip0"] == 0x7000


def test_monitor_views_say_the_monitor_is_not_running_before_launch(session) -> None:
    assert "error: no VMCS: the monitor is not running" in session["poweron info vmcs"]
    assert "error: the monitor is not running" in session["poweron info ept"]
    assert "error: the monitor is not running" in session["poweron info epc"]
    assert "r reserved (memmap=, monitor not launched): 256 MiB [0x30000000-0x3fffffff]" \
        in session["poweron memmap"]


def test_step_executes_instructions_and_shows_the_next_one(session) -> None:
    rip1, rip4 = session["rip1"], session["rip4"]
    assert rip1 != session["rip0"] and rip4 != rip1
    assert f"stopped: step at rip {rip1:#x}" in session["step"]
    assert f"=> {rip1:016x}:" in session["step"]
    assert f"stopped: step at rip {rip4:#x}" in session["step 3"]


def test_until_hypercall_stops_right_after_the_first_vmcall(session) -> None:
    rip = session["hc_rip"]
    assert session["hc_insn"] == VMCALL
    assert f"stopped: hypercall at rip {rip:#x}: VM exit VMCALL INIT_CMRM" in session["until hypercall"]
    vmcs = session["info vmcs"]
    assert re.search(r"VM_EXIT_REASON\s+0x00000012  VMCALL \(18\)", vmcs)
    assert _hex(vmcs, r"EPT_POINTER\s+(0x[0-9a-f]+)") == session["eptp"]
    assert re.search(r"^VMCALL\s+18\s+1\s+100.0%$", session["info exits"], re.M)
    assert re.search(r"^0x200\s+INIT_CMRM\s+1\s+0$", session["info hypercalls"], re.M)


def test_until_exit_stops_after_an_exit_of_that_reason(session) -> None:
    assert re.match(r"running until next VM exit CPUID\nstopped: exit at rip 0x[0-9a-f]+: VM exit "
                    r"CPUID\n$", session["until exit CPUID"])
    assert session["cpuid_insn"] == b"\x0f\xa2"


def test_info_vms_lists_the_host_and_then_the_enclave(session) -> None:
    assert re.search(rf"^host\s+host\s+running\s+1\s+-\s+{session['eptp']:#x}$",
                     session["info vms"], re.M)
    assert re.search(r"^host\s+host\s+running, vCPU 0 in an enclave\s+0\s",
                     session["enclave info vms"], re.M)
    enclave = session["enclave"]
    line = next(l for l in session["enclave info vms"].splitlines() if l.startswith(f"{enclave.secs_pa:#x}"))
    assert "running" in line and f" {1 + len(enclave.pages)} " in line


def test_info_ept_shows_coalesced_mappings_with_permissions(session) -> None:
    layout = session["layout"]
    ept = session["info ept"]
    assert f"EPTP {session['eptp']:#x}" in ept
    assert "0x000000000000-0x00002fffffff -> 0x000000000000   768M rwx WB" in ept
    assert (f"{layout.hv_start:#014x}-{layout.epc_start + layout.epc_size - 1:#014x} -> "
            f"{layout.zero_page:#014x} (every 2M page)   256M r-- WB") in ept
    assert "0x0000fed40000-0x0000fed44fff -> 0x0000fed40000    20K rw- UC" in ept


def test_x_disassembles_at_rip_with_capstone(session) -> None:
    lines = session["x/3i $rip"].splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"=> {session['hc_rip']:016x}: ")


def test_x_reads_through_the_page_walk_without_side_effects(session) -> None:
    values = [int(v, 16) for v in session["x/2gx $rsp"].split(":")[1].split()]
    assert values == session["stack"]
    assert session["side effects"] == (0, 0, 0), "no TLB fill, no EPT walk, A bit left clear"


def test_xp_reads_guest_physical_and_xp_H_host_physical(session) -> None:
    assert session["xp/4xw 0x1000"].startswith("0000000000001000: 0x42455448 0x31304f4f")  # HTEBOO01
    assert ": 0x0000000000000000 0x0000000000000000" in session["xp guest"]    # the zero page
    assert "'H' 'Y' 'P' 'E' 'R' 'E' 'N' 'C'" in session["xp host"]            # the monitor image


def test_gva2gpa_shows_each_level_of_the_guest_walk(session) -> None:
    out, rip = session["gva2gpa $rip"], session["hc_rip"]
    assert "PML4E" in out and "PDPTE" in out
    assert f"{rip:#x} -> guest-physical {rip - KERNEL_MAP:#x}" in out


def test_gpa2hpa_shows_the_ept_walk_down_to_the_zero_page(session) -> None:
    assert "EPT PML4E" in session["gpa2hpa 0x1000"]
    assert "0x1000 -> host-physical 0x1000" in session["gpa2hpa 0x1000"]
    layout = session["layout"]
    out = session["gpa2hpa monitor"]
    assert re.search(r"EPT PDE .* r-- memtype 6", out)
    assert f"{layout.hv_start:#x} -> host-physical {layout.zero_page:#x}" in out


def test_info_iommu_shows_the_dma_domain(session) -> None:
    out = session["info iommu"]
    assert "translation enabled" in out and "768M rw- WB" in out
    assert "fault records: 0" in out


def test_until_enclave_stops_at_the_enclave_entry_point(session) -> None:
    enclave, tcs = session["enclave"], session["tcs"]
    assert session["enclave_rip"] == enclave.secs.base + tcs.oentry
    assert f"entered enclave {enclave.secs_pa:#x} on TCS {enclave.tcs[0]:#x}" in session["until enclave"]
    assert f"vCPU 0 in enclave {enclave.secs_pa:#x}, CPL 3" in session["enclave info registers"]
    lo, hi = enclave.elrange
    assert lo <= session["enclave rip after step"] < hi


def test_info_enclave_shows_secs_tcs_and_measurements(session) -> None:
    enclave, out = session["enclave"], session["info enclave ID"]
    einit = next(l for l in session["monitor log"] if "EINIT:" in l)
    assert f"MRENCLAVE {enclave.secs.mr_enclave.hex()}" in out
    assert enclave.secs.mr_enclave.hex() in einit and enclave.secs.mr_signer.hex() in out
    assert f"TCS {enclave.tcs[0]:#x} @ {enclave.pages[enclave.tcs[0]]:#x}: CSSA 0" in out
    flags = re.search(r"ATTRIBUTES: FLAGS (0x[0-9a-f]+) \[([A-Z0-9 ]*)\]", out)
    assert int(flags.group(1), 16) == enclave.secs.attributes.flags
    assert "INIT" in flags.group(2).split() and "MODE64BIT" in flags.group(2).split()


def test_info_epc_counts_the_enclaves_pages(session) -> None:
    enclave = session["enclave"]
    n = 1 + len(enclave.pages)
    assert f"{n} valid" in session["enclave info epc"]
    assert f"enclave {enclave.secs_pa:#x}: {n} pages" in session["enclave info epc"]
    assert "0 valid" in session["info epc"]


def test_enclave_ept_maps_only_its_pages(session) -> None:
    enclave = session["enclave"]
    assert f"EPT of enclave {enclave.secs_pa:#x}" in session["info ept ID"]
    own, host = session["gpa2hpa enclave"], session["gpa2hpa host"]
    page = enclave.pages[enclave.secs.base]
    assert f"{page:#x} -> host-physical {page:#x}" in own
    assert (f"error: guest-physical {enclave.secs_pa:#x} is not readable in the enclave "
            f"{enclave.secs_pa:#x} EPT") in session["gpa2hpa enclave SECS"]
    assert f"-> host-physical {session['layout'].zero_page + (page & 0x1FFFFF):#x}" in host


def test_memmap_draws_monitor_epc_enclave_and_shared_pages(session) -> None:
    text = session["enclave memmap"]
    layout, enclave = session["layout"], session["enclave"]
    assert "one cell = 512 KiB" in text
    row = next(l for l in text.splitlines() if l.startswith(f"{layout.hv_start:#012x}"))
    assert row.split()[1].startswith("M" * 28 + "ZZZZ1e")
    assert f"1 enclave {enclave.secs_pa:#x}:" in text
    assert "S shared buffer" in text and "Z zero page" in text
    svg = ET.parse(session["tmp"] / "memmap.svg").getroot()
    titles = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")}
    assert svg.tag.endswith("svg") and f"enclave {enclave.secs_pa:#x}" in titles
    assert any(t.startswith("zero page") for t in titles)


def test_info_pcrs_and_the_eventlog_match_the_tpm(session) -> None:
    pcrs = session["pcrs"]
    for i in (0, 4, 8, 12):
        assert f"PCR{i:<2} sha256 {pcrs[i].hex()}" in session["info pcrs"]
    assert "matches the TPM" in session["info eventlog"]
    assert "EV_S_CRTM_VERSION" in session["info eventlog"]
    pcr12 = session["info eventlog --pcr 12"].splitlines()
    assert all(" PCR12 " in line for line in pcr12[:-1]) and len(pcr12) >= 2


def test_a_breakpoint_stops_before_the_instruction(session) -> None:
    lstar = session["lstar"]
    assert session["break"] == f"breakpoint 1 at {lstar:#x}\n"
    assert session["break list"] == f"breakpoint 1 at {lstar:#x}\n"
    assert f"stopped: breakpoint at rip {lstar:#x}: breakpoint 1" in session["cont to breakpoint"]
    assert session["breakpoint rip"] == lstar


@pytest.mark.parametrize("command, message", [
    ("info registers 1", "error: no vCPU 1: the machine has 1"),
    ("info enclave 0x1234", "error: unknown enclave 0x1234 (enclaves: "),
    ("info enclave nope", "error: bad enclave ID 'nope'"),
    ("x/2z 0", "error: bad format /2z"),
    ("x 0x7fff00000000", "error: virtual address 0x7fff00000000 is not mapped"),
    ("x $nosuch", "error: unknown register $nosuch"),
    ("gpa2hpa --vm 0x1234 0", "error: unknown enclave 0x1234"),
    ("dmesg -n 0", "error: bad line count 0"),
    ("until exit NOSUCH", "error: unknown exit reason 'NOSUCH'"),
    ("step 0", "error: step count 0 must be at least 1"),
    ("info pcrs 99", "no PCR 99"),
    ("frobnicate", "frobnicate is not a recognized command"),
])
def test_bad_arguments_get_a_clear_error_and_a_failing_status(session, command, message) -> None:
    output, code = session["error " + command]
    assert message in output
    assert code == 1


def test_the_run_ends_at_power_off_and_reset_boots_again(session) -> None:
    assert "stopped: poweroff: requested by the guest" in session["cont to poweroff"]
    assert "error: the machine is not running any more (poweroff" in session["cont after poweroff"]
    assert "machine reset: measured boot done, held at rip 0x7000" in session["reset"]
    assert session["rip after reset"] == 0x7000
    assert session["pcr0 after reset"] == session["pcr0_at_boot"]
    assert "VM status: paused" in session["status after reset"]


def test_dmesg_and_serial_show_the_guests_console(session) -> None:
    lines = session["serial_lines"]
    kernel = [l for l in lines if l.startswith("[")]
    assert session["dmesg -n 2"].splitlines() == kernel[-2:]
    assert session["serial"].splitlines() == lines
    assert all(l.startswith("[hv] ") for l in session["dmesg --hv -n 2"].splitlines())
