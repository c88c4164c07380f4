"""FeedBuffer: conflated quotes, kept trades, its bounds, and feed_batches' ownership."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from optionsfeed.errors import SourceError
from optionsfeed.sources.base import SourceBatch, UnderlyingTick
from optionsfeed.sources.feed import FeedBuffer, feed_batches
from optionsfeed.sources.record import decode_batch, encode_batch


def q(buf: FeedBuffer, sym: str, bid: float, ts: int, **kw: float) -> None:
    buf.quote("BTC", sym, bid=bid, ask=bid + 1, bid_size=1.0, ask_size=2.0, ts=ts, **kw)  # type: ignore[arg-type]


def test_a_newer_quote_replaces_the_pending_one_and_trades_are_all_kept() -> None:
    """Two quotes of one contract become one row (the newer); both trades stay."""
    buf = FeedBuffer()
    q(buf, "A", 1.0, 10)
    q(buf, "B", 5.0, 11)
    q(buf, "A", 2.0, 12)
    buf.trade("BTC", "A", 1.5, 3.0, 13)
    buf.trade("BTC", "A", 1.6, 4.0, 14)
    buf.tick(UnderlyingTick("BTC", 100.0, None, None, 1))
    buf.tick(UnderlyingTick("BTC", 101.0, None, None, 2))
    batch = buf.take()
    assert not buf.pending
    (quotes,) = batch.quotes
    assert quotes.symbols == ["A", "B"]
    assert quotes.bid.tolist() == [2.0, 5.0]
    assert quotes.ts.tolist() == [12, 11]
    assert quotes.mark is None  # no venue column was given: none is sent
    (trades,) = batch.trades
    assert trades.size.tolist() == [3.0, 4.0]
    assert [t.price for t in batch.ticks] == [101.0]


def test_venue_columns_are_sent_when_any_quote_has_them() -> None:
    """A batch with one venue mark carries every venue column, NaN where not given."""
    buf = FeedBuffer()
    q(buf, "A", 1.0, 10, mark=1.2, forward=60_000.0)
    q(buf, "B", 2.0, 10)
    quotes = buf.take().quotes[0]
    assert quotes.mark is not None
    assert quotes.forward is not None
    assert quotes.halted is not None
    assert quotes.mark[0] == 1.2
    assert math.isnan(quotes.mark[1])
    assert quotes.halted.tolist() == [False, False]


def test_a_newer_quote_keeps_the_venue_figures_it_does_not_give() -> None:
    """last, volume and open interest are "not in this message" when NaN: a newer quote
    without them keeps the pending one's; mark and forward are the newer quote's own."""
    buf = FeedBuffer()
    q(buf, "A", 1.0, 10, volume=120.0, last=1.1, mark=1.05)
    q(buf, "A", 2.0, 12, open_interest=7.0)
    quotes = buf.take().quotes[0]
    assert quotes.bid.tolist() == [2.0]
    assert quotes.volume is not None
    assert quotes.volume.tolist() == [120.0]
    assert quotes.last is not None
    assert quotes.last.tolist() == [1.1]
    assert quotes.open_interest is not None
    assert quotes.open_interest.tolist() == [7.0]
    assert quotes.mark is not None
    assert math.isnan(quotes.mark[0])


def test_bounds_drop_and_count_new_events() -> None:
    """Past max_quotes a new contract's quote is dropped (a pending one still updates);
    past max_trades new trades are dropped; both are counted."""
    buf = FeedBuffer(max_quotes=2, max_trades=1)
    q(buf, "A", 1.0, 1)
    q(buf, "B", 1.0, 1)
    q(buf, "C", 1.0, 1)
    q(buf, "A", 3.0, 2)
    buf.trade("BTC", "A", 1.0, 1.0, 1)
    buf.trade("BTC", "A", 1.0, 1.0, 2)
    assert (buf.dropped_quotes, buf.dropped_trades) == (1, 1)
    batch = buf.take()
    assert batch.quotes[0].symbols == ["A", "B"]
    assert batch.quotes[0].bid[0] == 3.0
    assert len(batch.trades[0].symbols) == 1


def test_venue_columns_survive_a_recording() -> None:
    """The recording codec keeps every venue column and the halted booleans."""
    buf = FeedBuffer()
    q(buf, "A", 1.0, 10, mark=1.2, forward=60_000.0, volume=7.0)
    buf.quote("BTC", "B", bid=0.0, ask=float("nan"), bid_size=0.0, ask_size=0.0, ts=11, halted=True)
    batch = buf.take()
    _, back = decode_batch(encode_batch(batch, 5))
    a, b = batch.quotes[0], back.quotes[0]
    for name in ("bid", "ask", "mark", "forward", "last", "volume", "open_interest"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert b.halted is not None
    assert b.halted.tolist() == [False, True]


async def test_feed_batches_yields_what_the_connection_puts_and_cancels_it() -> None:
    """Batches come as the connection task fills the buffer; closing the iterator stops it."""
    buf = FeedBuffer()
    stopped = asyncio.Event()

    async def connection() -> None:
        try:
            q(buf, "A", 1.0, 1)
            await asyncio.sleep(0.01)
            q(buf, "A", 2.0, 2)
            await asyncio.Event().wait()
        finally:
            stopped.set()

    got: list[SourceBatch] = []
    it = feed_batches(buf, connection())
    async for batch in it:
        got.append(batch)
        if len(got) == 2:
            break
    await it.aclose()  # type: ignore[attr-defined]
    assert stopped.is_set()
    assert [b.quotes[0].bid.tolist() for b in got] == [[1.0], [2.0]]


async def test_a_failing_connection_ends_the_batches_with_its_error() -> None:
    """A final error (rejected credentials) reaches the consumer after pending events."""
    buf = FeedBuffer()

    async def connection() -> None:
        q(buf, "A", 1.0, 1)
        raise SourceError("the venue rejected the API key")

    got: list[SourceBatch] = []

    async def consume() -> None:
        async for batch in feed_batches(buf, connection()):
            got.append(batch)

    with pytest.raises(SourceError, match="rejected"):
        await consume()
    assert len(got) == 1


def test_the_rest_settings_default_to_off_and_refuse_negative_values() -> None:
    """No rest unless asked for; a negative or NaN ratio or cap is an error."""
    buf = FeedBuffer()
    assert (buf.rest_ratio, buf.max_rest_s) == (0.0, 0.002)
    for ratio, cap in ((-1.0, 0.002), (math.nan, 0.002), (0.0, -0.001)):
        with pytest.raises(ValueError, match="must be >= 0"):
            FeedBuffer(rest_ratio=ratio, max_rest_s=cap)


@pytest.mark.parametrize(("ratio", "rests"), [(0.0, False), (1.0, True)])
async def test_a_busy_consumer_gets_its_next_batch_after_a_rest_when_asked(
    ratio: float, rests: bool
) -> None:
    """With rest_ratio 1 the batch after a 30 ms busy spell waits about as long (the
    connection has more pending at once); with 0 it is handed over at once."""
    buf = FeedBuffer(rest_ratio=ratio, max_rest_s=1.0)
    more = asyncio.Event()

    async def connection() -> None:
        q(buf, "A", 1.0, 1)
        await more.wait()
        q(buf, "A", 2.0, 2)
        await asyncio.Event().wait()

    loop = asyncio.get_running_loop()
    it = feed_batches(buf, connection())
    await anext(it)
    busy_until = time.perf_counter() + 0.03  # the consumer on the batch: CPU, no await
    while time.perf_counter() < busy_until:
        pass
    more.set()
    back = loop.time()
    await anext(it)
    waited = loop.time() - back
    await it.aclose()  # type: ignore[attr-defined]
    assert (waited >= 0.02) is rests
