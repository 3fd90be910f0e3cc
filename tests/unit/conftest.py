"""Fixtures shared by unit tests."""

import pytest

from hyperenclave.platform.memory import MiB, PhysicalMemory


@pytest.fixture
def mem():
    """64 MiB of host-physical memory, released after the test."""
    m = PhysicalMemory(64 * MiB)
    yield m
    m.close()
