"""Shared fixtures: guest images are built once per test session (cached by content hash)."""

from __future__ import annotations

import pytest

from hyperenclave.platform.firmware.measured_boot import BootImages


@pytest.fixture(scope="session")
def guest_images() -> BootImages:
    from hyperenclave.guest.build import build_guest
    built = build_guest()
    return BootImages(built.loader.read_bytes(), built.kernel.read_bytes(), built.initramfs.read_bytes())
