"""The Broker contract, run against every implementation (memory, Redis, Redis Cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import msgspec
import pytest

from optionsfeed.broker import open_broker
from optionsfeed.broker.base import Broker
from optionsfeed.broker.memory import MemoryBroker
from optionsfeed.broker.redis import RedisBroker
from optionsfeed.errors import ConfigError, Fenced, SequenceConflict
from optionsfeed.model.envelope import (
    STATS_FIELD,
    UNDERLYING_FIELD,
    ChainInfo,
    Publication,
    decode_envelope,
    encode_envelope,
    encode_reset,
)

EXPIRY = "2025-01-17"


def record(symbol: str, bid: float) -> bytes:
    return msgspec.json.encode({"s": symbol, "bid": bid, "ask": bid + 0.1})


class Feed:
    """Publications of one underlying as the processor makes them (epoch, prev/seq, envelope)."""

    def __init__(self, underlying: str) -> None:
        self.underlying = underlying
        self.epoch = ""
        self.seq = 0

    def reset(self, epoch: str, records: dict[str, bytes]) -> Publication:
        self.epoch, self.seq = epoch, 1
        symbols = sorted(s for s in records if not s.startswith("__"))
        info = msgspec.json.encode(ChainInfo({EXPIRY: symbols}))
        payload = encode_reset(self.underlying, epoch, 1_000_000)
        return Publication(self.underlying, epoch, 0, 1, 1_000_000, payload, list(records.items()), info, reset=True)  # fmt: skip

    def delta(
        self, records: dict[str, bytes] | None = None, *, info: bytes | None = None
    ) -> Publication:
        prev, self.seq = self.seq, self.seq + 1
        ts = 1_000_000 * self.seq
        options = [{"s": s} for s in records or {}]
        payload = encode_envelope(
            self.underlying,
            self.epoch,
            prev,
            self.seq,
            ts,
            options=options,
            underlying=None,
            stats=None,
        )
        return Publication(self.underlying, self.epoch, prev, self.seq, ts, payload, list((records or {}).items()), info)  # fmt: skip

    def deltas(self, n: int) -> list[Publication]:
        return [self.delta({f"S{i % 7}": record(f"S{i % 7}", float(self.seq))}) for i in range(n)]


def chain(n: int = 3) -> dict[str, bytes]:
    records = {f"S{i}": record(f"S{i}", 1.0 + i) for i in range(n)}
    records[UNDERLYING_FIELD] = b'{"s":"SPY","price":500.0}'
    records[STATS_FIELD] = b'{"spot":500.0}'
    return records


async def take(it: AsyncIterator[bytes], n: int) -> list[bytes]:
    """The next `n` live payloads, within 5 s."""
    async with asyncio.timeout(5):
        return [await anext(it) for _ in range(n)]


@pytest.fixture(params=["memory", "redis", "cluster"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "cluster":
        return cast(str, request.getfixturevalue("redis_cluster_url"))
    return cast(str, request.getfixturevalue("redis_url"))


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    async with open_broker(broker_url) as b:
        yield b


def test_open_broker_chooses_by_scheme() -> None:
    """memory:// is the MemoryBroker, redis:// rediss:// unix:// redis+cluster:// a
    RedisBroker, others fail."""
    assert isinstance(open_broker("memory://"), MemoryBroker)
    for url in ("redis://127.0.0.1:1/0", "rediss://h:1/0", "unix:///tmp/redis.sock"):
        assert isinstance(open_broker(url), RedisBroker)
        assert not cast(RedisBroker, open_broker(url)).sharded
    for url in ("redis+cluster://127.0.0.1:1,127.0.0.1:2", "rediss+cluster://u:p@h:1/0"):
        broker = open_broker(url)
        assert isinstance(broker, RedisBroker)
        assert broker.sharded
    for url in ("redis+cluster://h", "redis+cluster://h:1/2", "redis+cluster://h:1?x=1"):
        with pytest.raises(ConfigError, match="cluster"):
            open_broker(url)
    for url in ("http://h/", "127.0.0.1:6379", "memcached://h"):
        with pytest.raises(ConfigError, match="unknown scheme"):
            open_broker(url)


async def test_reset_then_deltas_make_the_snapshot(broker: Broker) -> None:
    """A reset then deltas: the snapshot holds the merged records, epoch, seq and listing."""
    spy = Feed("SPY")
    await broker.publish([spy.reset("e1", chain(3))])
    await broker.publish(
        [spy.delta({"S1": record("S1", 9.0)}), spy.delta({"S3": record("S3", 3.0)})]
    )
    snap = await broker.snapshot("SPY")
    assert snap is not None
    assert (snap.underlying, snap.epoch, snap.seq, snap.updated_us) == ("SPY", "e1", 3, 3_000_000)
    assert snap.records == {**chain(3), "S1": record("S1", 9.0), "S3": record("S3", 3.0)}
    assert snap.info == ChainInfo({EXPIRY: ["S0", "S1", "S2"]})
    assert snap.option_records(EXPIRY) == [record("S0", 1.0), record("S1", 9.0), record("S2", 3.0)]
    meta = await broker.meta("SPY")
    assert meta is not None
    assert (meta.epoch, meta.seq, meta.info) == ("e1", 3, snap.info)


async def test_listing_is_replaced_only_when_given(broker: Broker) -> None:
    """A delta without info keeps the listing; one with info replaces it."""
    spy = Feed("SPY")
    await broker.publish([spy.reset("e1", chain(2)), spy.delta()])
    assert (await broker.meta("SPY")).info.contracts == 2  # type: ignore[union-attr]
    listing = msgspec.json.encode(ChainInfo({EXPIRY: ["S0"], "2025-02-21": ["T0", "T1"]}))
    await broker.publish([spy.delta(info=listing)])
    assert (await broker.meta("SPY")).info.contracts == 3  # type: ignore[union-attr]


async def test_cache_history_and_live_agree(broker: Broker) -> None:
    """Envelopes arrive live in order; their seqs match the snapshot's and the history's."""
    spy = Feed("SPY")
    async with broker.subscribe("SPY") as sub:
        it = aiter(sub)
        pubs = [spy.reset("e1", chain(5)), *spy.deltas(30)]
        for i in range(0, len(pubs), 7):
            await broker.publish(pubs[i : i + 7])
        live = await take(it, len(pubs))
    assert live == [p.payload for p in pubs]
    assert [decode_envelope(p).seq for p in live] == list(range(1, 32))
    snap = await broker.snapshot("SPY")
    assert snap is not None
    assert snap.seq == decode_envelope(live[-1]).seq == 31
    assert await broker.history("SPY", "e1", 0) == live


async def test_history_returns_exactly_the_missed_envelopes(broker: Broker) -> None:
    """history(after_seq) is every envelope after it; [] when current; None past the end."""
    spy = Feed("SPY")
    pubs = [spy.reset("e1", chain()), *spy.deltas(20)]
    await broker.publish(pubs)
    assert await broker.history("SPY", "e1", 15) == [p.payload for p in pubs[15:]]
    assert await broker.history("SPY", "e1", 20) == [pubs[20].payload]
    assert await broker.history("SPY", "e1", 21) == []
    assert await broker.history("SPY", "e1", 22) is None
    assert await broker.history("SPY", "e1", -1) is None
    assert await broker.history("SPY", "other", 15) is None
    assert await broker.history("QQQ", "e1", 15) is None


async def test_history_is_bounded(broker_url: str) -> None:
    """With history=10 only the last 10 envelopes resume; older points are None."""
    spy = Feed("SPY")
    async with open_broker(broker_url, history=10) as broker:
        # Enough envelopes that Redis's approximate MAXLEN ~ has trimmed whole nodes.
        await broker.publish([spy.reset("e1", chain())])
        for _ in range(20):
            await broker.publish(spy.deltas(50))
        assert spy.seq == 1001
        assert await broker.history("SPY", "e1", 0) is None
        assert await broker.history("SPY", "e1", 500) is None
        assert await broker.history("SPY", "e1", 990) is None  # 11 back: past the bound
        recent = await broker.history("SPY", "e1", 991)
        assert recent is not None
        assert [decode_envelope(p).seq for p in recent] == list(range(992, 1002))
        assert await broker.history("SPY", "e1", 998) == recent[-3:]


async def test_a_publication_that_does_not_continue_the_cache_is_refused(broker: Broker) -> None:
    """Wrong prev, wrong epoch or no cache at all: SequenceConflict and the cache is unchanged."""
    spy = Feed("SPY")
    await broker.publish([spy.reset("e1", chain()), spy.delta()])
    before = await broker.snapshot("SPY")
    spy.seq += 1  # one envelope lost on the way: the next prev is not the cache's seq
    with pytest.raises(SequenceConflict) as err:
        await broker.publish([spy.delta({"S0": record("S0", 7.0)})])
    assert err.value.underlying == "SPY"
    spy.epoch, spy.seq = "e0", 2
    with pytest.raises(SequenceConflict):
        await broker.publish([spy.delta()])
    with pytest.raises(SequenceConflict):
        await broker.publish([Feed("QQQ").delta()])
    assert await broker.snapshot("SPY") == before
    assert await broker.history("SPY", "e1", 0) is not None
    assert await broker.snapshot("QQQ") is None


async def test_a_reset_drops_the_old_epoch(broker: Broker) -> None:
    """A new epoch's reset replaces the records and the history of the old one."""
    spy = Feed("SPY")
    await broker.publish([spy.reset("e1", chain(5)), *spy.deltas(3)])
    reset = spy.reset("e2", {"S9": record("S9", 1.0)})
    await broker.publish([reset])
    snap = await broker.snapshot("SPY")
    assert snap is not None
    assert (snap.epoch, snap.seq) == ("e2", 1)
    assert snap.records == {"S9": record("S9", 1.0)}
    assert await broker.history("SPY", "e1", 1) is None
    assert await broker.history("SPY", "e2", 0) == [reset.payload]
    assert await broker.history("SPY", "e2", 1) == []


async def test_an_unknown_underlying_has_no_cache(broker: Broker) -> None:
    """snapshot, meta and history of an underlying never published are None."""
    assert await broker.snapshot("NOPE") is None
    assert await broker.meta("NOPE") is None
    assert await broker.history("NOPE", "e1", 0) is None
    assert await broker.underlyings() == []
    await broker.publish([])


async def test_underlyings_are_independent(broker: Broker) -> None:
    """Two underlyings: listed sorted, separate records, seqs and live streams."""
    spy, qqq = Feed("SPY"), Feed("QQQ")
    async with broker.subscribe("QQQ") as sub:
        it = aiter(sub)
        await broker.publish(
            [spy.reset("s1", chain(2)), qqq.reset("q1", {"Q0": record("Q0", 2.0)})]
        )
        await broker.publish([*spy.deltas(3), qqq.delta({"Q1": record("Q1", 1.0)})])
        live = await take(it, 2)
    assert [decode_envelope(p).u for p in live] == ["QQQ", "QQQ"]
    assert await broker.underlyings() == ["QQQ", "SPY"]
    s, q = await broker.snapshot("SPY"), await broker.snapshot("QQQ")
    assert s is not None
    assert q is not None
    assert (s.epoch, s.seq, q.epoch, q.seq) == ("s1", 4, "q1", 2)
    assert q.records == {"Q0": record("Q0", 2.0), "Q1": record("Q1", 1.0)}
    assert "Q0" not in s.records
    # A conflict on one underlying leaves the other publishable.
    with pytest.raises(SequenceConflict):
        await broker.publish([Feed("SPY").delta()])
    await broker.publish([qqq.delta()])
    assert (await broker.meta("QQQ")).seq == 3  # type: ignore[union-attr]


async def test_leases_take_renew_release_compare_the_owner(broker: Broker) -> None:
    """A lease is taken only when free (or already the taker's); renew and release need the owner."""
    assert await broker.lease("take", ["SPY", "QQQ"], "a", 3000) == {"SPY", "QQQ"}
    assert await broker.lease("take", ["SPY", "QQQ"], "b", 3000) == set()
    assert await broker.lease("take", ["SPY"], "a", 3000) == {"SPY"}
    assert await broker.lease("renew", ["SPY", "QQQ"], "b", 3000) == set()
    assert await broker.lease("release", ["SPY"], "b", 3000) == set()
    assert await broker.lease("renew", ["SPY", "QQQ"], "a", 3000) == {"SPY", "QQQ"}
    assert await broker.lease("release", ["SPY"], "a", 3000) == {"SPY"}
    assert await broker.lease("take", ["SPY", "QQQ"], "b", 3000) == {"SPY"}
    await broker.lease("release", ["SPY", "QQQ"], "a", 3000)
    await broker.lease("release", ["SPY", "QQQ"], "b", 3000)


async def test_a_lease_lapses_after_its_ttl(broker: Broker) -> None:
    """Not renewed, a lease lapses: another owner takes it and the old one cannot renew."""
    assert await broker.lease("take", ["SPY"], "a", 150) == {"SPY"}
    await asyncio.sleep(0.3)
    assert await broker.lease("renew", ["SPY"], "a", 3000) == set()
    assert await broker.lease("take", ["SPY"], "b", 3000) == {"SPY"}
    await broker.lease("release", ["SPY"], "b", 3000)


async def test_a_publish_without_the_lease_is_fenced_and_writes_nothing(broker: Broker) -> None:
    """With an owner, only the lease holder writes; the others are refused with Fenced."""
    spy, qqq = Feed("SPY"), Feed("QQQ")
    assert await broker.lease("take", ["SPY", "QQQ"], "a", 3000) == {"SPY", "QQQ"}
    await broker.publish([spy.reset("e1", chain()), qqq.reset("q1", chain())], owner="a")
    before = await broker.snapshot("SPY")
    await broker.lease("release", ["SPY"], "a", 3000)
    assert await broker.lease("take", ["SPY"], "b", 3000) == {"SPY"}
    # A reset from the stale owner would be the worst write of all: it is fenced too.
    stale = Feed("SPY")
    with pytest.raises(Fenced) as err:
        await broker.publish(
            [stale.reset("e2", chain(1)), spy.delta(), qqq.delta({"S0": record("S0", 9.0)})],
            owner="a",
        )
    assert err.value.underlyings == ("SPY", "SPY")
    assert "held by b" in err.value.detail
    assert await broker.snapshot("SPY") == before
    assert (await broker.meta("QQQ")).seq == 2  # type: ignore[union-attr]
    spy.seq -= 1  # the refused delta was not applied
    await broker.publish([spy.delta()], owner="b")
    assert (await broker.meta("SPY")).seq == 2  # type: ignore[union-attr]
    await broker.lease("release", ["SPY", "QQQ"], "a", 3000)
    await broker.lease("release", ["SPY", "QQQ"], "b", 3000)


async def test_free_tells_which_leases_nobody_holds(broker: Broker) -> None:
    """The op "free" names the underlyings without a holder and changes nothing."""
    assert await broker.lease("take", ["SPY"], "a", 3000) == {"SPY"}
    assert await broker.lease("free", ["SPY", "QQQ"], "b", 3000) == {"QQQ"}
    assert await broker.lease("free", ["SPY", "QQQ"], "a", 3000) == {"QQQ"}
    assert await broker.lease("take", ["QQQ"], "b", 3000) == {"QQQ"}
    assert await broker.lease("free", ["SPY", "QQQ"], "c", 3000) == set()
    await broker.lease("release", ["SPY"], "a", 3000)
    await broker.lease("release", ["QQQ"], "b", 3000)


async def test_members_join_lapse_and_leave(broker: Broker) -> None:
    """A heartbeat keeps a member for its TTL; one not refreshed lapses; leave removes it."""
    assert await broker.members("join", "a", 3000) == ["a"]
    assert await broker.members("join", "b", 150) == ["a", "b"]
    await asyncio.sleep(0.3)
    assert await broker.members("join", "a", 3000) == ["a"]
    assert await broker.members("notify", "c", 3000, "released SPY") == ["a", "c"]
    assert await broker.members("leave", "a", 3000) == ["c"]
    await broker.members("leave", "c", 3000)


async def test_notices_wake_a_waiting_peer(broker: Broker) -> None:
    """A waiting reader gets a join, a notify and a leave as they come; none lost in between."""
    await broker.members("join", "x", 3000)
    start, n = await broker.notices("0", 10)
    assert n >= 1
    assert await broker.notices(start, 50) == (start, 0)  # nothing new: waits, then says so
    waiter = asyncio.create_task(broker.notices(start, 1000))
    await asyncio.sleep(0.05)
    t0 = asyncio.get_running_loop().time()
    await broker.members("notify", "x", 3000, "released SPY")
    after, n = await waiter
    assert n == 1
    assert asyncio.get_running_loop().time() - t0 < 0.5
    await broker.members("join", "y", 3000)  # a new member
    await broker.members("join", "y", 3000)  # a heartbeat: no notice
    await broker.members("leave", "y", 3000)
    last, n = await broker.notices(after, 10)
    assert n == 2
    assert await broker.notices(last, 10) == (last, 0)
    await broker.members("leave", "x", 3000)
