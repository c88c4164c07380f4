"""The Python client against the real gateway (real sockets), and its state logic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from optionsfeed.aio import cancel_and_wait
from optionsfeed.client import (
    Change,
    ChannelState,
    Client,
    ConnectionClosed,
    Gap,
    SubscribeError,
    merge_changes,
)
from optionsfeed.client.connection import _decode
from optionsfeed.gateway.auth import Entitlements, StaticTokens
from optionsfeed.gateway.session import Limits, Session
from tests.gateway.conftest import System, start_gateway, start_system

# -- helpers ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_system(limits: Limits | None = None) -> AsyncIterator[System]:
    system, stop = await start_system(limits)
    try:
        yield system
    finally:
        await stop()


async def follow(
    c: Client, seconds: float, until: Callable[[list[Change]], bool] | None = None
) -> list[Change]:
    """The changes `c` yields within `seconds`, or until `until(seen)` holds."""
    seen: list[Change] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for change in c.changes():
                seen.append(change)
                if until is not None and until(seen):
                    break
    return seen


async def rest_chain(system: System, underlying: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{system.http}/api/v1/chain/{underlying}") as r,
    ):
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


def assert_ordered(changes: list[Change]) -> None:
    """Per channel, each update's seq is above the previous change's."""
    last: dict[str, int] = {}
    for ch in changes:
        if ch.kind == "update" and ch.channel in last:
            assert ch.seq > last[ch.channel], (ch, last[ch.channel])
        last[ch.channel] = ch.seq


def only_session(system: System) -> Session:
    assert len(system.gateway.sessions) == 1
    return next(iter(system.gateway.sessions))


async def stop_feed_and_compare(c: Client, system: System) -> None:
    """Stop the processing, let the last updates arrive, and compare with REST."""
    await cancel_and_wait(system.task)
    await follow(c, 0.5)
    rest = await rest_chain(system, "SPY")
    st = c.state("chain.SPY")
    assert st.epoch == rest["epoch"]
    assert st.seq is not None
    assert st.seq <= rest["seq"]
    assert st.rows == {r["symbol"]: r for r in rest["data"]}


# -- against the gateway -----------------------------------------------------------------


async def test_state_equals_rest_once_the_feed_stops() -> None:
    async with running_system() as system, Client(system.url) as c:
        results = await c.subscribe(["chain.SPY", "stats.SPY"])
        assert [(r["channel"], r["ok"]) for r in results] == [
            ("chain.SPY", True),
            ("stats.SPY", True),
        ]
        seen = await follow(c, 2.0)
        for channel in ("chain.SPY", "stats.SPY"):
            mine = [x for x in seen if x.channel == channel]
            assert mine[0].kind == "snapshot"
            assert all(x.kind == "update" for x in mine[1:])
        assert sum(x.channel == "chain.SPY" for x in seen) > 10
        assert_ordered(seen)
        await stop_feed_and_compare(c, system)
        stats = c.state("stats.SPY")
        assert list(stats.rows) == ["SPY"]
        assert stats.rows["SPY"]["underlying"] == "SPY"
        assert stats.epoch == c.state("chain.SPY").epoch
        assert c.gaps == 0
        assert c.reconnects == 0


async def test_reconnects_and_resumes_after_every_kind_of_drop() -> None:
    async with running_system() as system, Client(system.url) as c:
        await c.subscribe(["chain.SPY"])
        await follow(c, 0.5)
        st = c.state("chain.SPY")

        async def client_close() -> None:
            assert c._ws is not None
            await c._ws.close()

        async def transport_abort() -> None:
            assert c._ws is not None
            conn = c._ws._response.connection
            assert conn is not None
            assert conn.transport is not None
            conn.transport.abort()  # as if the network went away

        async def server_close(code: int) -> None:
            only_session(system).close(code, "test")

        drops: list[Callable[[], Awaitable[None]]] = [
            client_close,
            transport_abort,
            lambda: server_close(1011),  # internal error: reconnect
            lambda: server_close(4029),  # rate limited: reconnect, after a longer pause
        ]
        for i, drop in enumerate(drops, 1):
            before = st.seq
            assert before is not None
            await drop()
            # Until the state moved on past the reconnect (bounded: a loaded machine
            # may take a few seconds to reconnect, resume and deliver).
            seen = await follow(c, 15.0, lambda seen: seen[-1].seq > before and c.reconnects >= i)  # noqa: B023
            assert c.reconnects == i
            after = [x for x in seen if x.seq > before]
            assert after, "the state should move on after the reconnect"
            # Resumed from history: the missed updates, not a fresh snapshot.
            assert all(x.kind == "update" for x in after), [x.kind for x in after]
            assert_ordered(seen)
            assert st.seq is not None
            assert st.seq > before
        assert c.last_close is not None
        assert c.last_close[0] == 4029
        assert c.gaps == 0
        # A gap: the next update does not follow what the client holds. It resubscribes
        # from there; an epoch the server does not know gets a fresh snapshot.
        st.epoch = "lost"
        seen = await follow(c, 10.0, lambda seen: seen[-1].kind == "snapshot")
        assert c.gaps == 1
        assert [x.kind for x in seen].count("snapshot") == 1
        assert st.epoch != "lost"
        await stop_feed_and_compare(c, system)


async def test_silence_for_three_heartbeats_reconnects_but_heartbeats_keep_it_alive() -> None:
    limits = Limits(max_channels=5, heartbeat_ms=200)
    async with running_system(limits) as system, Client(system.url) as c:
        assert c.heartbeat_ms == 200
        await asyncio.sleep(1.0)  # no channel: only the server's heartbeats arrive
        assert c.reconnects == 0
        assert c.heartbeat_timeouts == 0
        await c.subscribe(["chain.SPY"])
        await follow(c, 0.3)
        assert c._ws is not None
        conn = c._ws._response.connection
        assert conn is not None
        assert conn.transport is not None
        conn.transport.pause_reading()  # the client hears nothing any more
        seen = await follow(c, 10.0, lambda _: c.reconnects >= 1)
        assert c.heartbeat_timeouts == 1
        assert c.reconnects == 1
        assert seen
        assert c.gaps == 0
        await stop_feed_and_compare(c, system)


async def test_policy_close_ends_changes_without_reconnecting() -> None:
    async with running_system() as system, Client(system.url) as c:
        await c.subscribe(["stats.SPY"])
        only_session(system).close(1008, "entitlement withdrawn")
        with pytest.raises(ConnectionClosed) as info:
            await follow(c, 5.0)
        assert info.value.code == 1008
        assert c.reconnects == 0
        with pytest.raises(ConnectionClosed):
            await c.subscribe(["chain.SPY"])


async def test_unknown_symbol_is_refused_and_the_others_kept() -> None:
    async with running_system() as system, Client(system.url) as c:
        with pytest.raises(SubscribeError) as info:
            await c.subscribe(["chain.NOPE", "stats.SPY"])
        assert "unknown_symbol" in str(info.value)
        assert info.value.refused["chain.NOPE"]["code"] == "unknown_symbol"
        assert c.channels == ["stats.SPY"]
        seen = await follow(c, 10.0, lambda seen: len(seen) >= 1)
        assert seen[0] == Change("stats.SPY", "snapshot", ["SPY"], seen[0].epoch, seen[0].seq)
        results = await c.unsubscribe(["stats.SPY"])
        assert results == [{"channel": "stats.SPY", "ok": True}]
        assert c.channels == []
        await asyncio.sleep(0.2)
        assert only_session(system).members == {}


async def test_the_token_is_sent_and_entitlements_apply() -> None:
    tokens = StaticTokens({"t-spy": Entitlements(frozenset({"SPY"}))})
    async with running_system() as system:
        _, addr, stop = await start_gateway(system.broker, tokens=tokens)
        try:
            url = f"ws://{addr}/ws"
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                async with Client(url, token="wrong"):
                    pass
            assert info.value.status == 401
            async with Client(url, token="t-spy") as c:
                with pytest.raises(SubscribeError) as refused:
                    await c.subscribe(["stats.SPY", "stats.QQQ"])
                assert refused.value.refused["stats.QQQ"]["code"] == "not_entitled"
                assert c.channels == ["stats.SPY"]
        finally:
            await stop()


async def test_a_full_queue_coalesces_notifications_but_the_state_stays_exact() -> None:
    async with running_system() as system, Client(system.url, max_queue=3) as c:
        await c.subscribe(["chain.SPY", "chain.QQQ", "stats.SPY"])
        await asyncio.sleep(1.0)  # nobody reads the changes
        await cancel_and_wait(system.task)
        await asyncio.sleep(0.5)
        assert c.coalesced_changes > 0
        seen = await follow(c, 0.3)
        # At most the queue plus one merged change per channel was held.
        assert len(seen) <= 3 + 3
        assert_ordered(seen)
        for channel in ("chain.SPY", "chain.QQQ", "stats.SPY"):
            last = [x for x in seen if x.channel == channel][-1]
            assert last.seq == c.state(channel).seq
        rest = await rest_chain(system, "QQQ")
        assert c.state("chain.QQQ").rows == {r["symbol"]: r for r in rest["data"]}


# -- ChannelState, no I/O -------------------------------------------------------------------


def snapshot(seq: int = 10, epoch: str = "e1") -> dict[str, Any]:
    rows = [
        {"symbol": "A", "bid": 1.0, "ask": 1.2, "iv": 0.2, "ts": 1},
        {"symbol": "B", "bid": 2.0, "ask": 2.2, "iv": 0.3, "ts": 1},
    ]
    return {"type": "snapshot", "channel": "chain.X", "epoch": epoch, "seq": seq, "data": rows}


def update(prev: int, seq: int, data: list[dict[str, Any]], epoch: str = "e1") -> dict[str, Any]:
    return {"type": "update", "channel": "chain.X", "epoch": epoch, "prev": prev, "seq": seq,
            "data": data}  # fmt: skip


def test_updates_merge_field_by_field() -> None:
    st = ChannelState("chain.X")
    assert st.apply_snapshot(snapshot()) == ["A", "B"]
    keys = st.apply_update(update(10, 14, [{"symbol": "A", "bid": 1.1, "ts": 2}]))
    assert keys == ["A"]
    assert st.rows["A"] == {"symbol": "A", "bid": 1.1, "ask": 1.2, "iv": 0.2, "ts": 2}
    assert st.rows["B"]["bid"] == 2.0
    assert st.seq == 14
    # A record the state did not hold yet is added.
    assert st.apply_update(update(14, 15, [{"symbol": "C", "bid": 3.0, "ts": 3}])) == ["C"]
    assert st.rows["C"] == {"symbol": "C", "bid": 3.0, "ts": 3}
    assert st.resume_point() == {"epoch": "e1", "seq": 15}


def test_null_means_unknown_not_unchanged() -> None:
    st = ChannelState("chain.X")
    st.apply_snapshot(snapshot())
    st.apply_update(update(10, 11, [{"symbol": "B", "iv": None, "ts": 2}]))
    assert "iv" in st.rows["B"]
    assert st.rows["B"]["iv"] is None
    assert st.rows["B"]["bid"] == 2.0


@pytest.mark.parametrize(
    "msg",
    [
        update(9, 11, [{"symbol": "A", "bid": 9.0, "ts": 2}]),  # prev behind our seq
        update(11, 12, [{"symbol": "A", "bid": 9.0, "ts": 2}]),  # prev ahead: one was lost
        update(10, 11, [{"symbol": "A", "bid": 9.0, "ts": 2}], epoch="e2"),  # other epoch
    ],
)
def test_a_gap_raises_and_leaves_the_state_alone(msg: dict[str, Any]) -> None:
    st = ChannelState("chain.X")
    st.apply_snapshot(snapshot())
    with pytest.raises(Gap):
        st.apply_update(msg)
    assert st.rows["A"]["bid"] == 1.0
    assert (st.epoch, st.seq) == ("e1", 10)


def test_an_update_before_any_snapshot_is_a_gap() -> None:
    st = ChannelState("chain.X")
    assert st.resume_point() is None
    with pytest.raises(Gap):
        st.apply_update(update(0, 1, [{"symbol": "A", "ts": 1}]))


def test_a_snapshot_replaces_everything_even_in_a_new_epoch() -> None:
    st = ChannelState("chain.X")
    st.apply_snapshot(snapshot())
    st.apply_update(update(10, 11, [{"symbol": "A", "bid": 9.0, "ts": 2}]))
    new = snapshot(seq=3, epoch="e2")
    new["data"] = new["data"][:1]
    assert st.apply_snapshot(new) == ["A"]
    assert st.rows == {"A": {"symbol": "A", "bid": 1.0, "ask": 1.2, "iv": 0.2, "ts": 1}}
    assert (st.epoch, st.seq) == ("e2", 3)


def test_stats_records_are_keyed_by_underlying() -> None:
    st = ChannelState("stats.X")
    msg = {"type": "snapshot", "epoch": "e", "seq": 1,
           "data": [{"underlying": "X", "atm_iv": 0.2, "ts": 1}]}  # fmt: skip
    assert st.apply_snapshot(msg) == ["X"]
    st.apply_update({"epoch": "e", "prev": 1, "seq": 2, "data": [{"underlying": "X", "ts": 2}]})
    assert st.rows["X"] == {"underlying": "X", "atm_iv": 0.2, "ts": 2}


def test_a_malformed_update_changes_nothing() -> None:
    st = ChannelState("chain.X")
    st.apply_snapshot(snapshot())
    bad = update(10, 11, [{"symbol": "A", "bid": 5.0, "ts": 2}, {"bid": 1.0}])
    with pytest.raises(ValueError, match="symbol"):
        st.apply_update(bad)
    assert st.rows["A"]["bid"] == 1.0
    assert st.seq == 10


def test_merged_changes_unite_keys_and_keep_the_latest_position() -> None:
    a = Change("chain.X", "update", ["A", "B"], "e", 5)
    b = Change("chain.X", "update", ["B", "C"], "e", 9)
    assert merge_changes(a, b) == Change("chain.X", "update", ["A", "B", "C"], "e", 9)
    s = Change("chain.X", "snapshot", ["A"], "e2", 1)
    assert merge_changes(b, s).kind == "snapshot"


def test_frames_may_be_one_object_or_an_array() -> None:
    assert _decode('{"type":"heartbeat","ts":1}') == [{"type": "heartbeat", "ts": 1}]
    assert _decode('[{"type":"pong","id":1},{"type":"heartbeat"}]') == [
        {"type": "pong", "id": 1},
        {"type": "heartbeat"},
    ]
