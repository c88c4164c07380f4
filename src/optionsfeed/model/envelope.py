"""The envelope: what the processor publishes per underlying per batch.

`{"u":"SPY","epoch":"k3f9","prev":48212,"seq":48213,"ts":..,"options":[delta..],
"underlying":delta|null,"stats":delta|null}`. `seq` grows by exactly one per envelope
of an underlying within an epoch, so a consumer sees a lost envelope at once. The
first envelope of an epoch has `prev` 0 and `reset` true: the latest-value cache was
replaced as a whole and consumers must take a snapshot.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Envelope(msgspec.Struct, omit_defaults=True):
    """The decoded form of a broker message (delta records stay plain dicts)."""

    u: str
    epoch: str
    prev: int
    seq: int
    ts: int
    options: list[dict[str, Any]] = msgspec.field(default_factory=list)
    underlying: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    reset: bool = False


_decoder = msgspec.json.Decoder(Envelope)


def decode_envelope(data: bytes) -> Envelope:
    """Decode one broker message; raises msgspec.DecodeError on malformed input."""
    return _decoder.decode(data)
