"""The SDK signer: enclave layouts, MRENCLAVE, SIGSTRUCT and the HEENCL01 bundle format."""

from __future__ import annotations

import re
import struct
from dataclasses import replace

import pytest

from hyperenclave.guest.build import GUEST_DIR
from hyperenclave.sdk import BundleError, EnclaveLayout, EnclavePage, SignedEnclave, sign
from hyperenclave.sdk import signer
from hyperenclave.vmm.sgx import PAGE_SIZE, PageFlags, PageType, SigStruct, Tcs
from hyperenclave.vmm.sigstruct import (generate_signing_key, mrsigner, save_signing_key,
                                        verify_sigstruct)

R, W, X = PageFlags.R, PageFlags.W, PageFlags.X


@pytest.fixture(scope="module")
def key():
    return generate_signing_key()


def test_simple_lays_out_code_data_and_a_tcs_with_ssa_frames_per_thread() -> None:
    layout = EnclaveLayout.simple(b"\xcc" * 5000, b"data", threads=2, ssa_frame_size=2)
    kinds = [(p.offset, p.page_type, p.flags) for p in layout.pages]
    ssa = [(PageType.PT_REG, R | W)] * 4                   # 2 frames of 2 pages
    assert [(t, f) for _, t, f in kinds] == [(PageType.PT_REG, R | X)] * 2 + [
        (PageType.PT_REG, R | W)] + ([(PageType.PT_TCS, PageFlags(0))] + ssa) * 2
    assert [offset for offset, _, _ in kinds] == [i * PAGE_SIZE for i in range(13)]
    tcs = [Tcs.unpack(p.data) for p in layout.pages if p.page_type == PageType.PT_TCS]
    assert [(t.ossa, t.nssa, t.oentry) for t in tcs] == [(0x4000, 2, 0), (0x9000, 2, 0)]
    assert layout.size == 0x10000 and layout.ssa_frame_size == 2
    code = layout.pages[0].data + layout.pages[1].data
    assert code == b"\xcc" * 5000 + bytes(2 * PAGE_SIZE - 5000)
    assert layout.pages[2].data == b"data" + bytes(PAGE_SIZE - 4)


def test_sign_vouches_for_the_layouts_mrenclave(key) -> None:
    layout = EnclaveLayout.simple(b"code", isv_prod_id=7, isv_svn=3)
    signed = sign(layout, key)
    verify_sigstruct(signed.sigstruct)
    assert signed.mrenclave == layout.mrenclave() == signed.sigstruct.enclave_hash
    assert signed.mrsigner == mrsigner(signed.sigstruct)
    assert (signed.sigstruct.isv_prod_id, signed.sigstruct.isv_svn) == (7, 3)
    assert signed.sigstruct.attributes == layout.attributes


def test_mrenclave_covers_contents_only_of_measured_pages() -> None:
    layout = EnclaveLayout.simple(b"code")
    first = replace(layout.pages[0], measured=False)
    unmeasured = replace(layout, pages=[first] + layout.pages[1:])
    changed = replace(unmeasured, pages=[replace(unmeasured.pages[0], data=bytes(PAGE_SIZE))]
                      + unmeasured.pages[1:])
    assert unmeasured.mrenclave() != layout.mrenclave()
    assert changed.mrenclave() == unmeasured.mrenclave()


def test_the_bundle_has_the_documented_layout_and_round_trips(key) -> None:
    signed = sign(EnclaveLayout.simple(b"code", b"data", ms_buf_size=0x2000), key)
    raw = signed.to_bytes()
    n = len(signed.layout.pages)
    assert len(raw) == 64 + n * (24 + PAGE_SIZE) + SigStruct.SIZE
    magic, size, ms_buf, flags, xfrm, ssa, misc, count = struct.unpack_from("<8sQQQQIII", raw)
    assert (magic, size, ms_buf, flags, xfrm, ssa, misc, count) == (
        b"HEENCL01", signed.layout.size, 0x2000, 4, 3, 1, 0, n)
    offset, secinfo, measured = struct.unpack_from("<QQQ", raw, 64 + 24 * 2)   # the TCS
    assert (offset, secinfo, measured) == (0x2000, PageType.PT_TCS << 8, 1)
    assert raw[64 + 24 * n:64 + 24 * n + 4] == b"code"
    assert raw[-SigStruct.SIZE:] == signed.sigstruct.pack()
    assert SignedEnclave.from_bytes(raw) == signed


def test_the_c_header_agrees_with_the_python_format() -> None:
    text = (GUEST_DIR / "include" / "he_enclave_file.h").read_text()
    assert f'#define HE_ENCLAVE_FILE_MAGIC "{signer.MAGIC.decode()}"' in text
    assert re.search(rf"sizeof\(struct he_enclave_file_header\) == {signer.HEADER.size}\b", text)
    assert re.search(rf"sizeof\(struct he_enclave_file_page\) == {signer.ENTRY.size}\b", text)
    assert f"#define HE_ENCLAVE_PAGE_MEASURED {signer.PAGE_MEASURED}" in text


@pytest.mark.parametrize("mangle, message", [
    (lambda raw: raw[:40], "not an enclave bundle"),
    (lambda raw: b"HEENCL02" + raw[8:], "not an enclave bundle"),
    (lambda raw: raw[:-1], "pages make a bundle of"),
    (lambda raw: raw[:72] + struct.pack("<Q", 0x7 << 8) + raw[80:], "PAGE_TYPE"),
])
def test_from_bytes_refuses_what_is_not_a_bundle(key, mangle, message: str) -> None:
    raw = sign(EnclaveLayout.simple(b"code"), key).to_bytes()
    with pytest.raises(BundleError, match=message):
        SignedEnclave.from_bytes(mangle(raw))


@pytest.mark.parametrize("size, offsets, message", [
    (0x3000, [0], "not a power of two"),
    (0x2000, [0x2000], "outside"),
    (0x2000, [0x1000, 0x1000], "two pages"),
])
def test_layouts_ecreate_or_eadd_would_refuse_are_rejected(size: int, offsets: list[int],
                                                           message: str) -> None:
    pages = [EnclavePage(o, PageType.PT_REG, R, bytes(PAGE_SIZE)) for o in offsets]
    with pytest.raises(ValueError, match=message):
        EnclaveLayout(size, pages).mrenclave()


def test_a_page_must_be_one_aligned_page() -> None:
    with pytest.raises(ValueError, match="page-aligned"):
        EnclavePage(0x800, PageType.PT_REG, R, bytes(PAGE_SIZE))
    with pytest.raises(ValueError, match="4095 bytes"):
        EnclavePage(0, PageType.PT_REG, R, bytes(PAGE_SIZE - 1))


def test_the_command_line_signs_and_shows_a_bundle(key, tmp_path, capsys) -> None:
    save_signing_key(key, tmp_path / "key.pem")
    (tmp_path / "code.bin").write_bytes(b"\x90" * 100)
    out = tmp_path / "enclave.heencl"
    assert signer.main(["sign", "--key", str(tmp_path / "key.pem"), "--code",
                        str(tmp_path / "code.bin"), "--isv-svn", "2", str(out)]) == 0
    signed = SignedEnclave.from_bytes(out.read_bytes())
    assert signed.layout.isv_svn == 2
    assert signer.main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"MRENCLAVE {signed.mrenclave.hex()}" in shown
    assert "0x00000000 PT_REG  r-x measured" in shown and "PT_TCS  --- measured" in shown
    out.write_bytes(SignedEnclave(EnclaveLayout.simple(b"other"), signed.sigstruct).to_bytes())
    assert signer.main(["show", str(out)]) == 1
