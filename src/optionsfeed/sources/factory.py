"""The source named by the settings (`--source`)."""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from .base import Source
from .replay import ReplaySource, parse_speed
from .sim.source import SimSource

REPLAY_PREFIX = "replay:"


def open_source(settings: Settings) -> Source:
    """`sim` (the default), `deribit`, `massive` or `replay:FILE` (with `--speed`)."""
    if settings.source.startswith(REPLAY_PREFIX):
        path = Path(settings.source.removeprefix(REPLAY_PREFIX))
        return ReplaySource(path, speed=parse_speed(settings.speed))
    underlyings = list(settings.underlyings_for())
    if settings.source == "deribit":
        from .deribit.source import DeribitSource
        from .feed import FeedBuffer

        buffer = FeedBuffer(rest_ratio=settings.rest_ratio)
        return DeribitSource(underlyings, url=settings.deribit_url, buffer=buffer)
    if settings.source == "massive":
        from .massive.source import MassiveSource

        if not settings.massive_api_key:
            raise ConfigError("--source massive needs an API key: set OPTIONSFEED_MASSIVE_API_KEY")
        return MassiveSource(
            underlyings,
            api_key=settings.massive_api_key,
            ws_url=settings.massive_url,
            rest_url=settings.massive_rest_url,
            max_contracts=settings.max_contracts,
            rest_ratio=settings.rest_ratio,
        )
    return SimSource(underlyings, rate=settings.rate, seed=settings.seed)
