"""Settings: one typed object, from flags over OPTIONSFEED_* variables over defaults.

An OPTIONSFEED_* variable that names no setting is an error, so a typo does not
silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "OPTIONSFEED_"
UNDERLYING_RE = re.compile(r"^[A-Z0-9.^/-]{1,12}$")


def _underlyings(value: str) -> tuple[str, ...]:
    items = tuple(s.strip().upper() for s in value.split(",") if s.strip())
    if not items:
        raise ValueError("at least one underlying is needed")
    for s in items:
        if not UNDERLYING_RE.match(s):
            raise ValueError(f"{s!r} is not an underlying symbol ([A-Z0-9.^/-], 1-12 characters)")
    if len(set(items)) != len(items):
        raise ValueError("an underlying is listed twice")
    return items


def _positive(kind: type[int] | type[float]) -> Any:
    def conv(value: str) -> int | float:
        v = kind(value)
        if v <= 0:
            raise ValueError("must be positive")
        return v

    return conv


def _non_negative(value: str) -> float:
    v = float(value)
    if not v >= 0.0:  # also refuses NaN
        raise ValueError("must be 0 or more")
    return v


def _share(value: str) -> float:
    v = float(value)
    if not 0.0 < v <= 1.0:  # also refuses NaN
        raise ValueError("must be more than 0 and at most 1")
    return v


def _port(value: str) -> int:
    v = int(value)
    if not 0 <= v <= 65535:
        raise ValueError("must be 0-65535")
    return v


def _standbys(value: str) -> int:
    v = int(value)
    if v < 0:
        raise ValueError("must be 0 or more")
    return v


def _broker_url(value: str) -> str:
    if not re.match(r"^(redis|rediss|unix|memory|redis\+cluster|rediss\+cluster)://", value):
        raise ValueError(
            "must be a redis://, rediss://, unix://, redis+cluster://, rediss+cluster:// "
            "or memory:// URL"
        )
    return value


def _log_level(value: str) -> str:
    v = value.upper()
    if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return v


SOURCES = ("sim", "deribit", "massive")
# What each source streams when `--underlyings` is not given. The simulator's are the
# underlyings it has hand-made parameters for (`sources/sim/universe.py`); written out
# here, as the venues' are, because settings sit below the sources they configure.
SOURCE_UNDERLYINGS: dict[str, tuple[str, ...]] = {
    "sim": ("SPY", "QQQ", "AAPL", "TSLA", "NVDA"),
    "deribit": ("BTC", "ETH"),
    "massive": ("SPY",),
}


def _source(value: str) -> str:
    if value in SOURCES or (value.startswith("replay:") and len(value) > len("replay:")):
        return value
    raise ValueError("must be sim, deribit, massive or replay:FILE")


def _url(*schemes: str) -> Any:
    def conv(value: str) -> str:
        if not any(value.startswith(f"{s}://") for s in schemes):
            raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL")
        return value.rstrip("/")

    return conv


def _speed(value: str) -> str:
    if value != "max" and not (_is_float(value) and float(value) > 0):
        raise ValueError("must be a positive number or max")
    return value


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _origins(value: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
    for o in origins:
        if not re.fullmatch(r"https?://[^/\s]+", o):
            raise ValueError(f"{o!r} is not an origin like https://example.com")
    return origins


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of every command (each command reads the ones it needs).

    `redis` None means the embedded memory broker. `history` bounds the resume
    stream per underlying (envelopes; older ones are trimmed). `stale_after_s`:
    a contract with no quote for this long gets the `stale` flag. `greeks_follow_s`:
    the most often a move of the underlying reprices its contracts' greeks at their
    IVs (0: greeks move with option quotes only). `fresh_within_s`:
    `/readyz` fails when an underlying's data is older than this. `tokens` turns
    authentication on (inline JSON, a file, or `redis`; see gateway/auth.py);
    `allow_origins` limits browser origins (empty: any). `workers` gateway
    processes share the port (SO_REUSEPORT).

    `underlyings` empty means the source's own default (`SOURCE_UNDERLYINGS`; see
    `underlyings_for`). Provider endpoints (`deribit_url`, `massive_url`,
    `massive_rest_url`) default to the real services; tests point them at local
    servers. `massive_api_key` is never shown (repr, logs). `max_contracts` caps the
    contracts one Massive connection subscribes (the venue's limit is 1,000).
    `rest_ratio` lets a venue's events gather while processing is busy (0, the
    default: never; 1 roughly halves processing's CPU on a busy feed for about a
    millisecond of delay; see sources/feed.py).

    Gateway flush pacing (gateway/pacing.py), off by default (`max_flush_ms` 0):
    with it on, frames are written at once while the process uses less than
    `pacing_target` of a core; above it they gather for up to `max_flush_ms`.

    Processors sharing a broker (`process`): `lease_ttl_s` is the lease TTL (renewal,
    retries and hand-over hysteresis scale with it); `standbys` processors besides the
    owner price each underlying, hot for a takeover (0: each processor prices only
    what it owns).
    """

    host: str = field(default="127.0.0.1", metadata={"conv": str})
    port: int = field(default=8000, metadata={"conv": _port})
    redis: str | None = field(default=None, metadata={"conv": _broker_url})
    underlyings: tuple[str, ...] = field(default=(), metadata={"conv": _underlyings})
    rate: float = field(default=2000.0, metadata={"conv": _positive(float)})
    seed: int = field(default=1, metadata={"conv": int})
    history: int = field(default=2000, metadata={"conv": _positive(int)})
    stale_after_s: float = field(default=60.0, metadata={"conv": _positive(float)})
    greeks_follow_s: float = field(default=1.0, metadata={"conv": _non_negative})
    fresh_within_s: float = field(default=10.0, metadata={"conv": _positive(float)})
    log_level: str = field(default="INFO", metadata={"conv": _log_level})
    tokens: str | None = field(default=None, metadata={"conv": str})
    allow_origins: tuple[str, ...] = field(default=(), metadata={"conv": _origins})
    max_connections: int = field(default=10_000, metadata={"conv": _positive(int)})
    workers: int = field(default=1, metadata={"conv": _positive(int)})
    source: str = field(default="sim", metadata={"conv": _source})
    speed: str = field(default="1", metadata={"conv": _speed})
    deribit_url: str = field(
        default="wss://www.deribit.com/ws/api/v2", metadata={"conv": _url("ws", "wss")}
    )
    massive_url: str = field(
        default="wss://socket.massive.com/options", metadata={"conv": _url("ws", "wss")}
    )
    massive_rest_url: str = field(
        default="https://api.massive.com", metadata={"conv": _url("http", "https")}
    )
    massive_api_key: str | None = field(default=None, repr=False, metadata={"conv": str})
    max_contracts: int = field(default=1000, metadata={"conv": _positive(int)})
    # The same default as sources/feed.py DEFAULT_REST_RATIO (tests/test_config.py checks).
    rest_ratio: float = field(default=0.0, metadata={"conv": _non_negative})
    pacing_target: float = field(default=0.7, metadata={"conv": _share})
    max_flush_ms: float = field(default=0.0, metadata={"conv": _non_negative})
    lease_ttl_s: float = field(default=3.0, metadata={"conv": _positive(float)})
    standbys: int = field(default=1, metadata={"conv": _standbys})

    def underlyings_for(self) -> tuple[str, ...]:
        """The underlyings to stream: the given ones, else the source's default."""
        if self.underlyings:
            return self.underlyings
        kind = "sim" if self.source.startswith("replay:") else self.source
        return SOURCE_UNDERLYINGS[kind]

    @property
    def broker_url(self) -> str:
        """The broker URL: the Redis one, or the embedded memory broker."""
        return self.redis or "memory://"

    @classmethod
    def load(cls, flags: Mapping[str, str | None], env: Mapping[str, str]) -> Settings:
        """Build settings from string `flags` (None = not given) over `env` over defaults.

        Raises ConfigError naming the setting for an unknown OPTIONSFEED_* variable,
        an unknown flag or a bad value.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        raw: dict[str, tuple[str, str]] = {}
        for key, value in env.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name not in fields:
                raise ConfigError(f"unknown setting {key} (known: {', '.join(sorted(fields))})")
            raw[name] = (key, value)
        for name, given in flags.items():
            if name not in fields:
                raise ConfigError(f"unknown setting --{name.replace('_', '-')}")
            if given is not None:
                raw[name] = (f"--{name.replace('_', '-')}", given)
        values: dict[str, Any] = {}
        for name, (source, value) in raw.items():
            try:
                values[name] = fields[name].metadata["conv"](value)
            except ValueError as exc:
                raise ConfigError(f"{source}={value!r}: {exc}") from exc
        return cls(**values)
