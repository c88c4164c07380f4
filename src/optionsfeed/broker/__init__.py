"""Brokers: where processing hands envelopes over and gateways pick them up.

`open_broker(url)` picks the implementation by the URL's scheme; the result is an
async context manager (`async with open_broker(url) as broker: ...`).
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Broker

SCHEMES = ("memory", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def open_broker(url: str, *, history: int = 2000) -> Broker:
    """The broker for `url`, not yet entered; `history` bounds resume per underlying.

    `memory://` is the in-process MemoryBroker; `redis://`, `rediss://` and `unix://`
    a RedisBroker on one Redis, `redis+cluster://host:port[,host:port...]` (and
    `rediss+cluster://`) one on a Redis Cluster (no connection is made before first
    use). Any other scheme, or a malformed cluster URL, raises ConfigError.
    """
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(
            f"broker URL {url.split('@')[-1]!r}: unknown scheme, expected one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(url, history=history)
    # Imported here so that memory-only runs need no Redis client at import time.
    from .redis import RedisBroker

    return RedisBroker(url, history=history)


__all__ = ["Broker", "open_broker"]
