"""``python -m distil.cli`` runs the command line, like ``python -m distil``."""

import sys

from distil.cli import main

sys.exit(main())
