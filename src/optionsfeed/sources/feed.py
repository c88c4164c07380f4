"""Between a venue connection and processing: a bounded buffer of normalized events.

A venue adapter's connection task decodes messages one at a time and puts their
events here; processing takes everything pending as one `SourceBatch` whenever it
is ready for more. So a burst becomes one larger batch (priced in one vectorized
call) instead of a queue of small ones, and a slow consumer never builds a backlog
of quotes: a newer quote of a contract replaces its pending one (a quote is the
contract's whole top of book, nothing is lost by dropping the older one). The
venue's own figures (`last`, `volume`, `open_interest`) are not part of the top of
book: NaN there means "not in this message", so one the newer quote does not give
is kept from the pending one, as processing would have kept it.

Bounds: at most `max_quotes` contracts with a pending quote and `max_trades`
pending trades. Past a bound the new event is dropped and counted in
`dropped_quotes` / `dropped_trades` (the adapter logs them); the pending ones stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..aio import cancel_and_wait
from .base import Listing, Quotes, SourceBatch, Trades, UnderlyingTick

NAN = float("nan")
DEFAULT_MAX_QUOTES = 200_000
DEFAULT_MAX_TRADES = 100_000
# Processing a batch has a fixed cost (one pricing call, the diff, the publish), so
# a busy feed whose events trickle in a few at a time has processing run back to
# back on small batches: a whole core. A buffer's `rest_ratio` trades latency for that
# CPU: when the consumer is busy (its time S on the last batch exceeds BUSY_SHARE x
# the time it then had free), the next batch is taken no sooner than rest_ratio x S
# later (at most `max_rest_s`), while the connection task reads on. Measured (bench
# venues, "paced"; docs/benchmarks.md): at 50,000 events/s in 0.5 ms frames, ratio 1
# takes processing from 1.00 to 0.53 core but adds 0.7 ms at p50 and ~3.5 ms at p99
# (asyncio's timers wake in whole milliseconds). Latency comes first here, so it is
# off by default; set it to 1.0 where CPU is the tighter limit (`--rest-ratio`).
DEFAULT_REST_RATIO = 0.0
DEFAULT_MAX_REST_S = 0.002
BUSY_SHARE = 1.0

# (bid, ask, bid_size, ask_size, ts, mark, forward, last, volume, open_interest, halted)
_QuoteRow = tuple[float, float, float, float, int, float, float, float, float, float, bool]


def check_rest(rest_ratio: float, max_rest_s: float) -> None:
    """Raise ValueError unless both are 0 or more (see FeedBuffer)."""
    if not (rest_ratio >= 0.0 and max_rest_s >= 0.0):  # also false for NaN
        raise ValueError(f"rest_ratio {rest_ratio} and max_rest_s {max_rest_s} must be >= 0")


@dataclass(slots=True)
class _PendingEvents:
    """One underlying's events waiting in the buffer: the newest quote per contract
    and every trade."""

    quotes: dict[str, _QuoteRow] = field(default_factory=dict)
    extras: bool = False  # any pending quote carries a venue column
    trades: list[tuple[str, float, float, int]] = field(default_factory=list)


class FeedBuffer:
    """Normalized events waiting for processing; see the module docstring for bounds.

    `rest_ratio` and `max_rest_s` pace `feed_batches` over this buffer: while the
    consumer is busy, the next batch waits `rest_ratio` x its time on the last one,
    at most `max_rest_s` (0, the default: no rest). Raises ValueError when either
    is negative.
    """

    def __init__(
        self,
        *,
        max_quotes: int = DEFAULT_MAX_QUOTES,
        max_trades: int = DEFAULT_MAX_TRADES,
        rest_ratio: float = DEFAULT_REST_RATIO,
        max_rest_s: float = DEFAULT_MAX_REST_S,
    ) -> None:
        check_rest(rest_ratio, max_rest_s)
        self.max_quotes = max_quotes
        self.max_trades = max_trades
        self.rest_ratio = rest_ratio
        self.max_rest_s = max_rest_s
        self.dropped_quotes = 0
        self.dropped_trades = 0
        self._listings: list[Listing] = []
        self._ticks: dict[str, UnderlyingTick] = {}
        self._by_underlying: dict[str, _PendingEvents] = {}
        self._quotes = 0
        self._trades = 0
        self._ready = asyncio.Event()

    @property
    def pending(self) -> bool:
        """Whether `take` would return anything."""
        return bool(self._listings or self._ticks or self._quotes or self._trades)

    def listing(self, listing: Listing) -> None:
        """A (re)listing; it is applied before the quotes pending with it."""
        self._listings.append(listing)
        self._ready.set()

    def tick(self, tick: UnderlyingTick) -> None:
        """The underlying's price; a newer tick replaces a pending one."""
        self._ticks[tick.underlying] = tick
        self._ready.set()

    def quote(
        self,
        underlying: str,
        symbol: str,
        *,
        bid: float,
        ask: float,
        bid_size: float,
        ask_size: float,
        ts: int,
        mark: float = NAN,
        forward: float = NAN,
        last: float = NAN,
        volume: float = NAN,
        open_interest: float = NAN,
        halted: bool = False,
    ) -> None:
        """A contract's quote (and venue columns, see `Quotes`); replaces a pending one."""
        p = self._by_underlying.get(underlying)
        if p is None:
            p = self._by_underlying[underlying] = _PendingEvents()
        pending = p.quotes.get(symbol)
        if pending is None:
            if self._quotes >= self.max_quotes:
                self.dropped_quotes += 1
                return
            self._quotes += 1
        elif p.extras:
            # Self-comparisons: NaN != NaN, and this runs per quote on a busy venue.
            if last != last:
                last = pending[7]
            if volume != volume:
                volume = pending[8]
            if open_interest != open_interest:
                open_interest = pending[9]
        row = (bid, ask, bid_size, ask_size, ts, mark, forward, last, volume, open_interest, halted)
        p.quotes[symbol] = row
        # An `or` chain, not any() over a generator: this runs for every quote of a venue
        # without venue columns (Massive), where the generator cost 0.25 µs a quote.
        if not p.extras and (
            halted
            or mark == mark
            or forward == forward
            or last == last
            or volume == volume
            or open_interest == open_interest
        ):
            p.extras = True
        self._ready.set()

    def trade(self, underlying: str, symbol: str, price: float, size: float, ts: int) -> None:
        """A print; every one is kept (each adds to the volume) up to `max_trades`."""
        if self._trades >= self.max_trades:
            self.dropped_trades += 1
            return
        p = self._by_underlying.get(underlying)
        if p is None:
            p = self._by_underlying[underlying] = _PendingEvents()
        p.trades.append((symbol, price, size, ts))
        self._trades += 1
        self._ready.set()

    def take(self) -> SourceBatch:
        """Everything pending, as one batch; the buffer is empty afterwards."""
        batch = SourceBatch(listings=self._listings, ticks=list(self._ticks.values()))
        for underlying, p in self._by_underlying.items():
            if p.quotes:
                batch.quotes.append(_quotes(underlying, p))
            if p.trades:
                symbols, price, size, ts = zip(*p.trades, strict=True)
                batch.trades.append(
                    Trades(underlying, list(symbols), np.array(price, dtype=np.float64),
                           np.array(size, dtype=np.float64), np.array(ts, dtype=np.int64))
                )  # fmt: skip
        self._listings, self._ticks, self._by_underlying = [], {}, {}
        self._quotes = self._trades = 0
        self._ready.clear()
        return batch

    async def wait(self) -> None:
        """Return once something is pending."""
        while not self.pending:
            self._ready.clear()
            await self._ready.wait()


def _quotes(underlying: str, p: _PendingEvents) -> Quotes:
    cols = list(zip(*p.quotes.values(), strict=True))
    bid, ask, bid_size, ask_size = (np.array(c, dtype=np.float64) for c in cols[:4])
    q = Quotes(underlying, list(p.quotes), bid, ask, bid_size, ask_size,
               np.array(cols[4], dtype=np.int64))  # fmt: skip
    if not p.extras:
        return q
    mark, forward, last, volume, oi = (np.array(c, dtype=np.float64) for c in cols[5:10])
    return dataclasses.replace(
        q, mark=mark, forward=forward, last=last, volume=volume, open_interest=oi,
        halted=np.array(cols[10], dtype=np.bool_),
    )  # fmt: skip


async def feed_batches(
    buffer: FeedBuffer, connection: Coroutine[Any, Any, None]
) -> AsyncIterator[SourceBatch]:
    """Run `connection` (the task that fills `buffer`) and yield batches of what it puts.

    The iteration ends with the connection's exception if it fails (e.g. rejected
    credentials), or after the last events if it returns. Closing the iterator
    cancels the connection and waits for it. Between batches it rests in
    proportion to the consumer's time on the last one (`buffer.rest_ratio`, at most
    `buffer.max_rest_s`).
    """
    task = asyncio.create_task(connection, name="feed-connection")
    now = asyncio.get_running_loop().time
    spent = 0.0  # the consumer's time on the last batch
    back = now()  # when it came back for more
    try:
        while True:
            if not buffer.pending:
                waiter = asyncio.ensure_future(buffer.wait())
                try:
                    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if task.done() and not buffer.pending:
                    task.result()  # raises the connection's failure
                    return
            handed = now()
            if spent > BUSY_SHARE * (handed - back):  # busy: let events gather
                rest = min(spent * buffer.rest_ratio, buffer.max_rest_s)
                if rest > 0.0:
                    await asyncio.sleep(rest)
                    handed = now()
            yield buffer.take()
            back = now()
            spent = back - handed
    finally:
        await cancel_and_wait(task)
