"""The appraisal policy of the verifier (RFC 9334's "Appraisal Policy for Evidence"), from JSON.

    {
      "trusted_ca_sha256": "<hex>",        SHA-256 of the DER attestation-CA certificate the AK
                                           certificate must chain to (required)
      "nonce": "<hex>",                    the verifier's challenge, 1-64 bytes (required): the
                                           enclave's REPORTDATA and, hashed, the TPM quote's
                                           qualifying data (hyperenclave/vmm/quote.py)
      "pcr_selection": {"sha256": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14]},
                                           exactly what the TPM quote must cover (required;
                                           must include 13 and 14)
      "golden_pcrs": {"0": "<hex>", ...},  optional: exact quoted values
      "reference_digests": {"9": ["<hex>", ...], ...},
                                           optional: every event extended into that PCR must
                                           carry one of these digests (kernel, initramfs,
                                           command line, monitor image ...), and there must be one
      "allowed_enclaves": [{"mr_enclave": "<hex>"} | {"mr_signer": "<hex>"}, ...],
                                           optional: every enclave launched since boot (PCR 14)
                                           must match an entry
      "enclave": {                         the quoted enclave (required)
        "mr_enclave": ["<hex>", ...],      allowed MRENCLAVEs and/or
        "mr_signer": ["<hex>", ...],       allowed MRSIGNERs (at least one of the two lists)
        "isv_prod_id": 0,                  optional exact ISVPRODID
        "min_isv_svn": 0,                  optional
        "allow_debug": false               DEBUG enclaves refused unless true
      }
    }

Unknown keys are errors (a typo must not silently weaken the policy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperenclave.tpm.evidence import TPM_ALG_SHA256, PcrSelection, selection_of
from hyperenclave.vmm.quote import REPORT_DATA_SIZE
from hyperenclave.vmm.tpm_anchor import ENCLAVE_PCR, MONITOR_KEY_PCR


class PolicyError(ValueError):
    """A policy that cannot be applied; the message names the key."""


def _hex(value: Any, key: str, size: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise PolicyError(f"{key}: {value!r} is not a hex string") from None
    if size is not None and len(raw) != size:
        raise PolicyError(f"{key}: {len(raw)} bytes, expected {size}")
    return raw


def _only(doc: dict[str, Any], allowed: set[str], where: str) -> None:
    if not isinstance(doc, dict):
        raise PolicyError(f"{where}: expected a JSON object")
    unknown = set(doc) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _typed(value: Any, kind: type, key: str) -> Any:
    """`value` if it is a JSON `kind` (list or object), else the error naming `key`."""
    if not isinstance(value, kind):
        raise PolicyError(f"{key}: expected a JSON {'array' if kind is list else 'object'}")
    return value


def _pcr(key: str, where: str) -> int:
    try:
        pcr = int(key)
    except ValueError:
        raise PolicyError(f"{where}: PCR {key!r} is not a number") from None
    if not 0 <= pcr < 24:
        raise PolicyError(f"{where}: PCR {pcr} is not 0-23")
    return pcr


@dataclass(frozen=True)
class EnclavePolicy:
    mr_enclave: frozenset[bytes]
    mr_signer: frozenset[bytes]
    isv_prod_id: int | None
    min_isv_svn: int
    allow_debug: bool


@dataclass(frozen=True)
class Policy:
    trusted_ca_sha256: bytes
    nonce: bytes
    pcr_selection: PcrSelection
    enclave: EnclavePolicy
    golden_pcrs: dict[int, bytes] = field(default_factory=dict)
    reference_digests: dict[int, frozenset[bytes]] = field(default_factory=dict)
    allowed_enclaves: tuple[tuple[str, bytes], ...] | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Policy:
        _only(doc, {"trusted_ca_sha256", "nonce", "pcr_selection", "golden_pcrs",
                    "reference_digests", "allowed_enclaves", "enclave"}, "policy")
        for key in ("trusted_ca_sha256", "nonce", "pcr_selection", "enclave"):
            if key not in doc:
                raise PolicyError(f"policy: {key} is required")
        nonce = _hex(doc["nonce"], "nonce")
        if not 0 < len(nonce) <= REPORT_DATA_SIZE:
            raise PolicyError(f"nonce: 1 to {REPORT_DATA_SIZE} bytes, not {len(nonce)}")
        sel = doc["pcr_selection"]
        _only(sel, {"sha256"}, "pcr_selection")
        pcrs = sel.get("sha256")
        if not isinstance(pcrs, list) or not pcrs or \
                not all(isinstance(p, (int, str)) for p in pcrs) or len(set(pcrs)) != len(pcrs):
            raise PolicyError("pcr_selection.sha256: a non-empty list of distinct PCRs")
        pcrs = [_pcr(str(p), "pcr_selection.sha256") for p in pcrs]
        if not {MONITOR_KEY_PCR, ENCLAVE_PCR} <= set(pcrs):
            raise PolicyError(f"pcr_selection.sha256 must include PCRs {MONITOR_KEY_PCR} and "
                              f"{ENCLAVE_PCR} (monitor key, enclave launches)")
        golden = {_pcr(k, "golden_pcrs"): _hex(v, f"golden_pcrs.{k}", 32)
                  for k, v in _typed(doc.get("golden_pcrs", {}), dict, "golden_pcrs").items()}
        refs: dict[int, frozenset[bytes]] = {}
        for k, digests in _typed(doc.get("reference_digests", {}), dict,
                                 "reference_digests").items():
            if not isinstance(digests, list) or not digests:
                raise PolicyError(f"reference_digests.{k}: a non-empty list of digests")
            refs[_pcr(k, "reference_digests")] = frozenset(
                _hex(d, f"reference_digests.{k}", 32) for d in digests)
        for pcr in list(golden) + list(refs):
            if pcr not in pcrs:
                raise PolicyError(f"PCR {pcr} has reference values but is not in pcr_selection")
        allowed = None
        if "allowed_enclaves" in doc:
            entries = []
            for i, entry in enumerate(_typed(doc["allowed_enclaves"], list, "allowed_enclaves")):
                _only(entry, {"mr_enclave", "mr_signer"}, f"allowed_enclaves[{i}]")
                if len(entry) != 1:
                    raise PolicyError(f"allowed_enclaves[{i}]: one of mr_enclave, mr_signer")
                (key, value), = entry.items()
                entries.append((key, _hex(value, f"allowed_enclaves[{i}].{key}", 32)))
            allowed = tuple(entries)
        e = doc["enclave"]
        _only(e, {"mr_enclave", "mr_signer", "isv_prod_id", "min_isv_svn", "allow_debug"},
              "enclave")
        lists = {k: frozenset(_hex(v, f"enclave.{k}", 32)
                              for v in _typed(e.get(k, []), list, f"enclave.{k}"))
                 for k in ("mr_enclave", "mr_signer")}
        if not lists["mr_enclave"] and not lists["mr_signer"]:
            raise PolicyError("enclave: give allowed mr_enclave and/or mr_signer values")
        prod, svn, debug = e.get("isv_prod_id"), e.get("min_isv_svn", 0), e.get("allow_debug", False)
        if prod is not None and not (isinstance(prod, int) and 0 <= prod < 1 << 16):
            raise PolicyError(f"enclave.isv_prod_id: {prod!r} is not a u16")
        if not (isinstance(svn, int) and 0 <= svn < 1 << 16):
            raise PolicyError(f"enclave.min_isv_svn: {svn!r} is not a u16")
        if not isinstance(debug, bool):
            raise PolicyError("enclave.allow_debug: true or false")
        return cls(_hex(doc["trusted_ca_sha256"], "trusted_ca_sha256", 32), nonce,
                   selection_of(pcrs, TPM_ALG_SHA256),
                   EnclavePolicy(lists["mr_enclave"], lists["mr_signer"], prod, svn, debug),
                   golden, refs, allowed)

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise PolicyError(f"{path}: {err}") from None
        return cls.from_json(doc)
