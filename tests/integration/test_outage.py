"""Processing against a real Redis that goes away mid-stream and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from optionsfeed.aio import cancel_and_wait
from optionsfeed.app import readiness
from optionsfeed.broker.redis import RedisBroker
from optionsfeed.config import Settings
from optionsfeed.processing.service import ProcessingService
from optionsfeed.sources.sim.source import SimSource


async def until(cond: Callable[[], bool], limit_s: float, what: str) -> None:
    """Wait for `cond` (state owned by another task) with a deadline."""
    async with asyncio.timeout(limit_s):
        # The service exposes counters, not events, for these conditions: poll them.
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert cond(), what


@pytest.mark.timeout(90)
async def test_processing_survives_a_redis_restart(redis_server: Any, redis_url: str) -> None:
    """Redis killed and restarted: processing keeps running, the epoch changes, the cache is whole."""
    settings = Settings.load({"redis": redis_url}, {})
    async with RedisBroker(redis_url) as broker:
        svc = ProcessingService(SimSource(["SPY", "QQQ"], rate=5000, seed=3), broker)
        task = asyncio.create_task(svc.run())
        try:
            await asyncio.wait_for(svc.ready.wait(), 20)
            await until(lambda: svc.status.published > 50, 10, "publishing")
            before = await broker.meta("SPY")
            assert before is not None
            contracts = before.info.contracts

            redis_server.stop()
            await until(lambda: not svc.status.connected, 15, "the outage is noticed")
            reason = await readiness(broker, settings, status=svc.status)
            assert reason is not None
            assert "publishing stopped" in reason
            seen = svc.processor.updates_in
            await until(lambda: svc.processor.updates_in > seen + 2000, 10, "processing goes on")
            assert not task.done()

            redis_server.start()
            await until(lambda: svc.status.connected, 30, "publishing resumes")
            after = await broker.meta("SPY")
            assert after is not None
            assert after.epoch != before.epoch
            for name in ("SPY", "QQQ"):
                snap = await broker.snapshot(name)
                assert snap is not None
                # Every contract plus the underlying and stats records: the cache is whole.
                assert len(snap.records) == snap.info.contracts + 2
            assert (await broker.meta("SPY")).info.contracts == contracts  # type: ignore[union-attr]
            await until(
                lambda: svc.status.published > 0 and svc.status.connected, 5, "still connected"
            )
            assert await readiness(broker, settings, status=svc.status) is None
            assert svc.status.outages == 1
        finally:
            # One cancel is not enough under redis-py (see optionsfeed.aio).
            assert await cancel_and_wait(task)
