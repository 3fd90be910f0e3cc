"""`python -m hyperenclave.tools.console` = `hyperenclave-console`."""

import sys

from .cli import main

sys.exit(main())
