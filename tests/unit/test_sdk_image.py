"""`hyperenclave-sign`: signing configs, enclave ELFs (built from C with the trusted runtime)
laid out as enclaves, JSON layouts measured, and the command line."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from hyperenclave.guest.build import GUEST_DIR
from hyperenclave.sdk import SignedEnclave, signer
from hyperenclave.sdk.build import EnclaveBuildError, build_enclave
from hyperenclave.sdk.image import (CONFIG, THREAD_DATA, EnclaveConfig, EnclaveImageError,
                                    layout_from_elf, layout_from_json)
from hyperenclave.sdk.samples import SAMPLES_DIR
from hyperenclave.vmm.sgx import PAGE_SIZE, AttributeFlags, PageFlags, PageType, Tcs
from hyperenclave.vmm.sigstruct import generate_signing_key, load_signing_key, save_signing_key

R, W, X = PageFlags.R, PageFlags.W, PageFlags.X
REPO = Path(__file__).resolve().parents[2]
#: attestation-formats.md section 3, "Test vectors"
ECREATE_ONLY = "9e197c8837c6d65632dbdd59cd7df4f1a25b68d8e4e5eb6ca3b20b05311fecb8"
ONE_ZERO_PAGE = "1f2cf80bd03ffd8bfac33f7cba128aff511c3af666b93bb66e7ef718418bdade"


@pytest.fixture(scope="module")
def hello_elf() -> bytes:
    return build_enclave([SAMPLES_DIR / "hello" / "enclave.c"]).read_bytes()


@pytest.fixture(scope="module")
def key():
    return generate_signing_key()


def _symbols(elf: bytes) -> dict[str, int]:
    f = ELFFile(io.BytesIO(elf))
    return {s.name: s["st_value"] for s in f.get_section_by_name(".symtab").iter_symbols()}


# ---------------------------------------------------------------- config


def test_a_config_names_heap_stack_threads_identity_and_debug() -> None:
    config = EnclaveConfig.from_json('{"heap_size": 8192, "stack_size": 4096, "tcs_count": 2, '
                                     '"isv_prod_id": 9, "isv_svn": 4, "debug": true}')
    assert config == EnclaveConfig(heap_size=8192, stack_size=4096, tcs_count=2, isv_prod_id=9,
                                   isv_svn=4, debug=True)
    assert EnclaveConfig.from_json("{}") == EnclaveConfig()


@pytest.mark.parametrize("text, message", [
    ("[1]", "must be a JSON object"),
    ("{", "not JSON"),
    ('{"heap": 4096}', r"unknown key\(s\) heap"),
    ('{"heap_size": 100}', "heap_size 0x64 is not a multiple of 4096"),
    ('{"stack_size": -4096}', "stack_size must be a non-negative integer"),
    ('{"tcs_count": 0}', "must be > 0"),
    ('{"isv_svn": 65536}', "isv_svn 65536 does not fit in 16 bits"),
    ('{"isv_prod_id": true}', "isv_prod_id must be a non-negative integer"),
    ('{"debug": 1}', "debug must be true or false"),
])
def test_a_bad_config_is_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(EnclaveImageError, match=message):
        EnclaveConfig.from_json(text)


# ---------------------------------------------------------------- ELF -> layout


def test_the_elf_segments_come_first_with_their_permissions(hello_elf: bytes) -> None:
    layout = layout_from_elf(hello_elf, EnclaveConfig())
    loads = [s for s in ELFFile(io.BytesIO(hello_elf)).iter_segments() if s["p_type"] == "PT_LOAD"]
    code, data = loads
    pages = {p.offset: p for p in layout.pages}
    assert code["p_vaddr"] == 0 and pages[0].flags == R | X and pages[0].measured
    assert pages[0].data[:code["p_filesz"]][:64] == code.data()[:64]
    assert pages[data["p_vaddr"]].flags == R | W
    assert all(p.page_type == PageType.PT_REG for p in layout.pages
               if p.offset < data["p_vaddr"] + data["p_memsz"])


def test_heap_stack_tcs_ssa_and_thread_data_follow_with_guard_gaps(hello_elf: bytes) -> None:
    config = EnclaveConfig(heap_size=3 * PAGE_SIZE, stack_size=2 * PAGE_SIZE, tcs_count=2)
    layout = layout_from_elf(hello_elf, config)
    offsets = [p.offset for p in layout.pages]
    loads = [s for s in ELFFile(io.BytesIO(hello_elf)).iter_segments() if s["p_type"] == "PT_LOAD"]
    image_end = -(-max(s["p_vaddr"] + s["p_memsz"] for s in loads) // PAGE_SIZE) * PAGE_SIZE
    heap = image_end + PAGE_SIZE                                  # one guard page
    assert image_end not in offsets and offsets[offsets.index(heap):][:3] == [
        heap, heap + PAGE_SIZE, heap + 2 * PAGE_SIZE]
    tcs_pages = [p for p in layout.pages if p.page_type == PageType.PT_TCS]
    assert len(tcs_pages) == 2
    entry = _symbols(hello_elf)["enclave_entry"]
    for page in tcs_pages:
        tcs = Tcs.unpack(page.data)
        stack = page.offset - 2 * PAGE_SIZE
        assert stack - PAGE_SIZE not in offsets                  # guard below the stack
        assert {stack, stack + PAGE_SIZE} <= set(offsets)
        assert (tcs.oentry, tcs.ossa, tcs.nssa) == (entry, page.offset + PAGE_SIZE, 2)
        td = page.offset + 3 * PAGE_SIZE
        assert tcs.ofsbase == tcs.ogsbase == td and tcs.fslimit == tcs.gslimit == 0xFFF
        thread_data = next(p for p in layout.pages if p.offset == td)
        assert THREAD_DATA.unpack_from(thread_data.data) == (
            td, page.offset, stack, tcs.ossa, 1)
    assert layout.size == 1 << (max(offsets) + PAGE_SIZE - 1).bit_length()
    assert all(p.measured for p in layout.pages)


def test_the_runtime_config_is_filled_in_before_measuring(hello_elf: bytes) -> None:
    config = EnclaveConfig(heap_size=2 * PAGE_SIZE, tcs_count=3)
    layout = layout_from_elf(hello_elf, config)
    at = _symbols(hello_elf)["he_enclave_config"]
    page = next(p for p in layout.pages if p.offset == at & ~0xFFF)
    magic, size, heap, heap_size, threads = CONFIG.unpack_from(page.data, at & 0xFFF)
    assert (magic, size, heap_size, threads) == (b"HECONFIG", layout.size, 2 * PAGE_SIZE, 3)
    assert [p.offset for p in layout.pages if heap <= p.offset < heap + heap_size] == [
        heap, heap + PAGE_SIZE]
    other = layout_from_elf(hello_elf, EnclaveConfig(heap_size=3 * PAGE_SIZE, tcs_count=3))
    assert other.mrenclave() != layout.mrenclave()


def test_identity_and_debug_go_to_the_sigstruct_and_attributes(hello_elf: bytes, key) -> None:
    config = EnclaveConfig(isv_prod_id=5, isv_svn=6, debug=True, ms_buf_size=2 * PAGE_SIZE)
    signed = signer.sign(layout_from_elf(hello_elf, config), key)
    assert (signed.sigstruct.isv_prod_id, signed.sigstruct.isv_svn) == (5, 6)
    assert signed.layout.attributes.flags == AttributeFlags.MODE64BIT | AttributeFlags.DEBUG
    assert signed.layout.ms_buf_size == 2 * PAGE_SIZE
    plain = layout_from_elf(hello_elf, EnclaveConfig())
    assert plain.attributes.flags == AttributeFlags.MODE64BIT


def test_building_is_reproducible_and_cached(hello_elf: bytes) -> None:
    again = build_enclave([SAMPLES_DIR / "hello" / "enclave.c"])
    assert again.read_bytes() == hello_elf
    assert layout_from_elf(hello_elf, EnclaveConfig()).mrenclave() == \
        layout_from_elf(again.read_bytes(), EnclaveConfig()).mrenclave()


def test_elves_that_cannot_become_enclaves_are_refused(hello_elf: bytes, tmp_path) -> None:
    with pytest.raises(EnclaveImageError, match="not an ELF"):
        layout_from_elf(b"MZ" + bytes(100), EnclaveConfig())
    exec_type = hello_elf[:16] + struct.pack("<H", 2) + hello_elf[18:]      # ET_EXEC
    with pytest.raises(EnclaveImageError, match="position-independent"):
        layout_from_elf(exec_type, EnclaveConfig())
    (tmp_path / "enclave.elf").write_bytes(hello_elf)
    subprocess.run(["objcopy", "--strip-all", str(tmp_path / "enclave.elf"),
                    str(tmp_path / "stripped.elf")], check=True)
    stripped = (tmp_path / "stripped.elf").read_bytes()
    with pytest.raises(EnclaveImageError, match="no `he_enclave_config` symbol"):
        layout_from_elf(stripped, EnclaveConfig())
    rela = next(s for s in ELFFile(io.BytesIO(hello_elf)).iter_sections() if s.name == ".rela.dyn")
    info_at = rela["sh_offset"] + 8                           # the first entry's r_info
    assert hello_elf[info_at:info_at + 8] == struct.pack("<Q", 8)   # R_X86_64_RELATIVE
    symbolic = hello_elf[:info_at] + struct.pack("<Q", 1 << 32 | 1) + hello_elf[info_at + 8:]
    with pytest.raises(EnclaveImageError, match="relocation type 1 .* only R_X86_64_RELATIVE"):
        layout_from_elf(symbolic, EnclaveConfig())
    source = tmp_path / "imports.c"
    source.write_text('#include "he_trts.h"\nextern char nowhere[];\n'
                      'static long f(struct he_ms *ms) { return (long)nowhere + (long)ms; }\n'
                      'HE_ECALL_TABLE(f);\n')
    with pytest.raises(EnclaveBuildError, match="undefined reference to `nowhere'"):
        build_enclave([source], cache_dir=tmp_path / "cache")


def test_a_missing_compiler_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnclaveBuildError, match="gcc"):
        build_enclave([SAMPLES_DIR / "hello" / "enclave.c"], cache_dir=tmp_path / "cache")


def test_a_missing_source_is_named(tmp_path) -> None:
    with pytest.raises(EnclaveBuildError, match="nothing.c does not exist"):
        build_enclave([tmp_path / "nothing.c"], cache_dir=tmp_path)


def test_the_c_header_agrees_with_the_signer() -> None:
    text = (GUEST_DIR / "include" / "he_edge.h").read_text()
    magic = struct.unpack("<Q", b"HECONFIG")[0]
    assert f"#define HE_CONFIG_MAGIC {magic:#x}ULL" in text
    assert re.search(rf"sizeof\(struct he_enclave_config\) == {CONFIG.size}\b", text)
    assert f"#define HE_TD_SIGNED_FIELDS {THREAD_DATA.size // 8}" in text


# ---------------------------------------------------------------- measure --layout


def test_the_mrenclave_test_vectors_match() -> None:
    assert layout_from_json({"size": 0x2000, "ssa_frame_pages": 1, "pages": []}) \
        .mrenclave().hex() == ECREATE_ONLY
    one = {"size": 0x2000, "ssa_frame_pages": 1,
           "pages": [{"offset": 0, "flags": 0x203, "measure": True, "content": "zero"}]}
    assert layout_from_json(one).mrenclave().hex() == ONE_ZERO_PAGE


def test_page_contents_are_spelled_as_documented() -> None:
    def data(content):
        raw = {"size": 0x2000, "ssa_frame_pages": 1,
               "pages": [{"offset": 0, "flags": 0x203, "measure": True, "content": content}]}
        return layout_from_json(raw).pages[0].data

    assert data("counter") == bytes(i % 256 for i in range(PAGE_SIZE))
    assert data("fill:a5") == b"\xa5" * PAGE_SIZE
    assert data({"hex": "0102"}) == b"\x01\x02" + bytes(PAGE_SIZE - 2)
    tcs = Tcs.unpack(data({"tcs": {"ossa": 0x1000, "nssa": 2, "oentry": 0x40}}))
    assert tcs == Tcs(ossa=0x1000, nssa=2, oentry=0x40, fslimit=0xFFF, gslimit=0xFFF)


def test_measuring_a_layout_agrees_with_signing_it(hello_elf: bytes, key) -> None:
    signed = signer.sign(layout_from_elf(hello_elf, EnclaveConfig()), key)
    layout = signed.layout
    raw = {"size": layout.size, "ssa_frame_pages": layout.ssa_frame_size, "pages": [
        {"offset": p.offset, "flags": p.secinfo.flags, "measure": p.measured,
         "content": {"hex": p.data.hex()}} for p in layout.pages]}
    assert layout_from_json(raw).mrenclave() == signed.mrenclave


@pytest.mark.parametrize("raw, message", [
    ({"ssa_frame_pages": 1, "pages": []}, 'has no "size"'),
    ({"size": "8192", "ssa_frame_pages": 1, "pages": []}, "size must be int"),
    ({"size": 0x3000, "ssa_frame_pages": 1, "pages": []}, "not a power of two"),
    ({"size": 0x2000, "ssa_frame_pages": 1, "pages": [{"offset": 0, "flags": 0x203}]},
     r'pages\[0\] has no "content"'),
    ({"size": 0x2000, "ssa_frame_pages": 1,
      "pages": [{"offset": 0, "flags": 0x203, "content": "fill:zz"}]}, "not fill:XX"),
    ({"size": 0x2000, "ssa_frame_pages": 1,
      "pages": [{"offset": 0, "flags": 0x203, "content": "ones"}]}, "is not \"zero\""),
    ({"size": 0x2000, "ssa_frame_pages": 1,
      "pages": [{"offset": 0, "flags": 0x903, "content": "zero"}]}, "no valid page type"),
    ({"size": 0x2000, "ssa_frame_pages": 1,
      "pages": [{"offset": 0x800, "flags": 0x203, "content": "zero"}]}, "page-aligned"),
])
def test_a_bad_layout_is_refused_naming_what_is_wrong(raw, message: str) -> None:
    with pytest.raises(EnclaveImageError, match=message):
        layout_from_json(raw)


# ---------------------------------------------------------------- command line


def test_gen_key_sign_and_measure_on_the_command_line(hello_elf: bytes, tmp_path,
                                                       capsys) -> None:
    assert signer.main(["gen-key", str(tmp_path / "key.pem")]) == 0
    key = load_signing_key(tmp_path / "key.pem")
    assert key.key_size == 3072 and key.public_key().public_numbers().e == 3
    (tmp_path / "enclave.elf").write_bytes(hello_elf)
    (tmp_path / "enclave.json").write_text('{"heap_size": 8192, "isv_svn": 2}')
    out = tmp_path / "enclave.bin"
    assert signer.main(["sign", "--key", str(tmp_path / "key.pem"), "--config",
                        str(tmp_path / "enclave.json"), str(tmp_path / "enclave.elf"),
                        str(out)]) == 0
    signed = SignedEnclave.from_bytes(out.read_bytes())
    printed = capsys.readouterr().out
    assert f"MRENCLAVE {signed.mrenclave.hex()}" in printed
    assert f"MRSIGNER  {signed.mrsigner.hex()}" in printed
    assert signed.layout.isv_svn == 2
    assert signed.mrenclave == layout_from_elf(hello_elf, EnclaveConfig(heap_size=8192)).mrenclave()
    (tmp_path / "layout.json").write_text(json.dumps(
        {"size": 0x2000, "ssa_frame_pages": 1,
         "pages": [{"offset": 0, "flags": 0x203, "measure": True, "content": "zero"}]}))
    assert signer.main(["measure", "--layout", str(tmp_path / "layout.json")]) == 0
    assert capsys.readouterr().out.strip() == ONE_ZERO_PAGE


def test_command_line_errors_are_reported_not_raised(hello_elf: bytes, tmp_path, key,
                                                     capsys) -> None:
    save_signing_key(key, tmp_path / "key.pem")
    (tmp_path / "enclave.elf").write_bytes(hello_elf)
    (tmp_path / "bad.json").write_text('{"stack": 1}')
    assert signer.main(["sign", "--key", str(tmp_path / "key.pem"), "--config",
                        str(tmp_path / "bad.json"), str(tmp_path / "enclave.elf"),
                        str(tmp_path / "out")]) == 1
    assert "unknown key(s) stack" in capsys.readouterr().err
    assert signer.main(["sign", "--key", str(tmp_path / "key.pem"),
                        str(tmp_path / "enclave.elf"), str(tmp_path / "out")]) == 2
    assert "sign needs --config CFG ELF OUT" in capsys.readouterr().err
    assert signer.main(["measure", "--layout", str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command(tmp_path) -> None:
    (tmp_path / "layout.json").write_text('{"size": 8192, "ssa_frame_pages": 1, "pages": []}')
    done = subprocess.run([sys.executable, "-m", "hyperenclave.sdk", "measure", "--layout",
                           str(tmp_path / "layout.json")], capture_output=True, text=True,
                          cwd=REPO, check=True)
    assert done.stdout.strip() == ECREATE_ONLY


def test_hyperenclave_sign_is_the_installed_console_script(tmp_path) -> None:
    assert "hyperenclave-sign = hyperenclave.sdk.signer:main" in (REPO / "setup.cfg").read_text()
    (tmp_path / "layout.json").write_text('{"size": 8192, "ssa_frame_pages": 1, "pages": []}')
    script = Path(sys.executable).with_name("hyperenclave-sign")
    done = subprocess.run([str(script), "measure", "--layout", str(tmp_path / "layout.json")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ECREATE_ONLY
