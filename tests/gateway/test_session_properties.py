"""Property: whatever a client sends and whatever the market does, a session keeps
the protocol's promises (driven without sockets: see sansio.py).

Promises checked after every generated run: each request got exactly one reply
carrying its id; no update ever broke the sequence rule; and every chain channel
still held ends equal to the broker's cache.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optionsfeed.gateway.session import Limits

from .sansio import CALL, PUT, Bench, GatedBroker, Market

FULLWIDTH_EXPIRY = "".join(chr(0xFF10 + int(d)) for d in "20261218")
CHANNELS = [
    "chain.SPY", "chain.SPY.20261218", f"option.{CALL}", "stats.SPY", "underlying.SPY",
    "chain.NOPE", "chain.SPY.20261219", "nonsense", f"chain.SPY.{FULLWIDTH_EXPIRY}",
]  # fmt: skip
CHAINS = ("chain.SPY", "chain.SPY.20261218")

channel_lists = st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=4)
requests = st.one_of(
    st.tuples(st.just("subscribe"), channel_lists, st.sampled_from([0, 0, 100, 250])),
    st.tuples(st.just("resume"), channel_lists, st.integers(0, 12)),
    st.tuples(st.just("unsubscribe"), channel_lists),
    st.tuples(st.just("ping")),
    st.tuples(st.just("bad"), st.sampled_from(['{"op":"fly"}', "[1]", "{", '{"op":"subscribe"}'])),
)
events = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([CALL, PUT]), st.integers(1, 6)),
    st.tuples(st.just("advance"), st.sampled_from([0.01, 0.1, 0.3])),
    st.tuples(st.just("unread"), st.sampled_from([0, 0, 5_000])),
    st.tuples(st.just("gate"), st.booleans()),
    st.tuples(st.just("settle")),
)
steps = st.lists(st.one_of(requests, events), min_size=1, max_size=40)


def _request(step: tuple[Any, ...], rid: int) -> dict[str, Any] | str:
    kind = step[0]
    if kind == "subscribe":
        return {"op": "subscribe", "id": rid, "channels": step[1], "throttle_ms": step[2]}
    if kind == "resume":
        resume = {c: {"epoch": "e1", "seq": s} for c, s in step[2].items()}
        return {"op": "subscribe", "id": rid, "channels": step[1], "resume": resume}
    if kind == "unsubscribe":
        return {"op": "unsubscribe", "id": rid, "channels": step[1]}
    if kind == "ping":
        return {"op": "ping", "id": rid}
    return str(step[1])


def _resume_points(b: Bench, market: Market, channels: list[str], seq: int) -> dict[str, int]:
    """Where an honest client resumes each channel: where it stands, or (for one it does
    not hold) a point it remembers from an earlier connection, with that point's rows."""
    points: dict[str, int] = {}
    for name in channels:
        at = b.reader.at.get(name)
        if at is not None and at[0] == market.epoch:
            points[name] = at[1]
        elif name in CHAINS and seq in market.states:
            b.reader.resuming(name, market.epoch, seq, market.states[seq])
            points[name] = seq
    return points


async def _run(plan: list[tuple[Any, ...]]) -> None:
    async with GatedBroker() as broker:
        market = Market(broker)
        await market.reset("e1")
        limits = Limits(high_water=1_000, low_water=100, buffer_limit=3, max_queued_requests=4)
        b = Bench(broker, limits)
        sent: list[int] = []  # ids of well-formed requests
        for n, step in enumerate(plan):
            kind = step[0]
            if kind == "resume":
                step = (kind, step[1], _resume_points(b, market, step[1], step[2]))
            if kind in ("subscribe", "resume"):
                b.reader.subscribing(step[1], n)
            if kind in ("subscribe", "resume", "unsubscribe", "ping", "bad"):
                msg = _request(step, n)
                b.send(msg if isinstance(msg, str) else json.dumps(msg))
                if kind != "bad":
                    sent.append(n)
            elif kind == "tick":
                for _ in range(step[2]):
                    await market.tick(step[1])
            elif kind == "advance":
                b.sched.advance(step[1])
            elif kind == "unread":
                b.wire.unread = step[1]
                b.session.tick(b.sched.now)
            elif kind == "gate":
                (broker.snapshots_open.set if step[1] else broker.snapshots_open.clear)()
            await b.settle()
        # Let everything finish: reads open, the socket drained, throttle timers due.
        broker.snapshots_open.set()
        b.wire.unread = 0
        await b.settle()
        b.session.tick(b.sched.now)
        b.sched.advance(1.0)
        await b.settle()

        replies: dict[int, int] = {}
        for m in b.reader.messages:
            if m["type"] in ("ack", "pong", "error") and isinstance(m.get("id"), int):
                replies[m["id"]] = replies.get(m["id"], 0) + 1
        assert all(replies.get(i) == 1 for i in sent), (sent, replies)
        assert not set(replies) - set(sent)
        assert b.reader.violations == []
        assert b.wire.closes == []
        cached = await b.cached_rows()
        for name in CHAINS:
            member = b.session.members.get(name)
            if member is not None and not member.buffering:
                assert b.reader.rows[name] == cached, name
        await b.aclose()


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(steps)
def test_any_run_keeps_the_protocols_promises(plan: list[tuple[Any, ...]]) -> None:
    """One reply per request, no sequence violation, held chains equal the cache."""
    asyncio.run(_run(plan))
