"""The emulated PC: host-physical memory, the vCPU (Unicorn), devices and firmware.

Knows nothing of the monitor: the vCPU exposes a second-stage translation hook that `vmm/`
plugs into when it launches.
"""
