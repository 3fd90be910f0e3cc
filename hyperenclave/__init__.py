"""hyperenclave: a full-system emulator of a Type-1.5 hypervisor TEE in the style of HyperEnclave."""

__version__ = "0.1.0"
