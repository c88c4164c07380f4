"""The Redis broker's publish benchmark runs and leaves a shared Redis as it found it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from benchmarks.broker_bench import bench_redis_publish


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at what the benchmark wrote."""
    async with aioredis.Redis.from_url(redis_url) as r:
        yield r


async def test_the_benchmark_runs_and_cleans_up(redis_url: str, client: aioredis.Redis) -> None:
    """bench_redis_publish reports its figures and leaves no keys behind."""
    figures = await bench_redis_publish(
        redis_url, records_per_batch=200, batches=3, runs=1, paced_rate=1e6
    )
    assert figures["records_per_batch"] == 200
    assert figures["records_per_s"] > 0
    assert figures["publish_p50_ms"] <= figures["publish_p99_ms"] <= figures["publish_max_ms"]
    assert 500 < figures["full_record_bytes"] < 600
    assert [k async for k in client.scan_iter("*")] == []
