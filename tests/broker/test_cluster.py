"""RedisBroker on a real Redis Cluster beyond the shared contract: shards, failover, zombies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from optionsfeed.broker.redis import RedisBroker, redact
from optionsfeed.errors import BrokerUnavailable
from optionsfeed.model.envelope import decode_envelope

from ..cluster import LocalCluster
from .test_contract import Feed, chain, take
from .test_redis import reading

NAMES = ["SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "TSLA", "AMZN"]


@pytest.fixture
async def broker(redis_cluster_url: str) -> AsyncIterator[RedisBroker]:
    async with RedisBroker(redis_cluster_url) as b:
        yield b


def test_the_cluster_url_is_redacted() -> None:
    """A password in a cluster URL never shows; the nodes do."""
    broker = RedisBroker("redis+cluster://u:s3cret@10.0.0.1:7000,10.0.0.2:7000")
    assert broker.url == "redis+cluster://u:***@10.0.0.1:7000,10.0.0.2:7000"
    assert redact("redis+cluster://h:1,h:2") == "redis+cluster://h:1,h:2"


async def test_underlyings_spread_over_shards_publish_in_one_call(
    redis_cluster: LocalCluster, broker: RedisBroker
) -> None:
    """One publish() spans every shard; caches, history, live and the registry agree."""
    owners = {u: redis_cluster.owner(broker.key(u, "meta")) for u in NAMES}
    assert len(set(owners.values())) >= 2
    feeds = [Feed(u) for u in NAMES]
    subs = [broker.subscribe(u) for u in NAMES]
    for s in subs:
        await s.__aenter__()
    try:
        await broker.publish([f.reset("e1", chain(3)) for f in feeds])
        await broker.publish([p for f in feeds for p in f.deltas(4)])
        for f, s in zip(feeds, subs, strict=True):
            live = await take(aiter(s), 5)
            assert [decode_envelope(p).seq for p in live] == [1, 2, 3, 4, 5]
            assert s.node == f"127.0.0.1:{owners[f.underlying]}"
            assert await broker.history(f.underlying, "e1", 0) == live
            meta = await broker.meta(f.underlying)
            assert meta is not None
            assert meta.seq == 5
    finally:
        for s in subs:
            await s.__aexit__(None, None, None)
    assert await broker.underlyings() == sorted(NAMES)
    await broker.ping()


@pytest.mark.timeout(60)
async def test_a_failover_moves_the_subscription_and_publishing_continues(
    redis_cluster: LocalCluster, broker: RedisBroker
) -> None:
    """CLUSTER FAILOVER: Redis unsubscribes the link, it resubscribes on the new primary
    within 10 s; the next publish follows MOVED, reloads the script (NOSCRIPT) and
    continues the same epoch."""
    spy = Feed("SPY")
    async with broker.subscribe("SPY") as sub:
        it = aiter(sub)
        await broker.publish([spy.reset("e1", chain()), *spy.deltas(2)])
        assert len(await take(it, 3)) == 3
        async with reading(it) as reader:
            t0 = time.monotonic()
            replica = await asyncio.to_thread(redis_cluster.failover, broker.key("SPY", "live"))
            async with asyncio.timeout(10):
                await sub.wait(drops=1, subscriptions=2)
            back = time.monotonic() - t0
            assert (sub.node, sub.drops) == (f"127.0.0.1:{replica}", 1)
            assert "unsubscribed" in sub.last_drop
            pubs = spy.deltas(2)
            await broker.publish(pubs)
            async with asyncio.timeout(5):
                first = await reader
        # The newest envelope from before the drop may come first (healing's cue).
        live = [first, *await take(it, 2 if first != pubs[0].payload else 1)]
        assert live[-1] == pubs[-1].payload
    print(f"failover -> subscribed on the new primary: {back:.2f} s")
    assert await broker.history("SPY", "e1", 0) is not None
    assert (await broker.meta("SPY")).seq == 5  # type: ignore[union-attr]


@pytest.mark.timeout(90)
async def test_a_frozen_primary_fails_its_publications_and_the_next_epoch_finds_the_new_one(
    redis_cluster: LocalCluster, broker: RedisBroker
) -> None:
    """SIGSTOP of SPY's primary: a publish spanning two shards raises BrokerUnavailable
    within the timeout, the other shard's publication applied once; after the replica
    is promoted, a new epoch is published on it (the client refreshed its slot map)."""
    spy = Feed("SPY")
    old = redis_cluster.owner(broker.key("SPY", "meta"))
    other = Feed(next(u for u in NAMES if redis_cluster.owner(broker.key(u, "meta")) != old))
    await broker.publish([spy.reset("e1", chain()), other.reset("e1", chain())])
    replica = redis_cluster.replica_of(old)
    node = redis_cluster.node(old)
    node.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.publish([spy.delta(), other.delta()])
        assert time.monotonic() - t0 < broker.timeout_s + 1
        assert (await broker.meta(other.underlying)).seq == 2  # type: ignore[union-attr]
        await broker.publish([other.delta()])  # its shard never waits for the frozen one
        deadline = time.monotonic() + 30
        while True:
            try:
                await broker.publish([spy.reset("e2", chain())])
                break
            except BrokerUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)  # the replica is not promoted yet
    finally:
        node.resume()
    assert redis_cluster.owner(broker.key("SPY", "meta"), via=replica) == replica
    assert (await broker.meta("SPY")).epoch == "e2"  # type: ignore[union-attr]
    assert await broker.history(other.underlying, "e1", 0) is not None
    assert (await broker.meta(other.underlying)).seq == 3  # type: ignore[union-attr]
