"""The open attestation verifier: TPM quote, event log and enclave quote against a policy."""

from .policy import Policy, PolicyError
from .verify import CHECKS, failures, verify

__all__ = ["CHECKS", "Policy", "PolicyError", "failures", "verify"]
