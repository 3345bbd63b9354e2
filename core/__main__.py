"""``python -m cryobuild`` is the ``cryobuild`` command."""

import sys

from .cli import main

sys.exit(main())
