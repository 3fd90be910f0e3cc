"""The open verifier: appraise an evidence directory against a policy, check by named check.

Keylime's measured-boot steps (../shared/reference/attestation-formats.md section 4) redone
strictly, plus HyperEnclave's enclave part. Each check is a function of the evidence that
raises `CheckFailed` with the reason; a check whose inputs another check could not establish
fails too ("needs ..."), so every named check is always reported. Guards against the two
tpm2-tools CVEs: TPMS_ATTEST magic and type are checked (CVE-2024-29038) and the quoted PCR
selection must equal both the requested one and the one the PCR file claims (CVE-2024-29039).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hyperenclave.tpm.eventlog import EV_EVENT_TAG, Event, EventLogError, parse_eventlog, replay
from hyperenclave.tpm.evidence import (TPM_ALG_ECDSA, TPM_ST_ATTEST_QUOTE, Attest,
                                       EvidenceFormatError, Signature, describe_selection,
                                       pcr_digest, read_pcrs_ser)
from hyperenclave.tpm.quote import TPM_ALG_SHA256, TPM_GENERATED_VALUE
from hyperenclave.vmm.quote import (EnclaveQuote, QuoteFormatError, identity_json,
                                    qualifying_data_for, report_data_for)
from hyperenclave.vmm.sgx import AttributeFlags, SgxStructureError
from hyperenclave.vmm.tpm_anchor import (ENCLAVE_PCR, MONITOR_KEY_PCR, TAG_ENCLAVE,
                                         TAG_MONITOR_KEY, EnclaveIdentity)

from .policy import Policy

CHECKS = ("ak_certificate", "quote_signature", "attest_structure", "nonce", "pcr_values",
          "eventlog_replay", "boot_measurements", "monitor_key", "enclave_launches",
          "monitor_signature", "report_policy")
VERDICT_FILE = "verdict.json"


class CheckFailed(Exception):
    """One check did not hold; the message is the reason given in the verdict."""


@dataclass
class Evidence:
    """The evidence directory, read lazily; a missing or malformed file fails the check."""

    root: Path
    _cache: dict[str, Any] = field(default_factory=dict)

    def raw(self, name: str) -> bytes:
        try:
            return (self.root / name).read_bytes()
        except OSError as err:
            raise CheckFailed(f"{name}: {err.strerror or err}") from None

    def parsed(self, name: str, parse: Callable[[bytes], Any]) -> Any:
        if name not in self._cache:
            try:
                self._cache[name] = parse(self.raw(name))
            except (ValueError, EvidenceFormatError, EventLogError, QuoteFormatError,
                    SgxStructureError) as err:
                raise CheckFailed(f"{name}: {err}") from None
        return self._cache[name]

    def cert(self, name: str) -> x509.Certificate:
        return self.parsed(name, x509.load_pem_x509_certificate)

    def ak_public(self):
        return self.parsed("ak.pub.pem", serialization.load_pem_public_key)

    def attest(self) -> Attest:
        return self.parsed("quote.msg", Attest.parse)

    def pcrs(self) -> dict[int, bytes]:
        """The PCR values the file claims, keyed by PCR (sha256 selections only)."""
        _, values = self.parsed("pcrs.ser", read_pcrs_ser)
        return dict(values)

    def events(self) -> list[Event]:
        return self.parsed("eventlog.bin", parse_eventlog)

    def enclave_quote(self) -> EnclaveQuote:
        quote = self.parsed("enclave-quote.bin", EnclaveQuote.from_bytes)
        readable = self.root / "enclave-quote.json"
        if readable.exists():
            doc = self.parsed("enclave-quote.json", json.loads)
            try:
                readable_quote = EnclaveQuote.from_json(doc)
            except QuoteFormatError as err:
                raise CheckFailed(f"enclave-quote.json: {err}") from None
            if readable_quote != quote:
                raise CheckFailed("enclave-quote.json is not enclave-quote.bin")
        return quote


def untag_event(payload: bytes, tag: int) -> bytes:
    """The data of an EV_EVENT_TAG payload ({u32 tag, u32 size, data}) that must carry `tag`."""
    if len(payload) < 8:
        raise CheckFailed(f"tagged event of {len(payload)} bytes is shorter than its header")
    got, size = struct.unpack_from("<II", payload)
    if got != tag:
        raise CheckFailed(f"event tag {got:#x}, expected {tag:#x}")
    if size != len(payload) - 8:
        raise CheckFailed(f"event tag says {size} bytes of data, it has {len(payload) - 8}")
    return payload[8:]


def launch_json(identity: EnclaveIdentity) -> dict[str, Any]:
    """A PCR 14 launch event, readable."""
    return identity_json(identity.mr_enclave, identity.mr_signer, identity.flags, identity.xfrm,
                         identity.isv_prod_id, identity.isv_svn)


class Verifier:
    """Runs every check of CHECKS on one evidence directory."""

    def __init__(self, evidence_dir: Path, policy: Policy,
                 now: datetime.datetime | None = None) -> None:
        self.ev = Evidence(Path(evidence_dir))
        self.policy = policy
        self.now = now or datetime.datetime.now(datetime.timezone.utc)
        self.details: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        results = []
        for name in CHECKS:
            try:
                detail = getattr(self, f"check_{name}")()
                results.append({"name": name, "ok": True, "detail": detail})
            except CheckFailed as err:
                results.append({"name": name, "ok": False, "reason": str(err)})
        ok = all(r["ok"] for r in results)
        return {"verdict": "pass" if ok else "fail", "ok": ok,
                "evidence": str(self.ev.root), "checks": results, **self.details}

    # ------------------------------------------------------------------ TPM side
    def check_ak_certificate(self) -> str:
        ca, ak = self.ev.cert("ca.crt.pem"), self.ev.cert("ak.crt.pem")
        fingerprint = ca.fingerprint(hashes.SHA256())
        if fingerprint != self.policy.trusted_ca_sha256:
            raise CheckFailed(f"ca.crt.pem (sha256 {fingerprint.hex()}) is not the trusted "
                              "attestation CA")
        try:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise CheckFailed("the CA certificate has no basicConstraints") from None
        if not constraints.ca:
            raise CheckFailed("the CA certificate is not a CA (basicConstraints CA:FALSE)")
        try:
            ak.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as err:
            raise CheckFailed(f"the AK certificate is not issued by the CA: "
                              f"{err or 'bad signature'}") from None
        if not ak.not_valid_before_utc <= self.now <= ak.not_valid_after_utc:
            raise CheckFailed(f"the AK certificate is not valid now ({ak.not_valid_before_utc} "
                              f"to {ak.not_valid_after_utc})")
        der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if ak.public_key().public_bytes(*der) != self.ev.ak_public().public_bytes(*der):
            raise CheckFailed("ak.pub.pem is not the key of the AK certificate")
        return f"AK {ak.subject.rfc4514_string()} issued by {ca.subject.rfc4514_string()}"

    def check_quote_signature(self) -> str:
        key, msg = self.ev.ak_public(), self.ev.raw("quote.msg")
        sig = self.ev.parsed("quote.sig", Signature.parse)
        if sig.hash_alg != TPM_ALG_SHA256:
            raise CheckFailed(f"signature hash {sig.hash_alg:#x}, expected sha256")
        try:
            if sig.sig_alg == TPM_ALG_ECDSA:
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    raise CheckFailed("an ECDSA signature, but the AK is not an EC key")
                r, s = (int.from_bytes(p, "big") for p in sig.parts)
                key.verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
            else:
                if not isinstance(key, rsa.RSAPublicKey):
                    raise CheckFailed("an RSASSA signature, but the AK is not an RSA key")
                key.verify(sig.parts[0], msg, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise CheckFailed("quote.sig is not the AK's signature over quote.msg") from None
        return "ecdsa-sha256" if sig.sig_alg == TPM_ALG_ECDSA else "rsassa-sha256"

    def check_attest_structure(self) -> str:
        attest = self.ev.attest()
        if attest.magic != TPM_GENERATED_VALUE:
            raise CheckFailed(f"magic {attest.magic:#010x} is not TPM_GENERATED_VALUE "
                              f"{TPM_GENERATED_VALUE:#010x}: not produced by the TPM")
        if attest.type != TPM_ST_ATTEST_QUOTE:
            raise CheckFailed(f"type {attest.type:#06x} is not TPM_ST_ATTEST_QUOTE")
        if attest.pcr_select != self.policy.pcr_selection:
            raise CheckFailed(f"quoted PCR selection {describe_selection(attest.pcr_select)} is "
                              f"not the requested {describe_selection(self.policy.pcr_selection)}")
        return describe_selection(attest.pcr_select)

    def check_nonce(self) -> str:
        expected = qualifying_data_for(report_data_for(self.policy.nonce))
        nonce_file, extra = self.ev.raw("nonce.bin"), self.ev.attest().extra_data
        if extra != nonce_file:
            raise CheckFailed(f"the quote's qualifying data {extra.hex()} is not nonce.bin")
        if extra != expected:
            raise CheckFailed(f"qualifying data {extra.hex()} is not SHA-256(REPORTDATA of the "
                              f"challenge {self.policy.nonce.hex()}): stale or replayed evidence")
        return f"qualifying data {extra.hex()}"

    def check_pcr_values(self) -> str:
        attest = self.ev.attest()
        selection, values = self.ev.parsed("pcrs.ser", read_pcrs_ser)
        if selection != attest.pcr_select:
            raise CheckFailed(f"pcrs.ser claims PCRs {describe_selection(selection)}, the quote "
                              f"covers {describe_selection(attest.pcr_select)}")
        if pcr_digest([v for _, v in values]) != attest.pcr_digest:
            raise CheckFailed("the quote's pcrDigest is not the digest of the values in pcrs.ser")
        if (self.ev.root / "pcrs.json").exists():
            doc = self.ev.parsed("pcrs.json", json.loads).get("sha256", {})
            for pcr, value in values:
                if str(pcr) in doc and doc[str(pcr)] != value.hex():
                    raise CheckFailed(f"pcrs.json PCR {pcr} is not the quoted value")
        self.details["pcrs"] = {str(p): v.hex() for p, v in values}
        return f"{len(values)} PCR values match the quoted digest"

    def _quoted(self) -> dict[int, bytes]:
        """PCR values established by the quote (signature, structure and digest checked)."""
        for need in ("quote_signature", "attest_structure", "pcr_values"):
            try:
                getattr(self, f"check_{need}")()
            except CheckFailed:
                raise CheckFailed(f"needs {need}") from None
        return self.ev.pcrs()

    def check_eventlog_replay(self) -> str:
        quoted = self._quoted()
        replayed = replay(self.ev.events())
        for pcr, value in sorted(quoted.items()):
            got = replayed.get(pcr, bytes(32))
            if got != value:
                raise CheckFailed(f"event log replays PCR {pcr} to {got.hex()}, the quote says "
                                  f"{value.hex()}")
        return f"{len(self.ev.events())} events replay to the {len(quoted)} quoted PCRs"

    def _logged(self, pcr: int) -> list[Event]:
        """The events of `pcr`, from a log the quote vouches for."""
        try:
            self.check_eventlog_replay()
        except CheckFailed:
            raise CheckFailed("needs eventlog_replay") from None
        return [e for e in self.ev.events() if e.pcr == pcr]

    def check_boot_measurements(self) -> str:
        """Every golden PCR and every reference digest, all mismatches reported at once (a
        tampered initramfs carrying a tampered monitor shows in PCR 9 and PCR 12)."""
        quoted = self._quoted()
        wrong = [f"PCR {pcr} is {quoted[pcr].hex()}, the golden value is {golden.hex()}"
                 for pcr, golden in sorted(self.policy.golden_pcrs.items())
                 if quoted[pcr] != golden]
        for pcr, allowed in sorted(self.policy.reference_digests.items()):
            events = self._logged(pcr)
            if not events:
                wrong.append(f"no event in PCR {pcr}, which has reference values")
            wrong += [f"PCR {pcr} event at log offset {event.offset} (type "
                      f"{event.event_type:#x}) has digest {event.digest.hex()}, not a reference "
                      "value" for event in events if event.digest not in allowed]
        if wrong:
            raise CheckFailed("; ".join(wrong))
        return (f"{len(self.policy.golden_pcrs)} golden PCRs, reference digests for PCRs "
                f"{sorted(self.policy.reference_digests)}")

    def check_monitor_key(self) -> str:
        events = self._logged(MONITOR_KEY_PCR)
        if len(events) != 1:
            raise CheckFailed(f"{len(events)} events in PCR {MONITOR_KEY_PCR}, expected exactly "
                              "one (the monitor key)")
        key = self._tagged(events[0], TAG_MONITOR_KEY)
        if key != self._quote().monitor_key:
            raise CheckFailed(f"the monitor key measured in PCR {MONITOR_KEY_PCR} "
                              f"({hashlib.sha256(key).hexdigest()[:16]}...) did not sign the "
                              "enclave quote")
        return f"monitor key sha256 {hashlib.sha256(key).hexdigest()}"

    def check_enclave_launches(self) -> str:
        launched = []
        for event in self._logged(ENCLAVE_PCR):
            try:
                launched.append(EnclaveIdentity.unpack(self._tagged(event, TAG_ENCLAVE)))
            except ValueError as err:
                raise CheckFailed(f"PCR {ENCLAVE_PCR} event at offset {event.offset}: {err}") from None
        self.details["launched_enclaves"] = [launch_json(i) for i in launched]
        allowed = self.policy.allowed_enclaves
        if allowed is not None:
            for i, identity in enumerate(launched):
                if not any(getattr(identity, key) == value for key, value in allowed):
                    raise CheckFailed(f"launch {i}: enclave MRENCLAVE {identity.mr_enclave.hex()}"
                                      f" MRSIGNER {identity.mr_signer.hex()} is not allowed")
        body = self._quote().body
        quoted = EnclaveIdentity(body.mr_enclave, body.mr_signer, body.attributes.flags,
                                 body.attributes.xfrm, body.isv_prod_id, body.isv_svn)
        if quoted not in launched:
            raise CheckFailed(f"the quoted enclave {body.mr_enclave.hex()} is not among the "
                              f"{len(launched)} launches measured in PCR {ENCLAVE_PCR}")
        return f"{len(launched)} enclave launch(es) since boot"

    def _tagged(self, event: Event, tag: int) -> bytes:
        if event.event_type != EV_EVENT_TAG:
            raise CheckFailed(f"PCR {event.pcr} event at offset {event.offset} is type "
                              f"{event.event_type:#x}, not EV_EVENT_TAG")
        try:
            data = untag_event(event.data, tag)
        except CheckFailed as err:
            raise CheckFailed(f"PCR {event.pcr} event at offset {event.offset}: {err}") from None
        if hashlib.sha256(data).digest() != event.digest:
            raise CheckFailed(f"PCR {event.pcr} event at offset {event.offset}: the digest is "
                              "not SHA-256 of its data")
        return data

    # ------------------------------------------------------------------ enclave side
    def _quote(self) -> EnclaveQuote:
        quote = self.ev.enclave_quote()
        self.details["enclave"] = quote.to_json()["report_body"]
        return quote

    def check_monitor_signature(self) -> str:
        try:
            self._quote().verify()
        except InvalidSignature:
            raise CheckFailed("the report body is not signed by the quote's monitor key") from None
        return "report body signed by the monitor key"

    def check_report_policy(self) -> str:
        body, p = self._quote().body, self.policy.enclave
        if not (body.mr_enclave in p.mr_enclave or body.mr_signer in p.mr_signer):
            raise CheckFailed(f"neither MRENCLAVE {body.mr_enclave.hex()} nor MRSIGNER "
                              f"{body.mr_signer.hex()} is allowed")
        if p.isv_prod_id is not None and body.isv_prod_id != p.isv_prod_id:
            raise CheckFailed(f"ISVPRODID {body.isv_prod_id}, expected {p.isv_prod_id}")
        if body.isv_svn < p.min_isv_svn:
            raise CheckFailed(f"ISVSVN {body.isv_svn} is below the minimum {p.min_isv_svn}")
        if body.attributes.flags & AttributeFlags.DEBUG and not p.allow_debug:
            raise CheckFailed("a DEBUG enclave, and the policy does not allow debug enclaves")
        if not body.attributes.flags & AttributeFlags.INIT:
            raise CheckFailed("ATTRIBUTES.INIT is clear: not a report of an initialized enclave")
        if body.report_data != report_data_for(self.policy.nonce):
            raise CheckFailed("REPORTDATA does not carry the verifier's nonce")
        return f"MRENCLAVE {body.mr_enclave.hex()} ISVSVN {body.isv_svn}"


def failures(verdict: dict[str, Any]) -> dict[str, str]:
    """The failed checks of a verdict: {name: reason}."""
    return {c["name"]: c.get("reason", "") for c in verdict["checks"] if not c["ok"]}


def verify(evidence_dir: Path, policy: Policy, *, write: bool = True,
           now: datetime.datetime | None = None) -> dict[str, Any]:
    """Appraise `evidence_dir`; the verdict, also written to EVIDENCE_DIR/verdict.json."""
    verdict = Verifier(Path(evidence_dir), policy, now).run()
    if write:
        (Path(evidence_dir) / VERDICT_FILE).write_text(json.dumps(verdict, indent=2) + "\n")
    return verdict
