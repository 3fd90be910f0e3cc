"""Shared fixtures: guest images are built once per test session (cached by content hash)."""

from __future__ import annotations

import pytest

from hyperenclave.platform.firmware.measured_boot import BootImages


@pytest.fixture(scope="session")
def guest_images() -> BootImages:
    """The default guest with this monitor's image at /lib/firmware/hyperenclave-monitor.bin."""
    from hyperenclave.machine import default_boot_images
    return default_boot_images()
