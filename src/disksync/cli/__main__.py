"""``python -m disksync.cli``: the same entry point as the ``disksync`` script."""

import sys

from disksync.cli import main

sys.exit(main())
