"""`python -m benchmarks ...` from the source checkout's root (see benchmarks/cli.py)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
