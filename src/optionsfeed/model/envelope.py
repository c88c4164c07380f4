"""The envelope: what the processor publishes per underlying per batch, and its codec.

`{"u":"SPY","epoch":"k3f9","prev":48212,"seq":48213,"ts":..,"options":[delta..],
"underlying":delta|null,"stats":delta|null}`. `seq` grows by exactly one per envelope
of an underlying within an epoch, so a consumer sees a lost envelope at once. The
first envelope of an epoch is a reset, `{"u":..,"epoch":..,"prev":0,"seq":1,"ts":..,
"reset":true}`: the latest-value cache was replaced as a whole and consumers must
take a snapshot.

The processor encodes envelopes here (`encode_envelope`, `encode_reset`), the brokers
carry them as bytes with their `Publication`, and gateways decode them here
(`decode_envelope`). The bytes are a contract between processes of different
versions during a rolling deploy: tests/model/test_envelope.py pins them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .records import encode

# Reserved fields of an underlying's latest-value cache, beside the option symbols.
UNDERLYING_FIELD = "__underlying__"
STATS_FIELD = "__stats__"

_NULL = b"null"


class ChainInfo(msgspec.Struct):
    """What is listed for an underlying: symbols per expiry (YYYY-MM-DD), in display order."""

    expiries: dict[str, list[str]]

    @property
    def contracts(self) -> int:
        return sum(len(s) for s in self.expiries.values())


# Decodes the JSON of a ChainInfo; raises msgspec.DecodeError on malformed input.
decode_info = msgspec.json.Decoder(ChainInfo).decode


@dataclass(frozen=True, slots=True)
class Publication:
    """One envelope as the processor hands it to the broker.

    `payload` is the envelope's wire JSON (published and kept in history as is).
    `records` are (cache field, full record JSON) pairs to store; `info`, when not
    None, replaces the listing (JSON of ChainInfo). `reset` marks the first
    envelope of an epoch: the cache and history of the old epoch are dropped first.
    A non-reset publication whose `prev` is not the cache's current seq of the same
    epoch is refused with `SequenceConflict` (the cache lost state: start a new epoch).
    """

    underlying: str
    epoch: str
    prev: int
    seq: int
    ts: int
    payload: bytes
    records: Sequence[tuple[str, bytes]] = ()
    info: bytes | None = None
    reset: bool = False


class Envelope(msgspec.Struct):
    """A decoded envelope. Its delta records stay raw JSON: a gateway routes them as
    they are, without decoding or re-encoding them. `underlying` and `stats` are the
    JSON `null` when the envelope does not change them.
    """

    u: str
    epoch: str
    prev: int
    seq: int
    ts: int
    options: list[msgspec.Raw] = msgspec.field(default_factory=list)
    underlying: msgspec.Raw = msgspec.Raw(_NULL)
    stats: msgspec.Raw = msgspec.Raw(_NULL)
    reset: bool = False

    def option_deltas(self) -> list[dict[str, Any]]:
        """The option delta records, decoded (for tools and tests; gateways keep them raw)."""
        return [msgspec.json.decode(r, type=dict[str, Any]) for r in self.options]

    def underlying_delta(self) -> dict[str, Any] | None:
        """The underlying's delta record, decoded, or None when unchanged."""
        return msgspec.json.decode(self.underlying, type=dict[str, Any] | None)

    def stats_delta(self) -> dict[str, Any] | None:
        """The stats delta record, decoded, or None when unchanged."""
        return msgspec.json.decode(self.stats, type=dict[str, Any] | None)


# Decodes one broker message into an Envelope; raises msgspec.DecodeError on malformed
# input. A bound method, not a wrapper: gateways call it once per envelope.
decode_envelope = msgspec.json.Decoder(Envelope).decode


def encode_envelope(
    u: str,
    epoch: str,
    prev: int,
    seq: int,
    ts: int,
    *,
    options: list[dict[str, Any]],
    underlying: dict[str, Any] | None,
    stats: dict[str, Any] | None,
) -> bytes:
    """The wire JSON of an update envelope of underlying `u`.

    Every key is written, `underlying` and `stats` as null when None; NaN and infinity
    in the delta records become null.
    """
    return encode(
        {
            "u": u, "epoch": epoch, "prev": prev, "seq": seq, "ts": ts,
            "options": options, "underlying": underlying, "stats": stats,
        }
    )  # fmt: skip


def encode_reset(u: str, epoch: str, ts: int) -> bytes:
    """The wire JSON of the reset envelope that starts `epoch` of underlying `u` (seq 1)."""
    return encode({"u": u, "epoch": epoch, "prev": 0, "seq": 1, "ts": ts, "reset": True})
