"""The enclave SDK's host-side tools: laying out, measuring and signing enclaves (`signer`,
`image`: ELF + config -> layout, the `hyperenclave-sign` command), building them from C with the
trusted runtime in `trts/` (`build`), and the sample enclaves (`samples`)."""

from .signer import BundleError, EnclaveLayout, EnclavePage, SignedEnclave, sign

__all__ = ["BundleError", "EnclaveLayout", "EnclavePage", "SignedEnclave", "sign"]
