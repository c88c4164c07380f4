"""The client's reconnect, channel-error, resubscribe and number rules, against a fake gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from optionsfeed.client import ChannelState, Client, ConnectionClosed, InvalidRequest
from optionsfeed.client.connection import MAX_SAFE_INTEGER

from .fake_gateway import FakeConnection, FakeGateway, ack, channel_error
from .test_client import snapshot, update

CH = "chain.X"


@contextlib.asynccontextmanager
async def live(**options: Any) -> AsyncIterator[tuple[FakeGateway, FakeConnection, Client]]:
    """A client holding `chain.X` at epoch e1, seq 11 (a snapshot and one update)."""
    options = {"backoff_min_s": 0.01, "backoff_max_s": 0.5, "retry_min_s": 0.05, **options}
    async with FakeGateway() as gw, Client(gw.url, **options) as c:
        conn = await gw.connection()
        subscribing = asyncio.create_task(c.subscribe([CH]))
        await conn.send(ack(await conn.recv()), snapshot(10))
        await subscribing
        await conn.send(update(10, 11, [{"symbol": "A", "bid": 1.1, "ts": 2}]))
        await applied(c, 11)
        yield gw, conn, c


async def applied(c: Client, seq: int) -> None:
    """Wait until `c` notifies that `chain.X` is at `seq`."""
    async with asyncio.timeout(5.0):
        async for change in c.changes():
            if change.channel == CH and change.seq == seq:
                return


async def drain(c: Client) -> None:
    async with asyncio.timeout(5.0):
        async for _ in c.changes():
            pass


async def settled(conn: FakeConnection, c: Client) -> None:
    """Return once `c` has read everything `conn` sent so far (replies come in order)."""
    unsubscribing = asyncio.create_task(c.unsubscribe(["underlying.Z"]))
    await conn.send(ack(await conn.recv("unsubscribe")))
    await unsubscribing


@pytest.mark.parametrize("code", [1000, 1001, 1007, 1011, 1013, 4008, 4029])
async def test_every_close_but_1008_and_1009_reconnects_and_resumes(code: int) -> None:
    async with live() as (gw, conn, c):
        loop = asyncio.get_running_loop()
        closed = loop.time()
        await conn.close(code)
        again = await gw.connection()
        waited = loop.time() - closed
        msg = await again.recv()
        assert msg["op"] == "subscribe"
        assert msg["channels"] == [CH]
        assert msg["resume"] == {CH: {"epoch": "e1", "seq": 11}}
        if code in (4008, 4029):
            assert waited >= 0.25  # at least half the penalty floor (here backoff_max_s)
        await again.send(ack(msg), update(11, 12, [{"symbol": "B", "ask": 2.5, "ts": 3}]))
        await applied(c, 12)
        assert c.reconnects == 1
        assert c.last_close is not None
        assert c.last_close[0] == code
        assert c.gaps == 0


@pytest.mark.parametrize("code", [1008, 1009])
async def test_1008_and_1009_end_the_stream(code: int) -> None:
    async with live() as (gw, conn, c):
        await conn.close(code, "no")
        with pytest.raises(ConnectionClosed) as info:
            await drain(c)
        assert info.value.code == code
        assert c.reconnects == 0
        assert not gw.connected()


async def test_penalty_closes_never_end_the_stream_by_default() -> None:
    async with live(backoff_max_s=0.02) as (gw, conn, c):
        for _ in range(7):
            await conn.close(4029)
            conn = await gw.connection()
            await conn.send(ack(await conn.recv()))
        assert c.reconnects == 7


@pytest.mark.parametrize("code", ["not_entitled", "unknown_symbol", "invalid_channel"])
async def test_an_error_naming_a_channel_for_good_drops_it(code: str) -> None:
    async with live() as (_, conn, c):
        await conn.send(channel_error(CH, code))
        await settled(conn, c)
        assert c.lost[CH]["code"] == code
        assert c.channels == []
        assert c.channel_errors == 1
        await asyncio.sleep(0.2)  # longer than a retry's pause: none must come
        subscribing = asyncio.create_task(c.subscribe(["stats.X"]))
        msg = await conn.recv()
        assert msg["channels"] == ["stats.X"]
        await conn.send(ack(msg))
        await subscribing


async def test_an_internal_error_naming_a_channel_resubscribes_with_resume_after_a_pause() -> None:
    async with live() as (_, conn, c):
        loop = asyncio.get_running_loop()
        for pause in (0.05, 0.1):  # it doubles while the channel keeps failing
            failed = loop.time()
            await conn.send(channel_error(CH, "internal"))
            msg = await conn.recv()
            assert loop.time() - failed >= pause
            assert msg["channels"] == [CH]
            assert msg["resume"] == {CH: {"epoch": "e1", "seq": 11}}
            await conn.send(ack(msg))
        await conn.send(update(11, 12, [{"symbol": "A", "bid": 1.2, "ts": 3}]))
        await applied(c, 12)
        assert c.channels == [CH]
        assert c.lost == {}
        assert c.gaps == 0
        assert c.channel_errors == 2


async def test_a_refused_resubscribe_is_retried_or_dropped_by_its_code() -> None:
    async with live() as (_, conn, c):
        await conn.send(update(50, 51, [{"symbol": "A", "ts": 3}]))  # a gap
        msg = await conn.recv()
        await conn.send(ack(msg, {CH: "internal"}))
        msg = await conn.recv()
        assert msg["resume"] == {CH: {"epoch": "e1", "seq": 11}}
        await conn.send(ack(msg, {CH: "not_entitled"}))
        await settled(conn, c)
        assert c.lost[CH]["code"] == "not_entitled"
        assert c.channels == []


async def test_a_resubscribe_ignores_the_old_subscription_until_its_ack() -> None:
    """Updates in flight before the ack belong to the replaced subscription; the new
    base (here the resumed updates) follows the ack and starts at the resume point."""
    async with live() as (_, conn, c):
        again = asyncio.create_task(c.subscribe([CH], throttle_ms=250))
        msg = await conn.recv()
        assert msg["throttle_ms"] == 250
        assert msg["resume"] == {CH: {"epoch": "e1", "seq": 11}}
        await conn.send(update(11, 12, [{"symbol": "A", "bid": 9.0, "ts": 3}]), ack(msg))
        await again
        assert c.state(CH).seq == 11
        await conn.send(update(11, 13, [{"symbol": "A", "bid": 1.3, "ts": 4}]))
        await applied(c, 13)
        assert c.state(CH).rows["A"]["bid"] == 1.3
        assert c.gaps == 0


async def test_a_gap_resubscribes_once_and_applies_from_the_new_base() -> None:
    async with live() as (_, conn, c):
        stale = [update(p, p + 1, [{"symbol": "A", "bid": 7.0, "ts": 3}]) for p in (12, 13, 14)]
        await conn.send(*stale)
        msg = await conn.recv()
        assert msg["resume"] == {CH: {"epoch": "e1", "seq": 11}}
        await conn.send(ack(msg))
        # The base is a fresh snapshot here: the ack left nothing in between to apply.
        await conn.send(snapshot(20))
        await conn.send(update(20, 21, [{"symbol": "B", "bid": 2.1, "ts": 4}]))
        await applied(c, 21)
        assert c.gaps == 1
        assert conn.received.empty()  # one resubscribe, whatever was in flight


@pytest.mark.parametrize("throttle_ms", [-1, 60_001, 2**53, 1.5, True, "250", None])
async def test_out_of_range_numbers_are_refused_before_sending(throttle_ms: Any) -> None:
    async with live() as (_, conn, c):
        with pytest.raises(InvalidRequest, match="throttle_ms") as info:
            await c.subscribe(["stats.X"], throttle_ms=throttle_ms)
        assert isinstance(info.value, ValueError)
        for bad in ("stats.X", ["stats.X", 7], ["chain.\ud800"]):
            with pytest.raises(InvalidRequest, match="channel"):
                await c.subscribe(bad)  # type: ignore[arg-type]
        # Nothing went out: the next message the server reads is this one.
        subscribing = asyncio.create_task(c.subscribe(["stats.X"], throttle_ms=60_000))
        msg = await conn.recv()
        assert (msg["channels"], msg["throttle_ms"]) == (["stats.X"], 60_000)
        await conn.send(ack(msg))
        await subscribing


def test_request_ids_stay_within_2_to_the_53() -> None:
    c = Client("ws://127.0.0.1:9/ws")
    c._last_id = MAX_SAFE_INTEGER - 1
    assert c._new_request("ping", []).id == MAX_SAFE_INTEGER
    assert c._new_request("ping", []).id == 1


@pytest.mark.parametrize("seq", [2**53, -1, 1.0, True])
def test_a_seq_out_of_range_is_malformed_and_changes_nothing(seq: Any) -> None:
    st = ChannelState(CH)
    with pytest.raises(ValueError, match="2\\^53"):
        st.apply_snapshot(snapshot(seq))
    assert st.epoch is None
    st.apply_snapshot(snapshot(MAX_SAFE_INTEGER - 1))
    with pytest.raises(ValueError, match="2\\^53"):
        st.apply_update(update(MAX_SAFE_INTEGER - 1, seq, [{"symbol": "A", "ts": 2}]))
    assert st.seq == MAX_SAFE_INTEGER - 1
