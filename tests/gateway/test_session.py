"""The gateway's session and hub driven without sockets and without sleeping."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from optionsfeed.broker.base import Snapshot
from optionsfeed.gateway.frames import text_frame
from optionsfeed.gateway.hub import JOIN_SLICE, MAX_LISTINGS, ChannelUpdate, snapshot_message
from optionsfeed.gateway.session import Limits, Session
from optionsfeed.model.envelope import ChainInfo

from .sansio import CALL, EXPIRY, PUT, Bench, GatedBroker, Market, Wire, frame_payload

CHAIN = "chain.SPY"
ONE_EXPIRY = "chain.SPY.20261218"


@pytest.fixture
async def broker() -> AsyncIterator[GatedBroker]:
    async with GatedBroker() as b:
        yield b


@pytest.fixture
async def market(broker: GatedBroker) -> Market:
    m = Market(broker)
    await m.reset("e1")
    return m


async def joined(broker: GatedBroker, limits: Limits | None = None) -> Bench:
    """A bench whose client holds chain.SPY (its welcome, ack and snapshot read)."""
    b = Bench(broker, limits)
    b.send({"op": "subscribe", "id": 1, "channels": [CHAIN]})
    await b.settle()
    assert [m["type"] for m in b.reader.messages] == ["welcome", "ack", "snapshot"]
    return b


async def test_ack_snapshot_then_updates_in_sequence(broker: GatedBroker, market: Market) -> None:
    """A subscribe gets its ack, a snapshot, then every update chained on prev."""
    b = await joined(broker)
    for _ in range(3):
        await market.tick()
    updates = [m for m in await b.settle() if m["type"] == "update"]
    assert [(u["prev"], u["seq"]) for u in updates] == [(1, 2), (2, 3), (3, 4)]
    assert b.reader.violations == []
    assert b.reader.rows[CHAIN] == await b.cached_rows()
    await b.aclose()


async def test_update_published_during_the_snapshot_read_follows_it(
    broker: GatedBroker, market: Market
) -> None:
    """An update newer than the snapshot is buffered and sent right after it."""
    b = await joined(broker)  # the feed is live: the next join reads its own snapshot
    broker.snapshots_open.clear()
    b.send({"op": "subscribe", "id": 2, "channels": [ONE_EXPIRY]})
    await b.settle()
    await market.tick()
    await b.settle()
    broker.snapshots_open.set()
    got = [m for m in await b.settle() if m.get("channel") == ONE_EXPIRY]
    assert [(m["type"], m.get("seq")) for m in got] == [("snapshot", 1), ("update", 2)]
    assert b.reader.rows[ONE_EXPIRY] == await b.cached_rows()
    await b.aclose()


async def test_join_buffer_overflow_ends_in_a_fresh_snapshot(
    broker: GatedBroker, market: Market
) -> None:
    """Updates dropped from a full join buffer are never hidden behind a good prev."""
    b = await joined(broker, Limits(buffer_limit=3))
    broker.snapshots_open.clear()
    b.send({"op": "subscribe", "id": 2, "channels": [ONE_EXPIRY]})
    await b.settle()
    for i in range(8):  # more than the buffer holds, while the snapshot is read
        await market.tick(CALL if i % 2 else PUT)
        await b.settle()
    broker.snapshots_open.set()
    await b.settle()
    await market.tick()
    await b.settle()
    snapshots = [m for m in b.reader.of_type("snapshot") if m["channel"] == ONE_EXPIRY]
    assert [s["seq"] for s in snapshots] == [1, 9]
    assert b.reader.violations == []
    assert b.reader.rows[ONE_EXPIRY] == await b.cached_rows()
    assert b.hub.stats["buffer_overflows"] >= 1
    assert b.hub.stats["join_resnapshots"] == 1
    await b.aclose()


async def test_overflow_of_updates_the_snapshot_holds_needs_no_new_one(
    broker: GatedBroker, market: Market
) -> None:
    """When everything dropped is older than the snapshot, the snapshot is enough."""
    b = await joined(broker, Limits(buffer_limit=2))
    member = b.session.members[CHAIN]
    member.buffering, member.dropped = True, ("e1", 5)
    info = ChainInfo({EXPIRY: [CALL, PUT]})
    snap = Snapshot("SPY", "e1", 6, 0, info)
    b.session.apply_snapshot(member, snap, snapshot_message(member.channel, snap))
    assert not member.buffering
    member.buffering, member.dropped = True, ("e1", 7)
    b.session.apply_snapshot(member, snap, snapshot_message(member.channel, snap))
    assert member.buffering  # 7 was lost and 6 does not hold it: waiting for a newer base
    assert b.hub.stats["join_resnapshots"] == 1
    await b.aclose()


async def test_throttle_sends_one_merged_frame_per_period(
    broker: GatedBroker, market: Market
) -> None:
    """throttle_ms: at most one frame per period; the merged update spans the ones held."""
    b = Bench(broker)
    b.send({"op": "subscribe", "id": 1, "channels": [CHAIN], "throttle_ms": 250})
    await b.settle()
    await market.tick()
    first = [m for m in await b.settle() if m["type"] == "update"]
    assert [(u["prev"], u["seq"]) for u in first] == [(1, 2)]
    await market.tick(PUT)
    await market.tick(CALL)
    assert await b.settle() == []
    b.sched.advance(0.2)
    assert b.reader.read(b.wire) == []
    b.sched.advance(0.05)
    merged = b.reader.read(b.wire)
    assert [(u["prev"], u["seq"], len(u["data"])) for u in merged] == [(2, 4, 2)]
    assert b.reader.rows[CHAIN] == await b.cached_rows()
    await b.aclose()


async def test_slow_consumer_gets_merged_updates_then_4008(
    broker: GatedBroker, market: Market
) -> None:
    """Above the high-water mark updates merge; drained, one update; stuck, 4008."""
    limits = Limits(high_water=1000, low_water=100, slow_close_s=10.0)
    b = await joined(broker, limits)
    b.wire.unread = 5000
    await market.tick()  # written, and now the socket is known to be full
    await b.settle()
    assert b.session.slow_since is not None
    for _ in range(5):
        await market.tick()
    assert [m for m in await b.settle() if m["type"] == "update"] == []
    b.wire.unread = 0
    b.session.tick(b.sched.now + 1)
    got = [m for m in await b.settle() if m["type"] == "update"]
    assert [(u["prev"], u["seq"]) for u in got] == [(2, 7)]
    assert b.reader.rows[CHAIN] == await b.cached_rows()
    b.wire.unread = 5000
    await market.tick()
    await b.settle()
    b.session.tick(b.sched.now + 5)
    assert b.wire.closes == []
    b.session.tick(b.sched.now + 11)
    assert b.wire.closes == [(4008, "slow consumer")]
    await b.aclose()


async def test_unread_bytes_past_the_hard_bound_close_at_once(
    broker: GatedBroker, market: Market
) -> None:
    """A client that never reads cannot pile up more than max_unread bytes: 4008."""
    b = await joined(broker, Limits(max_unread=10_000))
    b.wire.unread = 20_000
    await market.tick()
    await b.settle()
    assert [c[0] for c in b.wire.closes] == [4008]
    await b.aclose()


async def test_lost_envelope_is_healed_from_history(broker: GatedBroker, market: Market) -> None:
    """A gap between broker and gateway is filled from the history, not seen by clients."""
    async with GatedBroker(subscriber_queue=1) as small:  # a full queue drops envelopes
        market = Market(small)
        await market.reset("e1")
        b = await joined(small)
        await market.tick()
        await market.tick()  # dropped: the gateway has not taken the one before
        await market.tick()  # dropped too
        await b.settle()
        await market.tick()
        await b.settle()
        assert b.hub.stats["gaps_healed"] == 1
        assert b.reader.violations == []
        assert b.reader.at[CHAIN] == ("e1", 5)
        assert b.reader.rows[CHAIN] == await b.cached_rows()
        await b.aclose()


async def test_new_epoch_sends_a_fresh_snapshot(broker: GatedBroker, market: Market) -> None:
    """A reset (the processor restarted) reaches the client as a snapshot of the new epoch."""
    b = await joined(broker)
    await market.tick()
    await market.reset("e2")
    await b.settle()
    await market.tick()
    await b.settle()
    assert [(s["epoch"], s["seq"]) for s in b.reader.of_type("snapshot")] == [("e1", 1), ("e2", 1)]
    assert b.reader.at[CHAIN] == ("e2", 2)
    assert b.reader.violations == []
    await b.aclose()


async def test_resume_within_history_replays_the_missed_updates(
    broker: GatedBroker, market: Market
) -> None:
    """resume at a point the history holds: the updates after it, no snapshot."""
    for _ in range(3):
        await market.tick()
    b = Bench(broker)
    b.send({"op": "subscribe", "id": 1, "channels": [CHAIN], "resume": {CHAIN: {"epoch": "e1", "seq": 2}}})  # fmt: skip
    got = await b.settle()
    assert [(m["type"], m.get("prev"), m.get("seq")) for m in got[1:]] == [
        ("ack", None, None), ("update", 2, 3), ("update", 3, 4),
    ]  # fmt: skip
    await b.aclose()


@pytest.mark.parametrize("seq", [5, 2**53 - 1])
async def test_resume_past_the_stream_gets_a_snapshot(
    broker: GatedBroker, market: Market, seq: int
) -> None:
    """A resume point never published (a seq beyond the stream): ack, then a snapshot."""
    b = Bench(broker)
    b.send({"op": "subscribe", "id": 1, "channels": [CHAIN], "resume": {CHAIN: {"epoch": "e1", "seq": seq}}})  # fmt: skip
    got = await b.settle()
    assert [(m["type"], m.get("seq")) for m in got[1:]] == [("ack", None), ("snapshot", 1)]
    await b.aclose()


async def test_resubscribing_a_held_channel_sends_nothing_of_it_before_its_new_base(
    broker: GatedBroker, market: Market
) -> None:
    """Between the ack of a re-subscribe and the new snapshot, no update of that channel."""
    b = await joined(broker)
    broker.snapshots_open.clear()
    b.send({"op": "subscribe", "id": 2, "channels": [CHAIN]})
    assert [m["type"] for m in await b.settle()] == ["ack"]
    await market.tick()
    await market.tick()
    assert await b.settle() == []
    broker.snapshots_open.set()
    got = await b.settle()
    assert [m["type"] for m in got] == ["snapshot", "update", "update"]
    assert b.reader.violations == []
    # The join (feed resync + its round) and this one round: the feed was kept, not remade.
    assert b.broker.snapshot_reads == 3
    await b.aclose()


async def test_requests_are_answered_in_the_order_sent(broker: GatedBroker, market: Market) -> None:
    """An unsubscribe sent while a subscribe waits on the broker does not overtake it."""
    b = Bench(broker)
    broker.meta_open.clear()
    b.send({"op": "subscribe", "id": 1, "channels": ["stats.SPY"]})
    b.send({"op": "unsubscribe", "id": 2, "channels": ["stats.SPY"]})
    b.send({"op": "ping", "id": 3})
    await b.settle()
    broker.meta_open.set()
    got = await b.settle()
    assert [(m["type"], m.get("id")) for m in got if m["type"] != "snapshot"] == [
        ("ack", 1), ("ack", 2), ("pong", 3),
    ]  # fmt: skip
    assert b.session.members == {}
    await b.aclose()


async def test_requests_waiting_past_the_bound_are_rate_limited(
    broker: GatedBroker, market: Market
) -> None:
    """At most max_queued_requests wait; each one past that gets rate_limited, with its id."""
    b = Bench(broker, Limits(max_queued_requests=4))
    broker.meta_open.clear()
    for i in range(6):
        b.send({"op": "subscribe", "id": i, "channels": ["stats.SPY"]})
    refused = [(m["id"], m["error"]["code"]) for m in await b.settle() if m["type"] == "error"]
    assert refused == [(4, "rate_limited"), (5, "rate_limited")]
    broker.meta_open.set()
    assert [m["id"] for m in await b.settle() if m["type"] == "ack"] == [0, 1, 2, 3]
    await b.aclose()


async def test_a_channel_that_cannot_be_served_is_ended_with_its_name(
    broker: GatedBroker, market: Market
) -> None:
    """A failed snapshot: an error naming the channel (id null); the channel is dropped."""
    b = await joined(broker)
    broker._chains.clear()  # the cache is gone; the live feed still lists the expiry
    b.send({"op": "subscribe", "id": 2, "channels": [ONE_EXPIRY]})
    got = await b.settle()
    errors = [m for m in got if m["type"] == "error"]
    assert errors == [
        {"type": "error", "id": None, "channel": ONE_EXPIRY,
         "error": {"code": "internal", "message": "no data for SPY"}},
    ]  # fmt: skip
    assert ONE_EXPIRY not in b.session.members
    await b.aclose()


async def test_ping_is_answered_and_silence_gets_a_heartbeat(
    broker: GatedBroker, market: Market
) -> None:
    """ping -> pong with the id; heartbeat_ms of silence -> a heartbeat."""
    b = Bench(broker, Limits(heartbeat_ms=1000))
    b.send({"op": "ping", "id": 9})
    got = await b.settle()
    assert got[-1] == {"type": "pong", "id": 9, "ts": 1_765_000_000_000_000}
    b.session.tick(b.sched.now + 0.5)
    assert await b.settle() == []
    b.session.tick(b.sched.now + 1.0)
    assert [m["type"] for m in await b.settle()] == ["heartbeat"]
    await b.aclose()


async def test_unknown_names_leave_the_listing_cache_bounded(
    broker: GatedBroker, market: Market
) -> None:
    """Every distinct unknown underlying asked for costs nothing kept past MAX_LISTINGS."""
    b = Bench(broker)
    for i in range(MAX_LISTINGS * 3):
        assert await b.hub.listing(f"X{i}") is None
    assert len(b.hub._listings) == MAX_LISTINGS
    assert await b.hub.listing("SPY") is not None
    await b.aclose()


async def test_clients_in_step_share_one_frame_object(broker: GatedBroker, market: Market) -> None:
    """Two clients at the same place on a channel get one frame object, whose bytes
    are exactly what each would have been sent alone."""
    b = await joined(broker)
    other = Wire()
    second = Session(
        b.hub, other, other.close, clock=b.sched.time, wall_us=lambda: 0, scheduler=b.sched
    )
    second.on_text(json.dumps({"op": "subscribe", "id": 1, "channels": [CHAIN]}))
    await b.settle()
    first_frames, other_frames = len(b.wire.frames), len(other.frames)
    await market.tick()
    await b.settle()
    mine, theirs = b.wire.frames[first_frames:], other.frames[other_frames:]
    assert len(mine) == len(theirs) == 1
    assert mine[0] is theirs[0]
    alone = b.reader.messages[-1]
    upd = ChannelUpdate(CHAIN, "e1", alone["seq"], [json.dumps(r).encode() for r in alone["data"]])
    assert json.loads(frame_payload(mine[0])) == json.loads(upd.message(alone["prev"]))
    assert mine[0] == text_frame(frame_payload(mine[0]))
    second.release()
    await b.aclose()


def subscribing_crowd(b: Bench, n: int) -> list[tuple[Session, Wire]]:
    """`n` more sessions on `b`'s hub, each having asked for chain.SPY."""
    crowd = []
    for _ in range(n):
        wire = Wire()
        s = Session(b.hub, wire, wire.close, clock=b.sched.time, wall_us=lambda: 0,
                    scheduler=b.sched)  # fmt: skip
        s.start()
        s.on_text(json.dumps({"op": "subscribe", "id": 7, "channels": [CHAIN]}))
        crowd.append((s, wire))
    return crowd


def _messages(wire: Wire) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in wire.frames:
        body = json.loads(frame_payload(frame))
        out.extend(body if isinstance(body, list) else [body])
    return out


async def test_a_crowd_is_served_a_slice_per_turn_while_the_live_feed_runs(
    broker: GatedBroker, market: Market
) -> None:
    """Ten slices of joiners: at most JOIN_SLICE snapshots per turn of the loop; an
    update published as the crowd's read returns reaches the live client before the
    crowd is through; every joiner ends with the snapshot, then that update."""
    b = await joined(broker)
    broker.snapshots_open.clear()
    crowd = subscribing_crowd(b, 10 * JOIN_SLICE)
    await b.settle()

    def served() -> int:
        return sum(any(m["type"] == "snapshot" for m in _messages(w)) for _, w in crowd)

    assert served() == 0
    broker.snapshots_open.set()
    seq = await market.tick()
    counts, live_at = [0], None
    for turn in range(200):
        await asyncio.sleep(0)  # one turn of the loop
        b.sched.run()
        counts.append(served())
        if live_at is None and any(m.get("seq") == seq for m in b.reader.read(b.wire)):
            live_at = turn
        if counts[-1] == len(crowd):
            break
    steps = [later - earlier for earlier, later in itertools.pairwise(counts)]
    assert counts[-1] == len(crowd)
    assert max(steps) <= JOIN_SLICE, steps
    assert live_at is not None
    assert counts[live_at + 1] < len(crowd), (live_at, counts)
    await b.settle()
    for _, w in crowd:
        got = [m for m in _messages(w) if m["type"] in ("snapshot", "update")]
        assert [m["type"] for m in got] == ["snapshot", "update"], got
        assert got[1]["seq"] == seq
        assert got[1]["prev"] == got[0]["seq"]
    for s, _ in crowd:
        s.release()
    await b.aclose()


async def test_a_crowd_joining_a_channel_shares_one_read_and_one_snapshot_frame(
    broker: GatedBroker, market: Market
) -> None:
    """Twenty clients subscribing while a snapshot is read: one read for the crowd,
    one encoded snapshot, one frame object written to all of them."""
    b = await joined(broker)
    reads = broker.snapshot_reads
    broker.snapshots_open.clear()
    crowd = subscribing_crowd(b, 20)
    await b.settle()
    before = [len(w.frames) for _, w in crowd]
    broker.snapshots_open.set()
    await b.settle()
    assert broker.snapshot_reads - reads == 1
    snapshots = [w.frames[n:] for (_, w), n in zip(crowd, before, strict=True)]
    assert all(len(f) == 1 for f in snapshots), [len(f) for f in snapshots]
    first = snapshots[0][0]
    assert all(f[0] is first for f in snapshots)
    body = json.loads(frame_payload(first))
    assert body["type"] == "snapshot"
    assert {r["symbol"] for r in body["data"]} == set(b.reader.rows[CHAIN])
    for s, _ in crowd:
        s.release()
    await b.aclose()
