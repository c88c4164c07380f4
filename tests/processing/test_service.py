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
