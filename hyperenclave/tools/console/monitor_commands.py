"""Monitor commands: info vms/ept/exits/hypercalls/iommu/epc/enclave, and memmap."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import cmd2
from cmd2 import Cmd2ArgumentParser

from hyperenclave.platform.memory import PAGE_SIZE
from hyperenclave.vmm.hypercall import code_name
from hyperenclave.vmm.sgx import AttributeFlags, PageType, Tcs

from .memmap import draw, memory_extents, render_svg, render_text
from .memview import ConsoleError

if TYPE_CHECKING:
    from hyperenclave.vmm.monitor import Monitor

    from .app import HvConsole

CATEGORY = "Monitor"


def _vm_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser()
    p.add_argument("vm", nargs="?", default="host",
                   choices_provider=lambda self: ["host", *self._cmd.enclave_ids()],
                   help="host (default) or an enclave ID from `info vms`")
    return p


def _enclave_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser()
    p.add_argument("id", choices_provider=lambda self: self._cmd.enclave_ids(),
                   help="the enclave's SECS address, as `info vms` lists it")
    return p


def _memmap_parser() -> Cmd2ArgumentParser:
    p = Cmd2ArgumentParser(description="Draw host-physical memory: host RAM, monitor memory, "
                                       "the zero page, the EPC and each enclave's pages, shared "
                                       "buffers.")
    p.add_argument("--svg", metavar="FILE", completer=cmd2.Cmd.path_complete,
                   help="write the picture as an SVG file instead")
    return p


class MonitorCommands(cmd2.CommandSet):
    """What the monitor keeps: VMs, EPTs, exits, hypercalls, IOMMU, EPC, enclaves."""

    @property
    def app(self) -> "HvConsole":
        return self._cmd

    def _monitor(self) -> "Monitor":
        monitor = self.app.machine.monitor
        if not monitor.enabled:
            raise ConsoleError("the monitor is not running (the host runs natively; it launches "
                               "when the host enables it: try `until hypercall`)")
        return monitor

    @cmd2.as_subcommand_to("info", "vms", Cmd2ArgumentParser, help="the host and each enclave, with state")
    def info_vms(self, _: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            monitor, cpu = app.machine.monitor, app.machine.cpu
            runner = monitor.runner
            inside = runner.inside.get(cpu.index) if runner is not None else None
            rows = [("ID", "NAME", "STATE", "VCPUS", "EPC PAGES", "EPTP")]
            if not monitor.enabled:
                rows.append(("host", "host", "native (monitor not running)", "1", "-", "-"))
            else:
                state = "running" if inside is None else "running, vCPU 0 in an enclave"
                rows.append(("host", "host", state, "1" if inside is None else "0", "-",
                             f"{monitor.ept.eptp:#x}"))
                for secs, enclave in app.enclaves().items():
                    space = runner.spaces.get(secs) if runner is not None else None
                    state = ("destroying" if enclave.destroying else
                             "running" if inside is not None and inside.enclave is enclave else
                             "initialized" if enclave.initialized else "being built (not EINIT)")
                    rows.append((f"{secs:#x}", f"enclave {enclave.secs.base:#x}", state,
                                 str(enclave.threads_inside), str(1 + len(enclave.pages)),
                                 f"{space.ept.eptp:#x}" if space else "-"))
        app.poutput(_table(rows))

    @cmd2.as_subcommand_to("info", "ept", _vm_parser, help="an EPT's mappings, coalesced, with permissions")
    def info_ept(self, args: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            monitor = self._monitor()
            if args.vm == "host":
                lines = monitor.ept.dump()
                title = "host EPT"
            else:
                enclave = app.enclave(args.vm)
                space = monitor.runner.spaces.get(enclave.secs_pa) if monitor.runner else None
                if space is None:
                    raise ConsoleError(f"enclave {enclave.secs_pa:#x} has no EPT yet (not initialized)")
                lines = space.ept.dump()
                title = f"EPT of enclave {enclave.secs_pa:#x}"
        app.poutput(f"{title}: " + "\n".join(lines))

    @cmd2.as_subcommand_to("info", "exits", Cmd2ArgumentParser, help="VM exits counted per reason")
    def info_exits(self, _: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            counts = dict(app.machine.monitor.exit_counts)
        total = sum(counts.values())
        rows = [("REASON", "NUMBER", "COUNT", "SHARE")]
        for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append((reason.sdm_name, str(int(reason)), str(n), f"{100 * n / total:.1f}%"))
        rows.append(("total", "", str(total), ""))
        app.poutput(_table(rows) if counts else "no VM exits yet")

    @cmd2.as_subcommand_to("info", "hypercalls", Cmd2ArgumentParser, help="hypercalls counted per code")
    def info_hypercalls(self, _: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            table = app.machine.monitor.hypercalls
            counts, failures = dict(table.counts), dict(table.failures)
        if not counts:
            app.poutput("no hypercalls yet")
            return
        rows = [("CODE", "NAME", "CALLS", "FAILED")]
        for code, n in sorted(counts.items()):
            rows.append((f"{code:#x}", code_name(code), str(n), str(failures.get(code, 0))))
        app.poutput(_table(rows))

    @cmd2.as_subcommand_to("info", "iommu", Cmd2ArgumentParser, help="the DMA-remapping unit and its faults")
    def info_iommu(self, _: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            iommu, monitor = app.machine.iommu, app.machine.monitor
            lines = [f"translation {'enabled' if iommu.enabled else 'disabled (pass-through: bus address = host-physical)'}"]
            domain = monitor.dma_domain
            if iommu.enabled and domain is not None:
                lines.append(f"domain {domain.domain_id}: SLPTPTR {domain.slptptr:#x}, context entry "
                             + " ".join(f"{q:#x}" for q in domain.context_entry()))
                lines += ["  " + line for line in domain.dump()[1:]]
            lines.append(f"fault records: {len(iommu.faults)} (overflowed: {iommu.fault_overflows})")
            lines += [f"  reason {f.reason:#x} {'write' if f.access else 'read'} at {f.addr:#x}: "
                      f"{f.message}" for f in iommu.faults[-10:]]
        app.poutput("\n".join(lines))

    @cmd2.as_subcommand_to("info", "epc", Cmd2ArgumentParser, help="the EPC and its EPCM, summarized")
    def info_epc(self, _: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            monitor = self._monitor()
            layout, manager = monitor.layout, monitor.enclaves
            summary = manager.epcm.summary()
            per_enclave = {secs: len(manager.epcm.children(secs)) + 1 for secs in manager.enclaves}
        app.poutput(f"EPC [{layout.epc_start:#x}-{layout.epc_start + layout.epc_size - 1:#x}], "
                    f"{summary['pages']} pages: {summary['valid']} valid, "
                    f"{summary['pages'] - summary['valid']} free")
        types = ", ".join(f"{t.name} {summary[t.name]}" for t in PageType if summary[t.name])
        app.poutput(f"valid pages by type: {types or 'none'}")
        states = ", ".join(f"{s} {summary[s]}" for s in ("PENDING", "MODIFIED", "PR", "BLOCKED"))
        app.poutput(f"page states: {states}")
        for secs, n in per_enclave.items():
            app.poutput(f"enclave {secs:#x}: {n} pages (SECS included)")

    @cmd2.as_subcommand_to("info", "enclave", _enclave_parser,
                           help="an enclave: SECS, TCSs, CSSA, MRENCLAVE, MRSIGNER, attributes")
    def info_enclave(self, args: argparse.Namespace) -> None:
        app = self.app
        with app.inspecting():
            self._monitor()
            enclave = app.enclave(args.id)
            secs = enclave.secs
            memory = app.machine.memory
            tcss = [(la, enclave.pages[la], Tcs.unpack(memory.read(enclave.pages[la], PAGE_SIZE)))
                    for la in enclave.tcs]
            runner = app.machine.monitor.runner
            space = runner.spaces.get(enclave.secs_pa) if runner is not None else None
            shared = list(space.shared) if space is not None else []
        flags = [f.name for f in AttributeFlags if f.value and secs.attributes.flags & f.value]
        state = ("destroying" if enclave.destroying else "initialized" if enclave.initialized
                 else "being built (not EINIT)")
        out = [f"enclave {enclave.secs_pa:#x}: {state}, {enclave.threads_inside} thread(s) inside",
               f"SECS @ {enclave.secs_pa:#x}: BASEADDR {secs.base:#x} SIZE {secs.size:#x} "
               f"SSAFRAMESIZE {secs.ssa_frame_size} MISCSELECT {secs.misc_select:#x} "
               f"MS_BUF_SIZE {secs.ms_buf_size:#x}",
               f"ATTRIBUTES: FLAGS {secs.attributes.flags:#x} [{' '.join(flags)}] "
               f"XFRM {secs.attributes.xfrm:#x}",
               f"MRENCLAVE {secs.mr_enclave.hex()}",
               f"MRSIGNER  {secs.mr_signer.hex()}",
               f"ISVPRODID {secs.isv_prod_id} ISVSVN {secs.isv_svn}",
               f"pages: {1 + len(enclave.pages)} (SECS + {len(enclave.pages)} in ELRANGE "
               f"[{secs.base:#x}-{secs.base + secs.size - 1:#x}])"]
        for la, pa, tcs in tcss:
            out.append(f"TCS {la:#x} @ {pa:#x}: CSSA {tcs.cssa} NSSA {tcs.nssa} OENTRY "
                       f"{tcs.oentry:#x} OSSA {tcs.ossa:#x} FLAGS {tcs.flags:#x}")
        out += [f"shared with the app: [{a:#x}-{b:#x})" for a, b in shared]
        app.poutput("\n".join(out))

    @cmd2.with_category(CATEGORY)
    @cmd2.with_argparser(_memmap_parser)
    def do_memmap(self, args: argparse.Namespace) -> None:
        """Draw host-physical memory (memmap --svg FILE writes a picture)."""
        app = self.app
        with app.inspecting():
            picture = draw(memory_extents(app.machine), app.machine.memory.top)
        if args.svg:
            path = Path(args.svg)
            if not path.parent.is_dir():
                raise ConsoleError(f"cannot write {path}: no directory {path.parent}")
            path.write_text(render_svg(picture, f"{app.machine.config.name}: host-physical memory"))
            app.poutput(f"wrote {path}")
        else:
            app.poutput("\n".join(render_text(picture)))


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
