"""A whole system over a real Redis Cluster: shards, a failover, a frozen primary.

Timings measured here are printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from optionsfeed.aio import cancel_and_wait
from optionsfeed.broker.cluster import simple_client
from optionsfeed.broker.live import RedisSubscription
from optionsfeed.broker.redis import RedisBroker
from optionsfeed.gateway.auth import RedisTokens, load_tokens

from ..cluster import LocalCluster
from .conftest import Client, System, start_system
from .test_stream import ChannelState

CHANNELS = ["chain.SPY", "stats.SPY", "chain.QQQ"]


class Watched(ChannelState):
    """A client's channel that also checks seq never goes back within an epoch."""

    def apply(self, m: dict[str, Any]) -> None:
        if m["type"] == "snapshot" and m["epoch"] == self.epoch:
            assert m["seq"] >= self.seq, f"seq back within {self.epoch}: {self.seq} -> {m['seq']}"
        super().apply(m)


class Follower:
    """Reads a client's messages in the background, applying them to `states`."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.states: dict[str, Watched] = {}
        self.snapshots: list[tuple[float, str, str]] = []  # (when, channel, epoch)
        self.updates_at: list[float] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                msgs = await self.client.messages(30)
            except TimeoutError:
                continue
            now = time.monotonic()
            for m in msgs:
                if m.get("type") in ("snapshot", "update"):
                    self.states.setdefault(m["channel"], Watched()).apply(m)
                    if m["type"] == "snapshot":
                        self.snapshots.append((now, m["channel"], m["epoch"]))
                    else:
                        self.updates_at.append(now)

    async def until(self, cond: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not cond():
                if self._task.done():
                    self._task.result()  # a failed check, raised here
                await asyncio.sleep(0.02)  # a bounded poll over what the reader collected

    async def aclose(self) -> None:
        """Stop reading; raise the reader's failed check, if any."""
        if self._task.done() and isinstance(self._task.exception(), AssertionError):
            self._task.result()
        await cancel_and_wait(self._task)


@asynccontextmanager
async def running(url: str) -> AsyncIterator[tuple[System, dict[str, RedisSubscription], Follower]]:
    """A system over `url` (SPY, QQQ), its gateway's subscriptions by underlying, and a
    client holding CHANNELS, followed from its snapshots on."""
    system, stop = await start_system(rate=3000, broker_url=url)
    subs: dict[str, RedisSubscription] = {}
    broker = system.broker
    assert isinstance(broker, RedisBroker)
    subscribe = broker.subscribe

    def recording(u: str) -> RedisSubscription:
        subs[u] = subscribe(u)
        return subs[u]

    setattr(broker, "subscribe", recording)  # noqa: B010 (an instance attribute, for this test)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(system.url, max_msg_size=0)
            client = Client(ws)
            assert (await client.next())["type"] == "welcome"
            await client.send({"op": "subscribe", "id": 1, "channels": CHANNELS})
            follower = Follower(client)
            try:
                await follower.until(lambda: len(follower.states) == len(CHANNELS), 10)
                yield system, subs, follower
            finally:
                await follower.aclose()
    finally:
        await stop()


async def equal_to_a_fresh_snapshot(system: System, follower: Follower) -> None:
    """Stop the feed, let the last updates arrive: every channel equals the REST chain."""
    await cancel_and_wait(system.task)
    await asyncio.sleep(1.0)  # the last envelopes in flight reach the client
    async with aiohttp.ClientSession() as http:
        for u in ("SPY", "QQQ"):
            async with http.get(f"{system.http}/api/v1/chain/{u}") as r:
                rest = await r.json()
            state = follower.states[f"chain.{u}"]
            assert (state.epoch, state.seq) == (rest["epoch"], rest["seq"])
            assert state.rows == {r["symbol"]: r for r in rest["data"]}


async def in_thread(f: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(f)


async def until(cond: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll `cond` (cluster state: nothing to await) until true; when, by the monotonic clock."""
    deadline = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic()


async def test_tokens_kept_in_a_cluster_are_read_from_it(redis_cluster_url: str) -> None:
    """`--tokens redis` with a cluster URL reads the tokens hash through a cluster client."""
    r = simple_client(redis_cluster_url, timeout_s=2.0)
    try:
        await r.hset("of:tokens", mapping={"t-qqq": '["QQQ"]'})
    finally:
        await r.aclose()
    tokens = load_tokens("redis", redis_url=redis_cluster_url)
    assert isinstance(tokens, RedisTokens)
    try:
        ent = await tokens.lookup("t-qqq")
        assert ent is not None
        assert ent.allows("QQQ")
        assert not ent.allows("SPY")
        assert await tokens.lookup("nope") is None
    finally:
        await tokens.aclose()


@pytest.mark.timeout(60)
async def test_a_gateway_over_a_cluster_serves_snapshots_then_updates_without_gap(
    redis_cluster: LocalCluster, redis_cluster_url: str
) -> None:
    """SPY and QQQ on two shards: snapshots, then updates chained on prev; the state each
    channel builds equals a fresh snapshot once the feed stops."""
    async with running(redis_cluster_url) as (system, subs, follower):
        nodes = {subs[u].node for u in ("SPY", "QQQ")}
        assert len(nodes) == 2
        for u in ("SPY", "QQQ"):
            assert subs[u].node == f"127.0.0.1:{redis_cluster.owner(f'of:{{{u}}}:live')}"
        n = len(follower.updates_at)
        await follower.until(lambda: len(follower.updates_at) > n + 50, 10)
        await equal_to_a_fresh_snapshot(system, follower)


@pytest.mark.timeout(60)
async def test_a_failover_under_a_live_feed_heals_without_a_gap(
    redis_cluster: LocalCluster, redis_cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """CLUSTER FAILOVER of SPY's shard: the subscription is back on the new primary within
    10 s, clients keep a gapless sequence in the same epoch (no seq going back) and end
    equal to a fresh snapshot."""
    async with running(redis_cluster_url) as (system, subs, follower):
        sub = subs["SPY"]
        epoch = follower.states["chain.SPY"].epoch
        t0 = time.monotonic()
        replica = await asyncio.to_thread(redis_cluster.failover, "of:{SPY}:live")
        async with asyncio.timeout(10):
            await sub.wait(drops=1, subscriptions=2)
        back = time.monotonic() - t0
        assert sub.node == f"127.0.0.1:{replica}"
        n = len(follower.updates_at)
        await follower.until(lambda: len(follower.updates_at) > n + 20, 10)
        first = min(t for t in follower.updates_at[n:]) - t0
        print(f"\nCLUSTER FAILOVER -> subscribed again {back:.2f} s, next update {first:.2f} s")
        # Nothing was lost: publishing followed MOVED (and a CLUSTERDOWN some node
        # answers while the shards agree on the new primary, sent again for about a
        # second) and went on in the same epoch; were CLUSTERDOWN to outlast that,
        # the processor starts new epochs, which clients follow by a snapshot.
        if "The cluster is down" not in caplog.text:
            assert follower.states["chain.SPY"].epoch == epoch
        await equal_to_a_fresh_snapshot(system, follower)


@pytest.mark.timeout(90)
async def test_a_frozen_primary_never_leaves_a_silent_subscription(
    redis_cluster: LocalCluster, redis_cluster_url: str
) -> None:
    """SIGSTOP of SPY's primary until its replica is promoted, then SIGCONT: the gateway's
    subscription moves to the new primary and delivers the processor's new epoch; the
    late publish the old primary runs when it wakes is dropped by the feed; clients end
    equal to a fresh snapshot, seq never back within an epoch."""
    async with running(redis_cluster_url) as (system, subs, follower):
        sub = subs["SPY"]
        old = redis_cluster.owner("of:{SPY}:live")
        replica = redis_cluster.replica_of(old)
        epoch = follower.states["chain.SPY"].epoch
        node = redis_cluster.node(old)
        t0 = time.monotonic()
        node.pause()
        try:
            t_promoted = await until(
                lambda: in_thread(lambda: redis_cluster.owner("of:{SPY}", via=replica) == replica),
                20, "promotion",
            )  # fmt: skip
            async with asyncio.timeout(10):
                while sub.node != f"127.0.0.1:{replica}":
                    await sub.wait(subscriptions=sub.subscriptions + 1)
            t_back = time.monotonic()
            await follower.until(
                lambda: any(e != epoch for _, ch, e in follower.snapshots if ch == "chain.SPY"), 10
            )
            t_first = next(t for t, ch, e in follower.snapshots if ch == "chain.SPY" and e != epoch)
        finally:
            node.resume()
        print(
            f"\nSIGSTOP -> promoted {t_promoted - t0:.2f} s; promoted -> subscribed "
            f"{t_back - t_promoted:.2f} s -> new epoch at the client {t_first - t_promoted:.2f} s"
            f" (drop: {sub.last_drop})"
        )
        # Woken, the old primary runs what was queued for it (the processor's publish that
        # timed out) before it learns it was replaced, and forwards that through its
        # shard: to the gateway's link on the new primary too. Healthy again, it has.
        await in_thread(redis_cluster.healthy)
        held = follower.states["chain.SPY"].seq
        n = len(follower.updates_at)
        await follower.until(lambda: len(follower.updates_at) > n + 20, 10)
        assert follower.states["chain.SPY"].epoch != epoch
        assert follower.states["chain.SPY"].seq > held
        # The other shard's link had no reason to drop (CLUSTERDOWN meanwhile is not one).
        assert "cluster is down" not in subs["QQQ"].last_drop
        dropped = system.gateway.hub.stats["stale_envelopes"]
        print(f"late envelopes from the woken primary dropped by the feed: {dropped}")
        # Dropped, not resynced: one snapshot per epoch since the freeze.
        epochs = [e for t, ch, e in follower.snapshots if ch == "chain.SPY" and t > t0]
        assert len(epochs) == len(set(epochs)), epochs
        await equal_to_a_fresh_snapshot(system, follower)
