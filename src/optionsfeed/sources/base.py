"""What every source yields: batches of normalized events, in columns.

Sources know nothing of processing, brokers or sockets. Events are columnar
(one NumPy array per field) so a batch of thousands costs a few array copies,
not thousands of Python objects. Every event carries the source's own `ts`,
integer microseconds since the Unix epoch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..model.contract import Contract

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Listing:
    """The complete listing of one underlying; replaces any earlier one.

    `open_interest` (one per contract, in listing order) is the day's open
    interest; NaN where the source does not know it.
    """

    underlying: str
    contracts: list[Contract]
    rate: float
    dividend_yield: float
    open_interest: F64 | None = None


@dataclass(frozen=True, slots=True)
class Quotes:
    """Top-of-book quotes; a bid of 0 means no bid. NaN: the side is unknown."""

    underlying: str
    symbols: list[str]
    bid: F64
    ask: F64
    bid_size: F64
    ask_size: F64
    ts: I64


@dataclass(frozen=True, slots=True)
class Trades:
    """Prints: price and size of each trade; volume accumulates from them."""

    underlying: str
    symbols: list[str]
    price: F64
    size: F64
    ts: I64


@dataclass(frozen=True, slots=True)
class UnderlyingTick:
    """The underlying's price (and its bid/ask when known)."""

    underlying: str
    price: float
    bid: float | None
    ask: float | None
    ts: int


@dataclass(slots=True)
class SourceBatch:
    """Everything a source produced since its previous batch, in the order to apply:
    listings, then ticks, then quotes, then trades."""

    listings: list[Listing] = field(default_factory=list)
    ticks: list[UnderlyingTick] = field(default_factory=list)
    quotes: list[Quotes] = field(default_factory=list)
    trades: list[Trades] = field(default_factory=list)

    def event_count(self) -> int:
        """Updates in the batch: ticks + quotes + trades (listings do not count)."""
        return (
            len(self.ticks)
            + sum(len(q.symbols) for q in self.quotes)
            + sum(len(t.symbols) for t in self.trades)
        )


class Source(Protocol):
    """A market-data source: an async iterator of batches, ended by cancellation."""

    name: str

    def batches(self) -> AsyncIterator[SourceBatch]: ...
