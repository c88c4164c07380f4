"""The processing service loop, on the memory broker."""

from __future__ import annotations

import asyncio
import time

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
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
