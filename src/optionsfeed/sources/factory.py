"""The source named by the settings (`--source`)."""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from .base import Source
from .replay import ReplaySource, parse_speed
from .sim.source import SimSource

REPLAY_PREFIX = "replay:"


def open_source(settings: Settings) -> Source:
    """`sim` (the default) or `replay:FILE` (with `--speed`)."""
    if settings.source.startswith(REPLAY_PREFIX):
        path = Path(settings.source.removeprefix(REPLAY_PREFIX))
        return ReplaySource(path, speed=parse_speed(settings.speed))
    return SimSource(list(settings.underlyings), rate=settings.rate, seed=settings.seed)
