"""The processing service loop, on the memory broker."""

from __future__ import annotations

import asyncio
import time

from optionsfeed.aio import cancel_and_wait
from optionsfeed.broker import open_broker
from optionsfeed.processing.service import ProcessingService
from optionsfeed.sources.sim.source import SimSource


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
