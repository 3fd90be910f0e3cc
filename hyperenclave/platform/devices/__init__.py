"""Emulated devices, reached by guest code only through port I/O and MMIO."""
