"""python -m hyperenclave.verifier EVIDENCE_DIR --policy FILE (the hyperenclave-verify script)."""

import sys

from .cli import main

sys.exit(main())
