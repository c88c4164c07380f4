"""The browser dashboard: static files served by the gateway (no build step, no CDN)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

STATIC = Path(str(importlib.resources.files(__package__).joinpath("static")))
