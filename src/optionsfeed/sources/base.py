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

    A listing of an underlying that is already listed starts a new epoch (clients
    resnapshot); what is known of contracts that stay listed carries over. Sources
    send one after any interruption that may have lost events.

    `inverse`: option prices are in units of the underlying (coin-settled options,
    as on Deribit, `currency` "BTC"); pricing converts them to the strike's currency
    by multiplying by the forward, so IV and greeks are those of the USD value.
    """

    underlying: str
    contracts: list[Contract]
    rate: float
    dividend_yield: float
    open_interest: F64 | None = None
    inverse: bool = False


@dataclass(frozen=True, slots=True)
class Quotes:
    """Top-of-book quotes; a bid of 0 means no bid. NaN: the side is unknown.

    Venues that publish whole tickers add optional columns (None: not given):
    - `mark`: the venue's mark, used instead of the mid; NaN in a row: use the mid.
    - `forward`: the forward of the contract's expiry (e.g. Deribit's
      `underlying_price`); the row is priced by Black-76 on it with the listing's
      `rate` (`dividend_yield` then plays no part). NaN: price on the spot.
    - `last`, `volume`, `open_interest`: the venue's own figures; NaN in a row
      keeps the previous value. Once a venue gives a contract's `volume`, that
      figure is the contract's volume: its trades set `last` but add nothing.
    - `halted`: the venue says the contract does not trade now.
    """

    underlying: str
    symbols: list[str]
    bid: F64
    ask: F64
    bid_size: F64
    ask_size: F64
    ts: I64
    mark: F64 | None = None
    forward: F64 | None = None
    last: F64 | None = None
    volume: F64 | None = None
    open_interest: F64 | None = None
    halted: NDArray[np.bool_] | None = None


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
    """A market-data source: an async iterator of batches, ended by cancellation.

    A source may also offer `health() -> str | None` (None when well, else why not,
    e.g. "deribit: disconnected, retrying in 4 s"); `/readyz` of the process that
    runs it reports that reason.
    """

    name: str

    def batches(self) -> AsyncIterator[SourceBatch]: ...
