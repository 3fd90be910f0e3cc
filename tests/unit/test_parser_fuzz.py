"""Parser fuzzing: everything that reads bytes a hostile host, signer or network peer wrote
answers random and mutated input with its own documented error and a message, never with
another exception (IndexError, struct.error, UnicodeDecodeError, ...). Each parser gets
random bytes and mutations (bit flips, truncations, splices) of a valid input."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperenclave.sdk.image import (EnclaveConfig, EnclaveImageError, layout_from_elf,
                                    layout_from_json)
from hyperenclave.sdk.samples import sample_bundles
from hyperenclave.sdk.signer import BundleError, SignedEnclave
from hyperenclave.tpm.eventlog import (EventLogError, encode_event, encode_event_tag,
                                       encode_spec_id_header, parse_eventlog)
from hyperenclave.tpm.evidence import Attest, EvidenceFormatError, Signature, read_pcrs_ser
from hyperenclave.tpm.quote import serialize_pcrs
from hyperenclave.verifier.policy import Policy, PolicyError
from hyperenclave.vmm import image as img
from hyperenclave.vmm.quote import BUNDLE_FILES, EnclaveQuote, QuoteBundle, QuoteFormatError
from hyperenclave.vmm.sgx import SigStruct, SgxStructureError
from hyperenclave.vmm.sigstruct import SigStructError, verify_sigstruct
from tests.unit.test_quote_format import BODY, KEY

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """A valid input with a few flipped bits, a cut, an insertion or a splice."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    how = draw(st.sampled_from(["flip", "truncate", "insert", "splice", "extend"]))
    if how == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif how == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    elif how == "splice" and data:
        at = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=64))
        data[at:at + len(chunk)] = chunk
    elif how == "extend":
        data += draw(st.binary(max_size=32))
    return bytes(data)


def inputs(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=2 * len(valid) + 64), mutated(valid))


def only(parse: Callable[[bytes], Any], data: bytes, errors: type[Exception] | tuple) -> None:
    """`parse` accepts `data` or raises one of `errors` with a message saying why."""
    try:
        parse(data)
    except errors as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"


@pytest.fixture(scope="module")
def hello_bundle() -> bytes:
    return sample_bundles()["/enclaves/hello.bin"]


@pytest.fixture(scope="module")
def hello_elf() -> bytes:
    from hyperenclave.sdk.build import build_enclave
    from hyperenclave.sdk.samples import SAMPLES_DIR
    return build_enclave([SAMPLES_DIR / "hello" / "enclave.c"]).read_bytes()


@pytest.fixture(scope="module")
def monitor_image(tmp_path_factory) -> bytes:
    return img.build_monitor_image(cache_dir=tmp_path_factory.mktemp("monitor"))


@FUZZ
@given(data=st.data())
def test_enclave_elf_images(hello_elf: bytes, data) -> None:
    only(lambda raw: layout_from_elf(raw, EnclaveConfig()), data.draw(inputs(hello_elf)),
         EnclaveImageError)


@FUZZ
@given(data=st.data())
def test_signed_bundles(hello_bundle: bytes, data) -> None:
    only(SignedEnclave.from_bytes, data.draw(inputs(hello_bundle)), BundleError)


@FUZZ
@given(data=st.data())
def test_monitor_image_header(monitor_image: bytes, data) -> None:
    raw = data.draw(st.one_of(mutated(monitor_image[:img.HE_HEADER_SIZE + 64]),
                              mutated(monitor_image), st.binary(max_size=512)))
    only(lambda r: img.MonitorImage.parse(r, len(r)), raw, img.MonitorImageError)


@FUZZ
@given(data=st.data())
def test_sigstructs(hello_bundle: bytes, data) -> None:
    sigstruct = hello_bundle[-SigStruct.SIZE:]
    raw = data.draw(inputs(sigstruct))
    only(verify_sigstruct, raw, SigStructError)
    only(SigStruct.unpack, raw, SgxStructureError)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                    | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


@FUZZ
@given(data=st.data())
def test_enclave_configs_and_layouts(data) -> None:
    doc = data.draw(JSON | st.fixed_dictionaries({}, optional={
        "heap_size": JSON, "stack_size": JSON, "tcs_count": JSON, "isv_prod_id": JSON,
        "isv_svn": JSON, "debug": JSON}))
    only(EnclaveConfig.from_json, json.dumps(doc).encode(), EnclaveImageError)
    layout = data.draw(JSON | st.fixed_dictionaries({"size": JSON, "ssa_frame_pages": JSON,
                                                     "pages": st.lists(JSON, max_size=3)}))
    only(layout_from_json, layout, EnclaveImageError)


def valid_eventlog() -> bytes:
    return (encode_spec_id_header() + encode_event(0, 8, bytes(32), b"firmware")
            + encode_event_tag(0x48454E49, b"enclave") + encode_event(12, 13, b"\x11" * 32, b"x"))


@FUZZ
@given(raw=inputs(valid_eventlog()))
def test_event_logs(raw: bytes) -> None:
    only(parse_eventlog, raw, EventLogError)


QUOTE = EnclaveQuote.sign(BODY, KEY).to_bytes()      # once: ECDSA signatures vary in length


@FUZZ
@given(data=st.data())
def test_quotes_and_evidence_files(data) -> None:
    quote = QUOTE
    only(EnclaveQuote.from_bytes, data.draw(inputs(quote)), QuoteFormatError)
    bundle = QuoteBundle({name: quote if name == "enclave-quote.bin" else name.encode()
                          for name in BUNDLE_FILES}).to_bytes()
    only(QuoteBundle.from_bytes, data.draw(inputs(bundle)), QuoteFormatError)
    pcrs = serialize_pcrs({i: bytes([i]) * 32 for i in (0, 1, 12, 13, 14)})
    only(read_pcrs_ser, data.draw(inputs(pcrs)), EvidenceFormatError)
    attest = bytes.fromhex("ff54434780180022000b") + bytes(40)
    only(Attest.parse, data.draw(inputs(attest)), EvidenceFormatError)
    only(Signature.parse, data.draw(inputs(bytes.fromhex("0018000b0001aa0001bb"))),
         EvidenceFormatError)


VALID_POLICY = {"trusted_ca_sha256": "ab" * 32, "nonce": "00112233",
                "pcr_selection": {"sha256": [0, 1, 12, 13, 14]},
                "golden_pcrs": {"12": "cd" * 32},
                "reference_digests": {"1": ["ef" * 32]},
                "allowed_enclaves": [{"mr_signer": "01" * 32}],
                "enclave": {"mr_enclave": ["02" * 32], "isv_prod_id": 1, "min_isv_svn": 2,
                            "allow_debug": False}}


def test_the_valid_policy_is_valid() -> None:
    Policy.from_json(json.loads(json.dumps(VALID_POLICY)))


@st.composite
def hostile_policy(draw) -> Any:
    """The valid policy with values replaced or keys dropped at any depth, or any JSON."""
    if draw(st.integers(0, 4)) == 0:
        return draw(JSON)
    doc = json.loads(json.dumps(VALID_POLICY))
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict)
                                       else list(range(len(node)))))
            if not isinstance(node[key], (dict, list)) or not node[key]:
                break
            node = node[key]
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if draw(st.booleans()):
                del node[key]
            else:
                node[key] = draw(JSON)
        elif isinstance(node, list) and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(JSON)
    return doc


@FUZZ
@given(doc=hostile_policy())
def test_verifier_policies(doc) -> None:
    only(Policy.from_json, doc, PolicyError)


@FUZZ
@given(text=st.text(max_size=200) | JSON.map(json.dumps))
def test_policy_files(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_text(text)
    only(Policy.load, path, PolicyError)
