"""What the monitor lets the host send to the TPM once it runs (HyperEnclave's TPM lock).

The host keeps using the TPM through its CRB, but the PCRs the monitor owns (12: monitor
image, 13: monitor attestation key, 14: enclaves) can no longer be extended or reset by it,
and nothing may name a persistent handle in the monitor's range (its AK). A command is judged
from its header and handle area (TPM 2.0 Part 3 gives each command's handle count); a command
code the monitor does not know is refused rather than guessed at.
"""

from __future__ import annotations

import struct

from .objects import MONITOR_HANDLES

MONITOR_PCRS = frozenset({12, 13, 14})

TPM_RC_COMMAND_CODE = 0x143
TPM_RC_LOCALITY = 0x907          # "the command is not allowed at this locality" (a warning)
TPM_RC_HANDLE = 0x08B
TPM_RC_VALUE = 0x084
TPM_RC_P, TPM_RC_1 = 0x040, 0x100

TPM_CC_EVICT_CONTROL = 0x120
TPM_CC_PCR_EVENT, TPM_CC_PCR_RESET, TPM_CC_PCR_EXTEND = 0x13C, 0x13D, 0x182
#: Commands that would wipe or re-key what the monitor sealed and certified.
DESTRUCTIVE = {0x124: "ChangeEPS", 0x125: "ChangePPS", 0x126: "Clear", 0x12B: "PCR_Allocate"}

# Handles in the handle area, per command code (TPM 2.0 Part 3, rev 1.59); others have none.
_HANDLES: dict[int, int] = {
    0x11F: 2, 0x120: 2, 0x121: 1, 0x122: 2, 0x124: 1, 0x125: 1, 0x126: 1, 0x127: 1, 0x128: 1,
    0x129: 1, 0x12A: 1, 0x12B: 1, 0x12C: 1, 0x12D: 1, 0x12E: 1, 0x12F: 2, 0x130: 1, 0x131: 1,
    0x132: 1, 0x133: 2, 0x134: 2, 0x135: 2, 0x136: 2, 0x137: 2, 0x138: 2, 0x139: 1, 0x13A: 1,
    0x13B: 1, 0x13C: 1, 0x13D: 1, 0x13E: 1, 0x13F: 1, 0x140: 1, 0x141: 0, 0x142: 0, 0x143: 0,
    0x144: 0, 0x145: 0, 0x146: 0, 0x147: 2, 0x148: 2, 0x149: 3, 0x14A: 2, 0x14B: 2, 0x14C: 2,
    0x14D: 3, 0x14E: 2, 0x14F: 2, 0x150: 2, 0x151: 2, 0x152: 2, 0x153: 1, 0x154: 1, 0x155: 1,
    0x156: 1, 0x157: 1, 0x158: 1, 0x159: 1, 0x15B: 1, 0x15C: 1, 0x15D: 1, 0x15E: 1, 0x160: 2,
    0x161: 0, 0x162: 1, 0x163: 1, 0x164: 1, 0x165: 0, 0x167: 0, 0x168: 1, 0x169: 1, 0x16A: 1,
    0x16B: 1, 0x16C: 1, 0x16D: 1, 0x16E: 1, 0x16F: 1, 0x170: 1, 0x171: 1, 0x172: 1, 0x173: 1,
    0x174: 1, 0x176: 2, 0x177: 1, 0x178: 0, 0x179: 0, 0x17A: 0, 0x17B: 0, 0x17C: 0, 0x17D: 0,
    0x17E: 0, 0x17F: 1, 0x180: 1, 0x181: 0, 0x182: 1, 0x183: 1, 0x184: 3, 0x185: 2, 0x186: 0,
    0x187: 1, 0x188: 1, 0x189: 1, 0x18A: 0, 0x18B: 1, 0x18C: 1, 0x18D: 1, 0x18E: 0, 0x18F: 1,
    0x190: 1, 0x191: 1, 0x192: 3, 0x193: 1, 0x197: 2, 0x199: 1, 0x19A: 1,
}
_HEADER = struct.Struct(">HII")


def handle_rc(n: int) -> int:
    """TPM_RC_HANDLE for handle number n (1-based) of the handle area."""
    return TPM_RC_HANDLE | (n * TPM_RC_1)


def refusal(command: bytes) -> tuple[int, str] | None:
    """(response code, reason) if the host may not send `command`, else None.

    Malformed headers are left to the TPM, which answers them itself.
    """
    if len(command) < _HEADER.size:
        return None
    _, _, code = _HEADER.unpack_from(command)
    if code not in _HANDLES:
        return TPM_RC_COMMAND_CODE, f"command code {code:#x} is not one the monitor forwards"
    if code in DESTRUCTIVE:
        return TPM_RC_LOCALITY, f"TPM2_{DESTRUCTIVE[code]} would destroy the monitor's keys"
    count = _HANDLES[code]
    if len(command) < _HEADER.size + 4 * count:
        return None
    handles = struct.unpack_from(f">{count}I", command, _HEADER.size)
    for n, handle in enumerate(handles, 1):
        if handle in MONITOR_HANDLES:
            return handle_rc(n), f"handle {handle:#x} belongs to the monitor"
    if code in (TPM_CC_PCR_EXTEND, TPM_CC_PCR_EVENT, TPM_CC_PCR_RESET) and handles[0] in MONITOR_PCRS:
        return TPM_RC_LOCALITY, f"PCR {handles[0]} belongs to the monitor"
    if code == TPM_CC_EVICT_CONTROL:
        # persistentHandle is the first parameter, after the authorization area
        params = _HEADER.size + 8
        if len(command) >= params + 4:
            (auth_size,) = struct.unpack_from(">I", command, params)
            at = params + 4 + auth_size
            if len(command) >= at + 4:
                (persistent,) = struct.unpack_from(">I", command, at)
                if persistent in MONITOR_HANDLES:
                    return (TPM_RC_VALUE | TPM_RC_P | TPM_RC_1,
                            f"persistent handle {persistent:#x} belongs to the monitor")
    return None
