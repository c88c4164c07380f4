"""The processing service loop, on the memory broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from optionsfeed.aio import cancel_and_wait
from optionsfeed.broker import open_broker
from optionsfeed.processing.service import ProcessingService
from optionsfeed.sources.base import SourceBatch
from optionsfeed.sources.sim.source import SimSource


@pytest.mark.alone  # a bound on the event loop's lag: runs with nothing beside it
async def test_an_overloaded_service_does_not_starve_the_event_loop() -> None:
    """At a rate it cannot keep up with, other tasks (HTTP, timers) still run on time."""
    async with open_broker("memory://") as broker:
        svc = ProcessingService(SimSource(["SPY", "QQQ"], rate=50_000_000, seed=1), broker)
        task = asyncio.create_task(svc.run())
        try:
            await asyncio.wait_for(svc.ready.wait(), 20)
            lags = []
            for _ in range(5):
                t0 = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - t0 - 0.01)
            # One batch at a time may run between wake-ups; never the whole backlog.
            assert max(lags) < 1.0, lags
            assert svc.processor.updates_in > 0
        finally:
            await cancel_and_wait(task)


async def test_a_service_publishing_into_redis_at_full_load_stops_when_cancelled(
    redis_url: str,
) -> None:
    """Cancelling stops it even while it is always busy in Redis pipelines.

    redis-py can swallow a cancellation that lands mid-reply; `cancel_and_wait`
    repeats it, so shutdown (SIGTERM) never hangs under load.
    """
    for _ in range(5):
        async with open_broker(redis_url) as broker:
            source = SimSource(["SPY", "QQQ"], rate=200_000, seed=1)
            svc = ProcessingService(source, broker)
            task = asyncio.create_task(svc.run())
            await asyncio.wait_for(svc.ready.wait(), 20)
            await asyncio.sleep(0.3)
            assert await cancel_and_wait(task, limit_s=10)


class _FallsSilent:
    """A source that lists SPY, quotes it once and then says nothing, forever."""

    name = "silent"

    def __init__(self) -> None:
        from optionsfeed.sources.sim.market import SimMarket
        from optionsfeed.sources.sim.universe import spec_for

        from ..conftest import REFERENCE_START

        self.market = SimMarket([spec_for("SPY")], seed=1, start_us=REFERENCE_START)
        self.closed = asyncio.Event()

    async def batches(self) -> AsyncIterator[SourceBatch]:
        try:
            yield SourceBatch(listings=self.market.listings())
            await asyncio.Event().wait()
        finally:
            self.closed.set()


async def test_a_silent_source_still_gets_stale_flags_and_is_closed_on_cancel() -> None:
    """With no batch coming, the service ticks on its own: contracts go stale on time.
    Cancelling the service closes the source's iterator."""
    from ..conftest import REFERENCE_START

    now = [REFERENCE_START]
    source = _FallsSilent()
    async with open_broker("memory://") as broker:
        svc = ProcessingService(
            source, broker, stale_after_us=2_000_000, clock=lambda: now[0], idle_s=0.02
        )
        task = asyncio.create_task(svc.run())
        try:
            await asyncio.wait_for(svc.ready.wait(), 20)
            now[0] += 3_000_000  # three silent seconds
            async with asyncio.timeout(10):
                while True:
                    snap = await broker.snapshot("SPY")
                    assert snap is not None
                    if snap.seq > 1:
                        break
                    await asyncio.sleep(0.02)
            records = [json.loads(r) for r in snap.option_records()]
            assert records
            assert all("stale" in r["flags"] for r in records)
        finally:
            assert await cancel_and_wait(task)
        assert source.closed.is_set()


async def test_each_stage_of_processing_is_timed_against_the_source_ts(redis_url: str) -> None:
    """Taken <= priced <= published for every publication; /metrics shows them."""
    from optionsfeed.processing.metrics import ProcessorMetrics

    async with open_broker(redis_url) as broker:
        svc = ProcessingService(SimSource(["SPY"], rate=2000, seed=1), broker)
        task = asyncio.create_task(svc.run())
        try:
            await asyncio.wait_for(svc.ready.wait(), 20)
            async with asyncio.timeout(20):
                while svc.stages.stages["published"].n < 10:  # noqa: ASYNC110 (no event to await)
                    await asyncio.sleep(0.05)
        finally:
            await cancel_and_wait(task)
    taken, priced, published = (svc.stages.stages[s] for s in ("taken", "priced", "published"))
    assert taken.n == priced.n == published.n >= 10
    assert taken.total <= priced.total <= published.total
    assert published.cumulative()[-1] == ("+Inf", published.n)
    text = ProcessorMetrics(svc).render().decode()
    assert f'optionsfeed_processing_published_seconds_bucket{{le="+Inf"}} {published.n}.0' in text
    # SPY is American: its boundary tables are held (and counted) in this process.
    from optionsfeed.pricing.boundary_table import TABLES

    assert TABLES.groups > 0
    assert f"optionsfeed_boundary_table_groups {float(TABLES.groups)}" in text
    assert f"optionsfeed_boundary_table_resets_total {float(TABLES.resets)}" in text


def test_stage_lags_fall_in_their_buckets() -> None:
    from optionsfeed.processing.stages import StageLatency

    st = StageLatency()
    # Two publications with source events at 1.000 s and 0.999 s, taken at 1.001 s,
    # priced at 1.003 s, applied at 1.010 s; a reset (ts 0) is not a source event.
    st.observe([1_000_000, 999_000, 0], 1_001_000, 1_003_000, 1_010_000)
    pub = dict(st.stages["published"].cumulative())
    assert pub["0.01"] == 1  # 10 ms
    assert pub["0.015"] == 2  # 11 ms
    taken = dict(st.stages["taken"].cumulative())
    assert taken["0.001"] == 1
    assert taken["0.002"] == 2
    assert st.stages["priced"].n == 2


class _MoveThenQuote:
    """Lists 8 SPY calls with quotes, moves the spot, and has a fresh quote ready at
    once after the move; then says nothing, forever."""

    name = "scripted"

    def __init__(self, now_us: int) -> None:
        from datetime import date

        import numpy as np

        from optionsfeed.model.contract import Contract
        from optionsfeed.sources.base import Listing, Quotes, UnderlyingTick

        expiry_us = now_us + int(30 * 86_400e6)
        strikes = [96.0 + i for i in range(8)]
        contracts = [Contract(f"SPY260630C{int(k * 1000):08d}", "SPY", "SPY", date(2026, 6, 30),
                              expiry_us, k, "C") for k in strikes]  # fmt: skip
        self.symbols = [c.symbol for c in contracts]
        n = len(contracts)
        mids = np.array([max(100.0 - k, 0.0) + 2.0 for k in strikes])
        ts = np.full(n, now_us, dtype=np.int64)
        quotes = Quotes("SPY", self.symbols, mids - 0.05, mids + 0.05, np.ones(n), np.ones(n), ts)
        self.batches_ = [
            SourceBatch(listings=[Listing("SPY", contracts, 0.04, 0.01)], quotes=[quotes],
                        ticks=[UnderlyingTick("SPY", 100.0, 99.99, 100.01, now_us)]),
            SourceBatch(ticks=[UnderlyingTick("SPY", 101.0, 100.99, 101.01, now_us + 1)]),
            SourceBatch(quotes=[Quotes("SPY", self.symbols[:1], np.array([6.5]), np.array([6.6]),
                                       np.ones(1), np.ones(1), ts[:1] + 2)]),
        ]  # fmt: skip

    async def batches(self) -> AsyncIterator[SourceBatch]:
        for b in self.batches_:
            yield b
        await asyncio.Event().wait()


async def test_a_ready_quote_is_published_before_the_rest_of_a_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A spot move starts a sweep of 8 rows, one row a slice; the quote the source has
    ready meanwhile goes out first, in the envelope right after the move's, and every
    row of the sweep after it."""
    from optionsfeed.model.envelope import decode_envelope
    from optionsfeed.processing import processor

    from ..conftest import REFERENCE_START

    monkeypatch.setattr(processor, "FOLLOW_ROWS_PER_SLICE", 1)
    source = _MoveThenQuote(REFERENCE_START)
    async with open_broker("memory://") as broker:
        svc = ProcessingService(source, broker, follow_interval_us=1,
                                clock=lambda: REFERENCE_START + 10)  # fmt: skip
        task = asyncio.create_task(svc.run())
        try:
            async with asyncio.timeout(20):
                while True:
                    snap = await broker.snapshot("SPY")
                    recs = [json.loads(r) for r in snap.option_records()] if snap else []
                    if recs and all(r["underlying_price"] == 101.0 for r in recs):
                        break
                    await asyncio.sleep(0.01)
        finally:
            await cancel_and_wait(task)
        assert snap is not None
        history = await broker.history("SPY", snap.epoch, 1)
    assert history is not None
    envelopes = [decode_envelope(p) for p in history]
    followed = [{d["symbol"] for d in e.option_deltas()} for e in envelopes]
    # seq 2: the move (the tick alone); seq 3: the fresh quote; then the sweep's slices.
    assert envelopes[0].underlying is not None
    assert followed[0] == set()
    assert followed[1] == {source.symbols[0]}
    assert envelopes[1].option_deltas()[0]["bid"] == 6.5
    assert set().union(*followed[2:]) == set(source.symbols[1:])
