"""``python -m benchmarks.scale --clients 200 --rounds 3``: see ``benchmarks/scale/__init__.py``."""

import sys

from benchmarks.scale.cli import main

sys.exit(main())
