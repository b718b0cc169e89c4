"""``python -m distil`` runs the command line."""

import sys

from distil.cli import main

sys.exit(main())
