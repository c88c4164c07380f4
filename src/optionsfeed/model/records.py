"""Wire records of docs/protocol.md, field for field, and their JSON codec.

msgspec was chosen by measurement (`optionsfeed bench encode`, docs/benchmarks.md):
building and encoding a full option record as a msgspec Struct is about 30 % faster
than a dict through orjson and 40 % faster than a dict through msgspec.
NaN and infinity encode as JSON `null`, so an unknown number can never reach
the wire as NaN; the processor sets the matching flag (`iv_failed`, ...).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


class Flag(StrEnum):
    """The closed list of record flags."""

    STALE = "stale"
    CROSSED = "crossed"
    NO_BID = "no_bid"
    IV_FAILED = "iv_failed"
    HALTED = "halted"
    IV_OUT_OF_RANGE = "iv_out_of_range"


# Order of the flags on the wire: fixed, so equal sets encode equally.
FLAG_ORDER: tuple[Flag, ...] = (
    Flag.STALE, Flag.CROSSED, Flag.NO_BID, Flag.IV_FAILED, Flag.HALTED, Flag.IV_OUT_OF_RANGE,
)  # fmt: skip


class OptionRecord(msgspec.Struct, omit_defaults=False):
    """A full option record (a snapshot row). Only the optional fields may be absent:
    `currency`, `exercise`, `iv_bid`, `iv_ask`, `forward` and `forward_source` (the
    processor always sets the last four, null where unknown).

    Sizes, volume and open interest are integers, except on venues that trade
    fractions of a contract (Deribit), where they may be fractional.
    """

    symbol: str
    underlying: str
    root: str
    expiry: str
    strike: float
    right: str
    multiplier: int
    bid: float | None
    ask: float | None
    bid_size: int | float | None
    ask_size: int | float | None
    mark: float | None
    last: float | None
    last_size: int | float | None
    volume: int | float | None
    open_interest: int | float | None
    iv: float | None
    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None
    rho: float | None
    underlying_price: float | None
    ts: int
    flags: list[str]
    currency: str | msgspec.UnsetType = msgspec.UNSET
    exercise: str | msgspec.UnsetType = msgspec.UNSET
    iv_bid: float | msgspec.UnsetType | None = msgspec.UNSET
    iv_ask: float | msgspec.UnsetType | None = msgspec.UNSET
    forward: float | msgspec.UnsetType | None = msgspec.UNSET
    forward_source: str | msgspec.UnsetType | None = msgspec.UNSET


class UnderlyingRecord(msgspec.Struct):
    """An `underlying.{U}` record: the price and the rates greeks were computed with."""

    symbol: str
    price: float | None
    bid: float | None
    ask: float | None
    rate: float
    dividend_yield: float
    ts: int


class StatsRecord(msgspec.Struct):
    """A `stats.{U}` record: chain analytics of one underlying."""

    underlying: str
    ts: int
    spot: float | None
    atm_iv: float | None
    put_call_volume_ratio: float | None
    put_call_oi_ratio: float | None
    total_volume: int
    total_open_interest: int
    max_pain: dict[str, float]
    net_gamma_exposure: float | None


# Fields an option delta may carry besides its key; used to validate deltas in tests
# and by clients that merge them.
OPTION_FIELDS: frozenset[str] = frozenset(OptionRecord.__struct_fields__)

encoder = msgspec.json.Encoder()
"""The one JSON encoder of the data path (thread-unsafe by design: one per process)."""


def encode(obj: Any) -> bytes:
    """Encode `obj` as compact JSON; NaN and infinity become null."""
    return encoder.encode(obj)
