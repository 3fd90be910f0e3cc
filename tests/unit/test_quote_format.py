"""The enclave quote (hyperenclave/vmm/quote.py) and the TPM evidence parsers
(hyperenclave/tpm/evidence.py): exact round trips, strict refusal of anything else."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from hyperenclave.tpm.evidence import (Attest, EvidenceFormatError, Signature, read_pcrs_ser,
                                       selection_of)
from hyperenclave.tpm.quote import serialize_pcrs
from hyperenclave.vmm.quote import (BUNDLE_FILES, EnclaveQuote, QuoteBundle, QuoteFormatError,
                                    qualifying_data_for, report_data_for)
from hyperenclave.vmm.sgx import Attributes, ReportBody

KEY = ec.generate_private_key(ec.SECP256R1())
BODY = ReportBody(attributes=Attributes(5, 3), mr_enclave=b"E" * 32, mr_signer=b"S" * 32,
                  isv_prod_id=1, isv_svn=2, report_data=report_data_for(b"nonce"))


def test_a_quote_round_trips_through_bytes_and_json_and_verifies() -> None:
    quote = EnclaveQuote.sign(BODY, KEY)
    raw = quote.to_bytes()
    assert raw[:8] == b"HEQUOTE1" and raw[12:12 + 384] == BODY.pack()
    assert EnclaveQuote.from_bytes(raw) == quote
    assert EnclaveQuote.from_json(json.loads(json.dumps(quote.to_json()))) == quote
    quote.verify()
    with pytest.raises(InvalidSignature):
        dataclasses.replace(quote, body=dataclasses.replace(BODY, isv_svn=3)).verify()


@pytest.mark.parametrize("mangle, message", [
    (lambda raw: b"HEQUOTE2" + raw[8:], "magic"),
    (lambda raw: raw + b"\0", "trailing bytes"),
    (lambda raw: raw[:-1], "ends inside"),
    (lambda raw: raw[:100], "too short"),
    (lambda raw: raw[:8] + b"\2\0" + raw[10:], "version"),
    (lambda raw: raw[:12 + 384 + 2] + b"\0" + raw[12 + 384 + 3:], "SubjectPublicKeyInfo"),
    (lambda raw: raw[:12 + 300] + b"\1" + raw[12 + 301:], "reserved"),
])
def test_malformed_quotes_are_refused(mangle, message) -> None:
    with pytest.raises(QuoteFormatError, match=message):
        EnclaveQuote.from_bytes(mangle(EnclaveQuote.sign(BODY, KEY).to_bytes()))


def test_a_json_quote_must_agree_with_its_raw_bytes() -> None:
    doc = EnclaveQuote.sign(BODY, KEY).to_json()
    doc["report_body"]["isv_svn"] = 7
    with pytest.raises(QuoteFormatError, match="disagree"):
        EnclaveQuote.from_json(doc)


def test_the_nonce_binding() -> None:
    assert report_data_for(b"abc") == b"abc" + bytes(61)
    assert qualifying_data_for(report_data_for(b"abc")) == hashlib.sha256(b"abc" + bytes(61)).digest()
    with pytest.raises(ValueError, match="1 to 64 bytes"):
        report_data_for(bytes(65))


def test_pcrs_ser_reads_back_what_tpm2_quote_writes() -> None:
    values = {i: bytes([i]) * 32 for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14)}
    raw = serialize_pcrs(values)
    assert len(raw) == 132 + 4 + 2 * 532
    selection, pairs = read_pcrs_ser(raw)
    assert selection == selection_of(sorted(values)) and dict(pairs) == values
    with pytest.raises(EvidenceFormatError, match="bytes"):
        read_pcrs_ser(raw[:-1])


def test_tpm_structures_are_parsed_strictly() -> None:
    with pytest.raises(EvidenceFormatError, match="truncated"):
        Attest.parse(bytes.fromhex("ff54434780180000"))
    with pytest.raises(EvidenceFormatError, match="neither ECDSA nor RSASSA"):
        Signature.parse(bytes.fromhex("0001000b0000"))
    with pytest.raises(EvidenceFormatError, match="trailing"):
        Signature.parse(bytes.fromhex("0018000b0001aa0001bb00"))


def test_a_quote_bundle_round_trips_and_writes_the_evidence_files(tmp_path) -> None:
    files = {name: name.encode() * 3 for name in BUNDLE_FILES}
    files["enclave-quote.bin"] = EnclaveQuote.sign(BODY, KEY).to_bytes()
    raw = QuoteBundle(files).to_bytes()
    assert raw[:8] == b"HEQBND01" and QuoteBundle.from_bytes(raw).files == files
    QuoteBundle.from_bytes(raw).write(tmp_path)
    assert (tmp_path / "quote.msg").read_bytes() == b"quote.msg" * 3
    assert EnclaveQuote.from_json(json.loads((tmp_path / "enclave-quote.json").read_text())) \
        == EnclaveQuote.from_bytes(files["enclave-quote.bin"])
    with pytest.raises(QuoteFormatError, match="trailing"):
        QuoteBundle.from_bytes(raw + b"x")
    with pytest.raises(QuoteFormatError, match="ends inside"):
        QuoteBundle.from_bytes(raw[:-1])
    with pytest.raises(QuoteFormatError, match="in that order"):
        QuoteBundle({"../etc/passwd": b"", **files})

