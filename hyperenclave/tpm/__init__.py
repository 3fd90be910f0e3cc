"""TPM 2.0 for emulated machines: a per-machine swtpm, its serialised client, and the
TCG event log that records what was extended into it."""

from hyperenclave.tpm.client import TpmClient, TpmError
from hyperenclave.tpm.eventlog import Event, EventLog, EventLogError, parse_eventlog, replay
from hyperenclave.tpm.swtpm import Swtpm, SwtpmDied, SwtpmError, SwtpmNotInstalled

__all__ = [
    "Event",
    "EventLog",
    "EventLogError",
    "Swtpm",
    "SwtpmDied",
    "SwtpmError",
    "SwtpmNotInstalled",
    "TpmClient",
    "TpmError",
    "parse_eventlog",
    "replay",
]
