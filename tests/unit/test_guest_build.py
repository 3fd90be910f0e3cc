"""The guest build: reproducible images, layout of the kernel/loader/programs, the cpio format."""

from __future__ import annotations

import io
import json
import os
import re
import threading
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperenclave.guest.build import (KERNEL_LMA, KERNEL_VMA, MONITOR_PATH, USER_PROGRAMS,
                                      GuestBuildError, ToolchainMissing, build_guest,
                                      build_initramfs)
from hyperenclave.guest.initramfs import (CpioError, make_initramfs, read_cpio, read_initramfs)

KERNEL_VMA_BASE = 0xFFFFFFFF80000000


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return build_guest(cache_dir=tmp_path_factory.mktemp("guest-cache"))


def _elf(path: Path) -> ELFFile:
    return ELFFile(io.BytesIO(path.read_bytes()))


# ---------------------------------------------------------------- reproducibility and cache


def test_build_is_reproducible(tmp_path, images):
    a = build_guest(rebuild=True, cache_dir=tmp_path / "a")
    b = build_guest(rebuild=True, cache_dir=tmp_path / "b")
    assert a.directory != b.directory
    for x, y in ((a.kernel, b.kernel), (a.loader, b.loader), (a.initramfs, b.initramfs)):
        assert x.read_bytes() == y.read_bytes(), x.name
    for name in USER_PROGRAMS:
        assert a.user_programs[name].read_bytes() == b.user_programs[name].read_bytes(), name
    assert a.manifest == b.manifest == images.manifest


def test_cache_hit_returns_the_same_build(images):
    again = build_guest(cache_dir=images.directory.parent)
    assert again.directory == images.directory
    assert again.kernel.stat().st_mtime_ns == images.kernel.stat().st_mtime_ns


def test_concurrent_builds_share_one_cache_entry(tmp_path):
    results, errors = [], []

    def run():
        try:
            results.append(build_guest(rebuild=False, cache_dir=tmp_path))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0].directory == results[1].directory
    assert results[0].kernel.read_bytes() == results[1].kernel.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [results[0].directory.name]  # no temp dirs left


def test_manifest_hashes_match_the_files(images):
    import hashlib
    m = images.manifest
    assert json.loads((images.directory / "manifest.json").read_text()) == m
    assert m["kernel"] == hashlib.sha256(images.kernel.read_bytes()).hexdigest()
    assert m["loader"] == hashlib.sha256(images.loader.read_bytes()).hexdigest()
    assert m["initramfs"] == hashlib.sha256(images.initramfs.read_bytes()).hexdigest()
    files = read_initramfs(images.initramfs.read_bytes())
    assert set(m["files"]) == set(files)
    for path, data in files.items():
        assert m["files"][path] == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- layout of the images


def test_kernel_elf_lma_vma_and_entry(images):
    elf = _elf(images.kernel)
    assert elf["e_type"] == "ET_EXEC" and elf.get_machine_arch() == "x64"
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    assert loads
    assert min(s["p_paddr"] for s in loads) == KERNEL_LMA
    for s in loads:
        assert s["p_vaddr"] - s["p_paddr"] == KERNEL_VMA_BASE
        assert s["p_paddr"] % 4096 == 0
    assert not any(s["p_flags"] & 7 == 7 for s in loads), "no RWX segment"
    syms = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}
    assert elf["e_entry"] == syms["startup_64"] == KERNEL_VMA
    for name in ("start_kernel", "syscall_entry", "isr_stubs", "switch_to", "do_syscall"):
        assert name in syms
    assert not any(s["p_type"] in ("PT_INTERP", "PT_DYNAMIC") for s in elf.iter_segments())
    assert elf.get_section_by_name(".note.gnu.build-id") is None


def test_loader_is_a_small_flat_binary(images):
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    blob = images.loader.read_bytes()
    assert 0 < len(blob) <= 4096
    assert blob[:4] != b"\x7fELF"
    assert b"loader: bad boot_params magic" in blob
    text = [f"{i.mnemonic} {i.op_str}" for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(blob, 0x7000)]
    assert "movabs rax, 0x31304f4f42455448" in text            # the boot_params magic
    assert "mov rdi, rsi" in text and "jmp rax" in text        # RDI = boot_params, kernel_entry
    assert "hlt " in text


def test_user_programs_are_static_elfs(images):
    assert set(USER_PROGRAMS) <= set(images.user_programs)
    for name, path in images.user_programs.items():
        elf = _elf(path)
        assert elf["e_type"] == "ET_EXEC", name
        assert 0x400000 <= elf["e_entry"] < 0x500000, name
        kinds = [s["p_type"] for s in elf.iter_segments()]
        assert "PT_INTERP" not in kinds and "PT_DYNAMIC" not in kinds, name
        assert all(s["p_vaddr"] >= 0x400000 for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")


def test_initramfs_contents(images):
    files = read_initramfs(images.initramfs.read_bytes())
    for name in USER_PROGRAMS:
        assert files[f"/bin/{name}"] == images.user_programs[name].read_bytes()
    rc = [ln for ln in files["/etc/rc"].decode().splitlines() if ln and not ln.startswith("#")]
    assert rc == ["/bin/hello", "/bin/segv", "/bin/cpuid", "/bin/sysctl -w dev.hyper_enclave.enabled=1",
                  "/bin/cpuid", "/bin/hello_app 2 40", "/bin/hello"]
    assert images.initramfs_files == files
    entries = read_cpio(images.initramfs.read_bytes())
    assert [e.name for e in entries] == sorted(e.name for e in entries)
    assert {e.name for e in entries if e.is_dir} == {"bin", "etc"}
    assert [e.ino for e in entries] == list(range(1, len(entries) + 1))


def test_extra_programs_and_files(tmp_path, images):
    src = tmp_path / "extra.c"
    src.write_text('#include "libc.h"\nint main(void) { printf("extra %d\\n", getpid()); return 3; }\n')
    img = build_guest(cache_dir=tmp_path / "c", extra_programs={"extra": src},
                      extra_files={MONITOR_PATH: b"MONITOR", "/etc/rc": b"/bin/extra\n"})
    files = img.initramfs_files
    assert files[MONITOR_PATH] == b"MONITOR"
    assert files["/etc/rc"] == b"/bin/extra\n"
    assert files["/bin/extra"] == img.user_programs["extra"].read_bytes()
    assert MONITOR_PATH in img.manifest["files"]
    assert img.kernel.read_bytes() == images.kernel.read_bytes()
    # adding files afterwards, without compiling
    data = build_initramfs(images, {"/lib/enclave.bin": b"E"}, out=tmp_path / "i.cpio")
    assert read_initramfs(data)["/lib/enclave.bin"] == b"E"
    assert (tmp_path / "i.cpio").read_bytes() == data


# ---------------------------------------------------------------- errors


def test_missing_compiler_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainMissing) as exc:
        build_guest(cache_dir=tmp_path / "cache")
    assert "gcc" in str(exc.value) and "apt-get install gcc" in str(exc.value)


def test_missing_linker_names_binutils(tmp_path, monkeypatch):
    import shutil
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "gcc").symlink_to(shutil.which("gcc"))
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(ToolchainMissing, match="binutils"):
        build_guest(cache_dir=tmp_path / "cache")


def test_compile_error_shows_the_compiler_message(tmp_path):
    src = tmp_path / "broken.c"
    src.write_text("int main(void) { return undeclared_thing; }\n")
    with pytest.raises(GuestBuildError) as exc:
        build_guest(cache_dir=tmp_path / "cache", extra_programs={"broken": src})
    assert "undeclared_thing" in str(exc.value) and "error" in str(exc.value)
    assert not any(p.name.startswith(".build-") for p in (tmp_path / "cache").iterdir())


# ---------------------------------------------------------------- cpio newc


def test_cpio_round_trip_and_determinism():
    files = {"/bin/a": b"\x7fELF...", "/etc/rc": b"/bin/a\n", "/lib/firmware/x.bin": bytes(range(256)),
             "/empty": b""}
    blob = make_initramfs(files)
    assert blob == make_initramfs(dict(reversed(list(files.items()))))
    assert blob[:6] == b"070701" and len(blob) % 4 == 0
    assert read_initramfs(blob) == files
    entries = {e.name: e for e in read_cpio(blob)}
    assert entries["bin/a"].mode == 0o100755 and entries["etc/rc"].mode == 0o100644
    assert entries["lib/firmware"].is_dir
    # header fields: uid, gid, mtime are 0
    assert blob[6 + 8 * 2: 6 + 8 * 4] == b"0" * 16 and blob[6 + 8 * 5: 6 + 8 * 6] == b"0" * 8


def test_cpio_rejects_bad_input():
    with pytest.raises(CpioError):
        read_cpio(b"070707" + b"0" * 200)
    with pytest.raises(CpioError):
        read_cpio(make_initramfs({"/a": b"xyz"})[:-20])
    with pytest.raises(CpioError):
        make_initramfs({"/a": b"1", "a": b"2"})
    with pytest.raises(CpioError):
        make_initramfs({"/a": b"1", "/a/b": b"2"})
    with pytest.raises(CpioError):
        make_initramfs({"/../etc": b"1"})


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(
    st.lists(st.text(alphabet="abcxyz019_.-", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
             min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    st.binary(max_size=64), max_size=6))
def test_cpio_round_trip_property(files):
    names = set(files)
    if any(other.startswith(n + "/") for n in names for other in names):
        return   # a path cannot be both a file and a directory
    assert read_initramfs(make_initramfs(files)) == files


# ---------------------------------------------------------------- smoke boot on the platform


def _boot(tmp_path, images, cmdline: str | None = None, typed: bytes = b"") -> str:
    machine = pytest.importorskip("hyperenclave.machine")
    if not hasattr(machine, "Machine"):
        pytest.skip("platform not ready")
    from hyperenclave.platform.firmware.measured_boot import BootImages
    boot = BootImages(images.loader.read_bytes(), images.kernel.read_bytes(),
                      images.initramfs.read_bytes())
    cfg = machine.MachineConfig(name="guest-build-test", state_dir=tmp_path / "state")
    if cmdline is not None:
        cfg.cmdline = cmdline
    with machine.Machine(cfg, images=boot) as m:
        m.boot()
        if typed:
            m.uart.feed(typed)      # the tty queues lines until the shell reads them
        result = m.run(timeout=60)
        out = m.serial_text()
    assert result.state == "poweroff", out
    return out


def test_boots_on_the_machine(tmp_path, images):
    out = _boot(tmp_path, images)
    for want in ("BIOS-e820: [mem 0x0000000000100000-", "e820: user-defined physical RAM map:",
                 "user: [mem 0x0000000030000000-0x000000003fffffff] reserved",
                 "Run /bin/hello as init process", "Hello from user space, pid 1",
                 "segv[2]: segfault at 0 ip ", "/bin/segv[2] killed by signal 11",
                 "cpuid: vendor ", "/bin/cpuid[3] exited with status 0", "reboot: Power down"):
        assert want in out, want


def test_shell_runs_programs_and_reports_faults(tmp_path, images):
    typed = b"systest\rfault gp\rfault ud\recho one  two\rpoweroff\r"
    out = _boot(tmp_path, images, "console=ttyS0 quiet memmap=256M$0x30000000 shell bogus=1", typed)
    assert 'Unknown kernel command line parameters "bogus=1"' in out
    assert "systest: 28/28 checks passed" in out
    assert re.search(r"traps: fault\[\d+\] general protection fault ip:", out)
    assert re.search(r"traps: fault\[\d+\] trap invalid opcode ip:", out)
    assert "one two\n" in out
    assert out.rstrip().endswith("reboot: Power down")


# ---------------------------------------------------------------- the loader stub, run alone


def _run_loader(blob: bytes, magic: int) -> tuple[int, int, bytes]:
    """Run the stub in bare Unicorn (64-bit mode, no paging): returns (rip, rdi, uart bytes)."""
    import struct
    from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_64, Uc
    from unicorn import x86_const as x86
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x20000)
    uc.mem_write(0x7000, blob)
    uc.mem_write(0x1000, struct.pack("<QQ", magic, 0x9000))
    uc.mem_write(0x9000, b"\xf4")   # "kernel": hlt
    out = bytearray()

    def on_in(uc, port, size, _):
        return 0x60 if port == 0x3FD else 0

    def on_out(uc, port, size, value, _):
        if port == 0x3F8:
            out.append(value & 0xFF)

    uc.hook_add(UC_HOOK_INSN, on_in, None, 1, 0, x86.UC_X86_INS_IN)
    uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, x86.UC_X86_INS_OUT)
    uc.reg_write(x86.UC_X86_REG_RSI, 0x1000)
    uc.reg_write(x86.UC_X86_REG_RSP, 0x1F000)
    uc.emu_start(0x7000, 0, count=10_000)
    return uc.reg_read(x86.UC_X86_REG_RIP), uc.reg_read(x86.UC_X86_REG_RDI), bytes(out)


def test_loader_jumps_to_kernel_entry_with_rdi(images):
    rip, rdi, out = _run_loader(images.loader.read_bytes(), 0x31304F4F42455448)
    assert rip in (0x9000, 0x9001) and rdi == 0x1000 and out == b""


def test_loader_rejects_a_bad_magic(images):
    rip, _, out = _run_loader(images.loader.read_bytes(), 0x1234)
    assert out == b"loader: bad boot_params magic\n"
    assert 0x7000 <= rip < 0x7000 + 4096
