"""Two processing services sharing the underlyings on a Redis Cluster: a failover."""

from __future__ import annotations

import asyncio
import time

import pytest

from optionsfeed.aio import cancel_and_wait
from optionsfeed.broker.redis import RedisBroker
from optionsfeed.processing.placement import spread
from tests.cluster import LocalCluster
from tests.processing.test_sharing import NAMES, service, until

# Times processes against each other: runs alone (scripts/test), not beside other tests.
pytestmark = pytest.mark.alone


@pytest.mark.timeout(90)
async def test_a_failover_pauses_only_that_shards_underlyings(
    redis_cluster: LocalCluster, redis_cluster_url: str
) -> None:
    """CLUSTER FAILOVER of the shard holding one underlying's lease and data: the
    underlyings of the other shards publish on without a pause, none starts an epoch,
    and the failed-over shard's resume within seconds."""
    async with RedisBroker(redis_cluster_url) as broker:
        a, b = service(broker), service(broker)
        tasks = [asyncio.create_task(s.run()) for s in (a, b)]

        share = spread(NAMES, sorted([a.owner, b.owner]))

        def placed() -> bool:
            return all(
                s.leases is not None and sorted(s.leases.owned()) == sorted(share[s.owner])
                for s in (a, b)
            )

        try:
            await until(placed, 30, "each owns its share (hand-overs done)")
            await asyncio.sleep(0.5)
            metas = {u: await broker.meta(u) for u in NAMES}
            shard = redis_cluster.owner(broker.key(NAMES[0], "lease"))
            same = [u for u in NAMES if redis_cluster.owner(broker.key(u, "lease")) == shard]
            others = [u for u in NAMES if u not in same]
            assert others, "the underlyings span more than one shard"
            await asyncio.sleep(1.0)
            epochs = {u: m.epoch for u, m in metas.items() if m is not None}
            last = {u: (await broker.meta(u)).seq for u in NAMES}  # type: ignore[union-attr]
            since = dict.fromkeys(NAMES, time.monotonic())
            longest = dict.fromkeys(NAMES, 0.0)
            await asyncio.to_thread(redis_cluster.failover, broker.key(NAMES[0], "lease"))
            end = time.monotonic() + 6.0
            while time.monotonic() < end:
                for u in NAMES:
                    try:
                        m = await broker.meta(u)
                    except Exception:  # the failing-over shard may refuse a read
                        continue
                    now = time.monotonic()
                    if m is not None and m.seq != last[u]:
                        longest[u] = max(longest[u], now - since[u])
                        last[u], since[u] = m.seq, now
                await asyncio.sleep(0.05)
            now = time.monotonic()
            for u in NAMES:
                longest[u] = max(longest[u], now - since[u])
            print(f"longest pause per underlying: {longest} (failed-over shard: {same})")
            assert all(longest[u] < 1.0 for u in others), longest
            assert all(longest[u] < 5.0 for u in same), longest
            after = {u: (await broker.meta(u)).epoch for u in others}  # type: ignore[union-attr]
            assert after == {u: epochs[u] for u in others}
        finally:
            for t in tasks:
                await cancel_and_wait(t)
            await asyncio.to_thread(redis_cluster.healthy)
