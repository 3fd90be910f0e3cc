"""The guest: boot loader stub, a small Linux-like kernel and user programs (real x86-64 code).

`build_guest()` compiles them with the system gcc/binutils (cached); see build.py.
"""

__all__ = ["DEFAULT_CMDLINE", "MONITOR_PATH", "GuestBuildError", "GuestImages", "ToolchainMissing",
           "build_guest", "build_initramfs", "make_initramfs", "read_initramfs"]


def __getattr__(name):   # lazy, so `python -m hyperenclave.guest.build` runs cleanly
    if name in ("make_initramfs", "read_initramfs"):
        from . import initramfs
        return getattr(initramfs, name)
    if name in __all__:
        from . import build
        return getattr(build, name)
    raise AttributeError(name)
