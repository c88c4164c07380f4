"""RedisBroker beyond the shared contract: key layout, round trips, outages, big chains."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from optionsfeed.aio import cancel_and_wait
from optionsfeed.broker.redis import RedisBroker, redact
from optionsfeed.errors import BrokerUnavailable, SequenceConflict
from optionsfeed.model.envelope import decode_envelope

from ..conftest import RedisServer
from .test_contract import Feed, chain, record, take


@contextlib.asynccontextmanager
async def reading(it: AsyncIterator[bytes]) -> AsyncIterator[asyncio.Task[bytes]]:
    """A task awaiting the next live payload (so the iterator runs while the test acts)."""

    async def next_payload() -> bytes:
        return await anext(it)

    task = asyncio.create_task(next_payload())
    try:
        yield task
    finally:
        await cancel_and_wait(task)  # retrieves its exception, if any


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at what the broker wrote."""
    async with aioredis.Redis.from_url(redis_url) as r:
        yield r


async def test_keys_carry_the_underlying_hash_tag(redis_url: str, client: aioredis.Redis) -> None:
    """Every key of an underlying is `{prefix}:{U}:kind`, all in one cluster slot."""
    async with RedisBroker(redis_url, prefix="t") as broker, broker.subscribe("BRK.B") as sub:
        channels = await client.pubsub_channels()
        assert channels == [b"t:{BRK.B}:live"]
        await broker.publish([Feed("BRK.B").reset("e1", chain()), Feed("SPY").reset("e2", chain())])
        await take(aiter(sub), 1)
    keys = sorted([k.decode() async for k in client.scan_iter("*")])
    assert keys == [
        "t:underlyings",
        "t:{BRK.B}:chain", "t:{BRK.B}:hist", "t:{BRK.B}:meta",
        "t:{SPY}:chain", "t:{SPY}:hist", "t:{SPY}:meta",
    ]  # fmt: skip
    for u in ("BRK.B", "SPY"):
        slots = {key_slot(k.encode()) for k in keys if f"{{{u}}}" in k}
        assert slots == {key_slot(u.encode())}
    entries = await client.xrange("t:{SPY}:hist")
    assert entries is not None
    assert [entry_id for entry_id, _ in entries] == [b"1-0"]


async def test_a_batch_is_one_round_trip(
    redis_url: str, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 publications go out in one write (a pipeline of EVALSHA) and are all applied."""
    feeds = [Feed(f"U{i:02d}") for i in range(20)]
    async with RedisBroker(redis_url) as broker:
        await broker.publish([f.reset("e1", chain(2)) for f in feeds])  # loads the script
        writes = 0
        send = AbstractConnection.send_packed_command

        async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            nonlocal writes
            writes += 1
            await send(self, *args, **kwargs)

        await client.config_resetstat()
        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
        await broker.publish(
            [p for _ in range(10) for p in (f.delta({"S0": record("S0", 1.0)}) for f in feeds)]
        )
        monkeypatch.undo()
        stats = await client.info("commandstats")
        assert writes == 1
        assert stats["cmdstat_evalsha"]["calls"] == 200
        for f in feeds:
            meta = await broker.meta(f.underlying)
            assert meta is not None
            assert meta.seq == 11
            assert await client.xlen(broker.key(f.underlying, "hist")) == 11


async def test_a_lost_script_cache_is_reloaded_without_applying_twice(
    redis_url: str, client: aioredis.Redis
) -> None:
    """After SCRIPT FLUSH (as after a failover) the batch is re-sent once with EVAL."""
    spy, qqq = Feed("SPY"), Feed("QQQ")
    async with RedisBroker(redis_url) as broker:
        await broker.publish([spy.reset("e1", chain()), qqq.reset("e1", chain())])
        await client.script_flush()
        async with broker.subscribe("SPY") as sub:
            it = aiter(sub)
            pubs = [*spy.deltas(3), *qqq.deltas(2)]
            await broker.publish(pubs)
            live = await take(it, 3)
        assert [decode_envelope(p).seq for p in live] == [2, 3, 4]
        assert await broker.history("SPY", "e1", 1) == live
        assert await client.xlen(broker.key("QQQ", "hist")) == 3
        await broker.publish(spy.deltas(1))  # EVALSHA works again
        assert (await broker.meta("SPY")).seq == 5  # type: ignore[union-attr]


async def test_invalid_sequences_are_refused_before_sending(redis_url: str) -> None:
    """seq must be >= 1 and follow prev (stream ids only grow): ValueError, nothing applied."""
    spy = Feed("SPY")
    async with RedisBroker(redis_url) as broker:
        reset = spy.reset("e1", chain())
        bad = spy.delta()
        with pytest.raises(ValueError, match="does not follow"):
            await broker.publish([reset, dataclasses.replace(bad, seq=bad.prev)])
        assert await broker.snapshot("SPY") is None


@pytest.mark.timeout(30)
async def test_outage_fails_fast_then_a_reset_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Redis stopped: publish and ping raise BrokerUnavailable at once. Back, empty: a delta
    conflicts, a reset restores a whole cache."""
    spy = Feed("SPY")
    async with RedisBroker(redis_url) as broker:
        await broker.publish([spy.reset("e1", chain(50)), *spy.deltas(5)])
        redis_server.stop()
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.publish(spy.deltas(1))
        with pytest.raises(BrokerUnavailable):
            await broker.ping()
        with pytest.raises(BrokerUnavailable):
            await broker.snapshot("SPY")
        with pytest.raises(BrokerUnavailable):
            async with broker.subscribe("SPY"):
                pass
        assert time.monotonic() - t0 < 3
        redis_server.start()
        await broker.ping()
        with pytest.raises(SequenceConflict):
            await broker.publish(spy.deltas(1))
        await broker.publish([spy.reset("e2", chain(50)), *spy.deltas(2)])
        snap = await broker.snapshot("SPY")
        assert snap is not None
        assert (snap.epoch, snap.seq) == ("e2", 3)
        assert len(snap.records) == snap.info.contracts + 2 == 52
        assert await broker.history("SPY", "e1", 3) is None
        assert await broker.underlyings() == ["SPY"]


@pytest.mark.timeout(30)
async def test_a_silent_redis_times_out(redis_server: RedisServer, redis_url: str) -> None:
    """A Redis that stops answering (connections open): BrokerUnavailable after the read timeout."""
    spy = Feed("SPY")
    async with RedisBroker(redis_url, timeout_s=0.5) as broker:
        await broker.publish([spy.reset("e1", chain())])
        redis_server.pause()
        try:
            t0 = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await broker.publish(spy.deltas(1))
            assert time.monotonic() - t0 < 2
        finally:
            redis_server.resume()
        await broker.ping()


@pytest.mark.timeout(30)
async def test_a_subscription_survives_a_restart(redis_server: RedisServer, redis_url: str) -> None:
    """The live iterator reconnects and resubscribes; envelopes published after that arrive."""
    spy = Feed("SPY")
    async with RedisBroker(redis_url) as broker, broker.subscribe("SPY") as sub:
        it = aiter(sub)
        await broker.publish([spy.reset("e1", chain())])
        assert await take(it, 1) != []
        async with reading(it) as reader:
            redis_server.stop()
            redis_server.start()
            async with asyncio.timeout(10):
                await sub.wait(subscriptions=2)
            reset = spy.reset("e2", chain())
            await broker.publish([reset])
            async with asyncio.timeout(5):
                assert await reader == reset.payload
        assert sub.drops >= 1


@pytest.mark.timeout(30)
async def test_a_silent_subscription_is_replaced(redis_server: RedisServer, redis_url: str) -> None:
    """No PONG within the idle bound: the subscription drops the link and subscribes again."""
    spy = Feed("SPY")
    broker = RedisBroker(redis_url, timeout_s=0.5, subscriber_idle_s=0.2)
    async with broker, broker.subscribe("SPY") as sub, reading(aiter(sub)) as reader:
        redis_server.pause()
        try:
            async with asyncio.timeout(10):
                await sub.wait(drops=1)
        finally:
            redis_server.resume()
        async with asyncio.timeout(10):
            await sub.wait(subscriptions=2)
        reset = spy.reset("e1", chain())
        await broker.publish([reset])
        async with asyncio.timeout(5):
            assert await reader == reset.payload


async def test_a_large_reset(redis_url: str) -> None:
    """5,000 records of ~600 bytes in one reset (HSET in chunks inside the script)."""
    spy = Feed("SPY")
    pad = "x" * 560
    records = {
        f"SPY250117C{i:08d}": b'{"s":"%d","pad":"%s"}' % (i, pad.encode()) for i in range(5000)
    }
    async with RedisBroker(redis_url) as broker:
        await broker.publish([spy.reset("e1", records)])
        await broker.publish([spy.delta({"SPY250117C00000001": record("X", 1.0)})])
        snap = await broker.snapshot("SPY")
        assert snap is not None
        assert snap.seq == 2
        assert len(snap.records) == 5000
        assert snap.info.contracts == 5000
        assert snap.records["SPY250117C00004999"] == records["SPY250117C00004999"]
        assert snap.records["SPY250117C00000001"] == record("X", 1.0)


def test_the_url_is_redacted() -> None:
    """A password never shows in `url` (it goes to logs and readiness reasons)."""
    broker = RedisBroker("redis://user:s3cret@example.com:6380/0")
    assert broker.url == "redis://user:***@example.com:6380/0"
    assert redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact("unix:///run/redis.sock") == "unix:///run/redis.sock"
    assert re.fullmatch(r"of:\{SPY\}:meta", broker.key("SPY", "meta"))


async def test_closing_the_broker_ends_its_subscriptions(redis_url: str) -> None:
    """A subscription iterating when its broker closes raises BrokerUnavailable, not hangs."""
    broker = RedisBroker(redis_url)
    async with broker.subscribe("SPY") as sub, reading(aiter(sub)) as reader:
        await broker.aclose()
        async with asyncio.timeout(5):
            with pytest.raises(BrokerUnavailable, match="closed"):
                await reader


async def test_a_burst_of_reads_beyond_the_pool_waits_rather_than_fails(redis_url: str) -> None:
    """1,000 reads at once (more than the pool's connections) all get their answers."""
    async with RedisBroker(redis_url) as broker:
        found = await asyncio.gather(*(broker.meta(f"NOPE{i}") for i in range(1000)))
        assert found == [None] * 1000
