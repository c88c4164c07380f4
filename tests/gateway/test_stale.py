"""Late envelopes (a failed primary that woke up and ran a publish that had timed out):
dropped by the feed, never applied, never a reason to resnapshot everyone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from .sansio import CALL, WALL_US, Bench, GatedBroker, Market, U

CHAIN = "chain.SPY"


@pytest.fixture
async def broker() -> AsyncIterator[GatedBroker]:
    async with GatedBroker() as b:
        yield b


def envelope(epoch: str, prev: int, seq: int, *, reset: bool = False) -> bytes:
    return json.dumps({
        "u": U, "epoch": epoch, "prev": prev, "seq": seq, "ts": WALL_US, "reset": reset,
        "options": [{"symbol": CALL, "bid": 99.0}], "underlying": None, "stats": None,
    }).encode()  # fmt: skip


def deliver(broker: GatedBroker, payload: bytes) -> None:
    """`payload` to the live subscribers only, as a zombie primary's publish would be."""
    for sub in broker._subscribers[U]:
        sub._offer(payload)


async def joined(broker: GatedBroker) -> Bench:
    b = Bench(broker)
    b.send({"op": "subscribe", "id": 1, "channels": [CHAIN]})
    await b.settle()
    assert [m["type"] for m in b.reader.messages] == ["welcome", "ack", "snapshot"]
    return b


@pytest.mark.parametrize("reset", [False, True])
async def test_an_envelope_of_an_epoch_the_cache_does_not_show_is_dropped(
    broker: GatedBroker, reset: bool
) -> None:
    """Old epoch (a delta or a reset): counted, not routed, no snapshot; later updates flow."""
    market = Market(broker)
    await market.reset("e2")
    b = await joined(broker)
    await market.tick()
    await b.settle()
    resyncs = b.hub.stats["resyncs"]
    deliver(broker, envelope("e1", 0 if reset else 40, 1 if reset else 41, reset=reset))
    assert await b.settle() == []
    assert b.hub.stats["stale_envelopes"] == 1
    assert b.hub.stats["resyncs"] == resyncs
    await market.tick()
    got = await b.settle()
    assert [(m["type"], m["epoch"], m["seq"]) for m in got] == [("update", "e2", 3)]
    assert b.reader.violations == []
    assert b.reader.rows[CHAIN] == await b.cached_rows()
    await b.aclose()


async def test_a_new_epoch_the_cache_shows_still_resyncs(broker: GatedBroker) -> None:
    """The check does not hold back a real new epoch: the cache confirms it, a snapshot goes out."""
    market = Market(broker)
    await market.reset("e1")
    b = await joined(broker)
    await market.reset("e2")
    got = await b.settle()
    assert [(m["type"], m["epoch"]) for m in got] == [("snapshot", "e2")]
    assert b.hub.stats["stale_envelopes"] == 0
    await b.aclose()


async def test_a_cache_behind_the_feed_never_takes_seq_back(broker: GatedBroker) -> None:
    """A resync that finds the cache behind the feed in the same epoch (a write lost with a
    failed primary) sends nothing: within an epoch no client sees seq go down."""
    market = Market(broker)
    await market.reset("e1")
    b = await joined(broker)
    for _ in range(3):
        await market.tick()
    await b.settle()
    assert b.reader.at[CHAIN] == ("e1", 4)
    broker._chains[U].seq = 2  # as if seq 3 and 4 were lost in a failover
    deliver(broker, b"not an envelope")  # makes the feed resync
    assert await b.settle() == []
    assert b.reader.at[CHAIN] == ("e1", 4)
    await market.reset("e2")  # what the processor does after a lost write
    got = await b.settle()
    assert [(m["type"], m["epoch"], m["seq"]) for m in got] == [("snapshot", "e2", 1)]
    await b.aclose()
