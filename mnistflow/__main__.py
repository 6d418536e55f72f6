"""`python -m mnistflow ...`: the user's commands."""

import sys

from mnistflow.cli import main

sys.exit(main())
