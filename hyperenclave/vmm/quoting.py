"""The quote hypercall (HyperEnclave's EnclaveQuote, 0x8000_000d): the app hands the monitor a
REPORT its enclave made for the pseudo-QE target; the monitor checks the MAC, signs the report
body with its attestation key (measured in PCR 13) and has the TPM quote the boot chain and
PCRs 12-14 with qualifying data SHA-256(REPORTDATA). There is no quoting enclave.

Registers (HyperEnclave's): RDI = REPORT, RSI = output buffer, RDX = its size, RCX = where the
bundle's length goes (u64). RAX = 0, SGX_MAC_COMPARE_FAIL for a REPORT not MACed for the
pseudo-QE, -ENOSPC (length still written) for a short buffer, -ENODEV without a TPM anchor,
-EFAULT/-EINVAL for bad pointers or a malformed REPORT. The output is a `QuoteBundle`.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Callable

from cryptography.hazmat.primitives import serialization

from hyperenclave.tpm.attestation_ca import CA_CERT_FILE
from hyperenclave.tpm.quote import serialize_pcrs

from .hypercall import HypercallArgs, HypercallError
from .keys import PlatformKeys
from .quote import QUOTING_TARGET, EnclaveQuote, QuoteBundle, qualifying_data_for
from .sgx import Report, SgxErrorCode, SgxStructureError

if TYPE_CHECKING:
    from hyperenclave.platform.cpu import VCpu

    from .gaccess import GuestMemory
    from .tpm_anchor import AnchorKeys, MonitorTpm


def enclave_quote(cpu: "VCpu", args: HypercallArgs, guest_memory: "GuestMemory",
                  keys: PlatformKeys, anchor: "AnchorKeys | None", tpm: "MonitorTpm | None",
                  log: Callable[[str], None]) -> int:
    out, size, length_at = args.arg1, cpu.reg("rdx"), cpu.reg("rcx")
    try:
        report = Report.unpack(guest_memory.read(cpu, args.arg0, Report.SIZE, "REPORT"))
    except SgxStructureError as err:
        raise HypercallError(errno.EINVAL, f"EnclaveQuote: {err}") from None
    if not keys.verify_report_for(QUOTING_TARGET, report):
        log("EnclaveQuote: the REPORT is not MACed for the quoting target")
        return int(SgxErrorCode.SGX_MAC_COMPARE_FAIL)
    if anchor is None or tpm is None:
        raise HypercallError(errno.ENODEV, "EnclaveQuote: no TPM anchor (attestation key, AK)")
    body = report.body
    quote = tpm.quote(qualifying_data_for(body.report_data))
    pem = serialization.Encoding.PEM
    assert tpm.ak_cert is not None and tpm.ak_public_pem is not None    # enrolled at launch
    credentials = {"ak.pub.pem": tpm.ak_public_pem, "ak.crt.pem": tpm.ak_cert.public_bytes(pem),
                   "ca.crt.pem": (tpm.ca_dir / CA_CERT_FILE).read_bytes()}
    bundle = QuoteBundle({
        "enclave-quote.bin": EnclaveQuote.sign(body, anchor.attestation_key).to_bytes(),
        "quote.msg": quote.attest, "quote.sig": quote.signature,
        "pcrs.ser": serialize_pcrs(quote.pcrs), "nonce.bin": quote.nonce,
        **credentials}).to_bytes()
    guest_memory.write(cpu, length_at, struct.pack("<Q", len(bundle)), "quote length")
    if len(bundle) > size:
        raise HypercallError(errno.ENOSPC, f"EnclaveQuote: {len(bundle)} bytes do not fit the "
                             f"{size}-byte buffer")
    guest_memory.write(cpu, out, bundle, "quote buffer")
    log(f"EnclaveQuote: MRENCLAVE {body.mr_enclave.hex()} quoted ({len(bundle)} bytes)")
    return 0
