"""The enclave SDK's host-side tools: laying out, measuring and signing enclaves (`signer`)."""

from .signer import BundleError, EnclaveLayout, EnclavePage, SignedEnclave, sign

__all__ = ["BundleError", "EnclaveLayout", "EnclavePage", "SignedEnclave", "sign"]
