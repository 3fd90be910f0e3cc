"""`python -m hyperenclave.sdk`: the `hyperenclave-sign` command."""

import sys

from .signer import main

sys.exit(main())
