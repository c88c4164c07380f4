"""A gateway's /readyz: out of the rotation only when cut off from the broker; trouble
every gateway shares (a frozen shard, a stale underlying) is reported, not a 503."""

from __future__ import annotations

import asyncio

from optionsfeed.broker.redis import RedisBroker
from optionsfeed.gateway.readiness import GatewayReadiness

from ..broker.test_contract import Feed, record
from ..cluster import LocalCluster
from ..conftest import RedisServer


async def test_a_stale_underlying_degrades_but_keeps_the_gateway_ready(redis_url: str) -> None:
    async with RedisBroker(redis_url) as broker:
        await broker.publish([Feed("SPY").reset("e1", {"S1": record("S1", 1.0)})])
        fresh = GatewayReadiness(broker, fresh_within_s=10, clock=lambda: 1_000_000 + 5_000_000)
        assert await fresh() is None
        assert fresh.details() == {}
        late = GatewayReadiness(broker, fresh_within_s=10, clock=lambda: 1_000_000 + 60_000_000)
        assert await late() is None
        assert late.details() == {"degraded": ["SPY: newest data is 60.0 s old (limit 10 s)"]}


async def test_a_gateway_cut_off_from_redis_is_not_ready(
    redis_server: RedisServer, redis_url: str
) -> None:
    async with RedisBroker(redis_url) as broker:
        check = GatewayReadiness(broker, fresh_within_s=10)
        assert await check() is None
        redis_server.stop()
        try:
            why = await check()
        finally:
            redis_server.start()
        assert why is not None
        assert "unreachable" in why


async def test_a_frozen_primary_leaves_the_gateway_ready_and_says_so(
    redis_cluster: LocalCluster, redis_cluster_url: str
) -> None:
    """One shard not answering is shared by every gateway: ready (200), `degraded`."""
    async with RedisBroker(redis_cluster_url) as broker:
        check = GatewayReadiness(broker, fresh_within_s=10)
        assert await check() is None
        assert check.details() == {}
        node = redis_cluster.node(redis_cluster.owner("of:{SPY}:live"))
        node.pause()  # shorter than cluster-node-timeout: no failover
        try:
            why = await check()
        finally:
            node.resume()
        assert why is None
        assert any("part of the broker" in n for n in check.details()["degraded"]), check.details()
    await asyncio.to_thread(redis_cluster.healthy)
