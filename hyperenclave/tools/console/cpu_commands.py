"""CPU commands: info registers, info vmcs, x / xp, gva2gpa, gpa2hpa."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import cmd2
from cmd2 import Cmd2ArgumentParser

from hyperenclave.platform.cpu import GPRS

from .formats import dump, parse_format
from .memview import ConsoleError, Level, SecondStage, parse_address

if TYPE_CHECKING:
    from .app import HvConsole

CATEGORY = "CPU"
_RFLAGS = ((0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
           (10, "DF"), (11, "OF"), (16, "RF"))


def _vcpu_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser()
    p.add_argument("vcpu", nargs="?", type=int, help="vCPU number (the machine has vCPU 0)")
    return p


def _x_parser(physical: bool) -> Cmd2ArgumentParser:
    what = "guest-physical (through the current EPT)" if physical else "guest-virtual (through " \
        "the vCPU's page tables and the EPT)"
    p = Cmd2ArgumentParser(description=f"Dump memory at a {what} address, as `{'xp' if physical else 'x'}"
                                       f"/FMT ADDR`: FMT is [COUNT][FORMAT][SIZE], FORMAT x d u o c "
                                       "or i (disassemble), SIZE b h w g. Reads set no A/D bit.")
    p.add_argument("-f", "--format", default="", help="COUNT, FORMAT and SIZE (x/FMT sets it)")
    if physical:
        p.add_argument("-H", "--host", action="store_true",
                       help="host-physical instead (the monitor's view: EPC, monitor memory)")
    p.add_argument("address", nargs="+", help="0x..., decimal, $reg, with + or -")
    return p


def _gva2gpa_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Walk the vCPU's page tables (CR3) for a guest-virtual "
                                       "address, showing every level; no A/D bit is set.")
    p.add_argument("address", nargs="+", help="0x..., $reg, with + or -")
    return p


def _gpa2hpa_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Walk an EPT for a guest-physical address, showing every "
                                       "level (the current VM's EPT unless --vm).")
    p.add_argument("--vm", choices_provider=lambda self: ["host", *self._cmd.enclave_ids()],
                   help="host, or an enclave ID from `info vms`")
    p.add_argument("address", nargs="+", help="0x..., $reg, with + or -")
    return p


def next_instruction(app: "HvConsole") -> str:
    """The instruction at RIP, disassembled (what `step` shows)."""
    rip = app.machine.cpu.rip
    try:
        return dump(parse_format("1i"), rip, app.mem.read_virtual, mark=rip)[0]
    except ConsoleError as err:
        return f"   {rip:016x}: <{err}>"


def format_levels(levels: list[Level]) -> list[str]:
    return [f"  {lv.name:<10} @ {lv.address:#014x} = {lv.value:#018x}  {lv.flags}" for lv in levels]


class CpuCommands(cmd2.CommandSet):
    """Registers, VMCS, memory and address translation."""

    @property
    def app(self) -> "HvConsole":
        return self._cmd

    def _address(self, words: list[str]) -> int:
        return parse_address(" ".join(words), self.app.machine.cpu.registers)

    @cmd2.as_subcommand_to("info", "registers", _vcpu_parser, help="the vCPU's registers")
    def info_registers(self, args: argparse.Namespace) -> None:
        app = self.app
        app.vcpu(args.vcpu)
        with app.inspecting():
            cpu = app.machine.cpu
            r = cpu.registers()
            gdt, idt = cpu.descriptor_table("gdtr"), cpu.descriptor_table("idtr")
            tr = cpu.task_register()
            vm, cpl = app.vm_name(), cpu.cpl
        out = [f"vCPU {cpu.index} in {vm}, CPL {cpl}"]
        names = list(GPRS)
        for i in range(0, 16, 4):
            out.append(" ".join(f"{n.upper():<3}={r[n]:016x}" for n in names[i:i + 4]))
        flags = " ".join(name for bit, name in _RFLAGS if r["rflags"] >> bit & 1)
        out.append(f"RIP={r['rip']:016x} RFL={r['rflags']:08x} [{flags}]")
        for seg in ("cs", "ss", "ds", "es", "fs", "gs"):
            base = f" base {r[seg + '_base']:016x}" if seg in ("fs", "gs") else ""
            out.append(f"{seg.upper()} ={r[seg]:04x}{base}")
        out.append(f"TR ={tr[0]:04x} base {tr[1]:016x} limit {tr[2]:08x}")
        out.append(f"GDT=     {gdt[0]:016x} {gdt[1]:08x}")
        out.append(f"IDT=     {idt[0]:016x} {idt[1]:08x}")
        out.append(f"CR0={r['cr0']:08x} CR2={r['cr2']:016x} CR3={r['cr3']:016x} CR4={r['cr4']:08x}")
        out.append(f"EFER={r['efer']:016x}")
        app.poutput("\n".join(out))

    @cmd2.as_subcommand_to("info", "vmcs", _vcpu_parser, help="the VMCS of a vCPU, decoded")
    def info_vmcs(self, args: argparse.Namespace) -> None:
        app = self.app
        app.vcpu(args.vcpu)
        monitor = app.machine.monitor
        with app.inspecting():
            vmcs = monitor.vmcs.get(app.machine.cpu.index)
            if vmcs is None:
                raise ConsoleError("no VMCS: the monitor is not running (the host runs natively; "
                                   "try `until hypercall`)")
            lines = vmcs.dump()
        app.poutput("\n".join(lines))

    def _dump(self, args: argparse.Namespace, physical: bool) -> None:
        app = self.app
        fmt = parse_format(args.format)
        with app.inspecting():
            address = self._address(args.address)
            if not physical:
                read, mark = app.mem.read_virtual, app.machine.cpu.rip
            elif args.host:
                read, mark = app.mem.read_host_physical, None
            else:
                read, mark = app.mem.read_guest_physical, None
            lines = dump(fmt, address, read, mark)
        app.poutput("\n".join(lines))

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(lambda: _x_parser(False))
    def do_x(self, args: argparse.Namespace) -> None:
        """Dump guest-virtual memory: x/FMT ADDR."""
        self._dump(args, physical=False)

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(lambda: _x_parser(True))
    def do_xp(self, args: argparse.Namespace) -> None:
        """Dump guest-physical memory: xp/FMT ADDR (xp -H: host-physical)."""
        self._dump(args, physical=True)

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_gva2gpa_parser)
    def do_gva2gpa(self, args: argparse.Namespace) -> None:
        """Translate a guest-virtual address through the guest's page tables."""
        app = self.app
        with app.inspecting():
            gva = self._address(args.address)
            cpu = app.machine.cpu
            levels, gpa = app.mem.guest_levels(gva)
            cr3, vm = cpu.reg("cr3"), app.vm_name()
        app.poutput(f"guest walk of {gva:#x} from CR3 {cr3:#x} ({vm}):")
        app.poutput("\n".join(format_levels(levels)) if levels else "  paging is off: GPA = GVA")
        if gpa is None:
            raise ConsoleError(f"{gva:#x} is not mapped: the {levels[-1].name} is not present")
        app.poutput(f"{gva:#x} -> guest-physical {gpa:#x} (gpa2hpa {gpa:#x} for the EPT)")

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_gpa2hpa_parser)
    def do_gpa2hpa(self, args: argparse.Namespace) -> None:
        """Translate a guest-physical address through an EPT."""
        app = self.app
        with app.inspecting():
            gpa = self._address(args.address)
            stage = self._stage(args.vm)
            levels = app.mem.ept_levels(stage, gpa)
            if stage.walker is None:
                app.poutput(f"no EPT ({stage.name}): host-physical = guest-physical = {gpa:#x}")
                return
            app.poutput(f"EPT walk of {gpa:#x} in the {stage.name} EPT (PML4 {stage.pml4:#x}):")
            app.poutput("\n".join(format_levels(levels)))
            hpa = app.mem.gpa_to_hpa(gpa, stage)
        app.poutput(f"{gpa:#x} -> host-physical {hpa:#x}")

    def _stage(self, vm: str | None) -> SecondStage:
        app = self.app
        monitor = app.machine.monitor
        if vm is None:
            return app.mem.stage()
        if not monitor.enabled:
            raise ConsoleError("no EPT: the monitor is not running")
        if vm == "host":
            return SecondStage("host", monitor.ept.walker, monitor.ept.pml4)
        enclave = app.enclave(vm)
        space = monitor.runner.spaces.get(enclave.secs_pa) if monitor.runner else None
        if space is None:
            raise ConsoleError(f"enclave {enclave.secs_pa:#x} has no EPT yet (not initialized)")
        return SecondStage(f"enclave {enclave.secs_pa:#x}", space.ept.walker, space.ept.pml4)
