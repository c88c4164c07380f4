"""Snapshots, updates, the sequence rule, resume and slow consumers, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from optionsfeed.aio import cancel_and_wait
from optionsfeed.gateway.session import Limits

from .conftest import Client, System, of_type, start_system
from .test_protocol_table import nearest_expiry

Connect = Callable[[], Any]


class ChannelState:
    """What a client holds for one channel, checking the sequence rule as it applies."""

    def __init__(self) -> None:
        self.epoch = ""
        self.seq = -1
        self.rows: dict[str, dict[str, Any]] = {}
        self.updates = 0

    def apply(self, m: dict[str, Any]) -> None:
        if m["type"] == "snapshot":
            self.epoch, self.seq = m["epoch"], m["seq"]
            self.rows = {_key(r): dict(r) for r in m["data"]}
            return
        assert m["epoch"] == self.epoch, (m["epoch"], self.epoch)
        assert m["prev"] == self.seq, f"gap: prev {m['prev']} after seq {self.seq}"
        assert m["seq"] > m["prev"]
        for r in m["data"]:
            self.rows.setdefault(_key(r), {}).update(r)
        self.seq = m["seq"]
        self.updates += 1


def _key(r: dict[str, Any]) -> str:
    return str(r.get("symbol", r.get("underlying")))


async def follow(c: Client, states: dict[str, ChannelState], seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            msgs = await c.messages(left)
        except TimeoutError:
            return
        for m in msgs:
            if m.get("type") in ("snapshot", "update"):
                states.setdefault(m["channel"], ChannelState()).apply(m)


async def test_updates_follow_the_snapshot_without_gap_and_match_rest(
    system: System, connect: Connect
) -> None:
    """Under a running feed every channel's updates chain from its snapshot; once the
    feed stops, the state each client built equals the REST chain."""
    exp = nearest_expiry(system)
    channels = [f"chain.SPY.{exp.replace('-', '')}", "chain.QQQ", "stats.SPY", "underlying.SPY"]
    clients = [await connect() for _ in range(3)]
    for i, c in enumerate(clients):
        await c.send({"op": "subscribe", "id": i, "channels": channels})
    states = [dict[str, ChannelState]() for _ in clients]
    await asyncio.gather(*(follow(c, s, 3.0) for c, s in zip(clients, states, strict=True)))
    await cancel_and_wait(system.task)  # the feed stops; let the last updates arrive
    await asyncio.gather(*(follow(c, s, 0.5) for c, s in zip(clients, states, strict=True)))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{system.http}/api/v1/chain/SPY?expiry={exp}") as r:
            rest = await r.json()
        async with http.get(f"{system.http}/api/v1/chain/QQQ") as r:
            rest_qqq = await r.json()
    for st in states:
        assert set(st) == set(channels)
        spy = st[channels[0]]
        assert spy.updates > 10
        assert spy.epoch == rest["epoch"]
        assert spy.seq <= rest["seq"]
        assert spy.rows == {r["symbol"]: r for r in rest["data"]}
        assert st["chain.QQQ"].rows == {r["symbol"]: r for r in rest_qqq["data"]}


async def test_resume_gets_exactly_the_missed_updates(system: System, connect: Connect) -> None:
    ch = "chain.SPY"
    c = await connect()
    await c.send({"op": "subscribe", "id": 1, "channels": [ch]})
    states: dict[str, ChannelState] = {}
    await follow(c, states, 1.0)
    st = states[ch]
    await c.ws.close()
    await asyncio.sleep(0.5)  # updates go by while the client is away
    c2 = await connect()
    await c2.send(
        {
            "op": "subscribe",
            "id": 2,
            "channels": [ch],
            "resume": {ch: {"epoch": st.epoch, "seq": st.seq}},
        }
    )
    await c2.next(of_type("ack"))
    first = await c2.next(lambda m: m.get("channel") == ch)
    assert first["type"] == "update"
    assert first["prev"] == st.seq
    st.apply(first)
    await follow(c2, states, 1.0)
    assert states[ch].updates > 1


async def test_resume_from_an_unknown_point_gets_a_snapshot(connect: Connect) -> None:
    c = await connect()
    for i, point in enumerate(({"epoch": "nope", "seq": 5}, {"epoch": "x", "seq": 0})):
        resume = {"stats.SPY": point}
        await c.send({"op": "subscribe", "id": i, "channels": ["stats.SPY"], "resume": resume})
        first = await c.next(lambda m: m.get("channel") == "stats.SPY")
        assert first["type"] == "snapshot"


async def test_a_client_that_stops_reading_is_conflated_not_buffered() -> None:
    """The socket backs up: the gateway's buffer stays bounded, and when the client
    reads again it gets merged updates whose prev/seq still chain."""
    limits = Limits(high_water=16 * 1024, low_water=4 * 1024, slow_close_s=60)
    system, stop = await start_system(limits, rate=20_000)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(system.url, max_msg_size=0)
            c = Client(ws)
            await c.send({"op": "subscribe", "id": 1, "channels": ["chain.SPY"]})
            states: dict[str, ChannelState] = {}
            await follow(c, states, 0.5)
            transport = ws._response.connection.transport  # type: ignore[union-attr]
            assert transport is not None
            transport.pause_reading()  # the client stops reading; the socket fills
            session = next(iter(system.gateway.sessions))
            peak = 0
            member = session.members["chain.SPY"]
            # Until the socket is full and updates merge (seconds on a busy machine).
            for _ in range(150):
                await asyncio.sleep(0.1)
                peak = max(peak, session.transport.get_write_buffer_size())
                if session.slow_since is not None and member.pending:
                    break
            assert session.slow_since is not None, "the gateway should have noticed"
            assert member.pending is not None
            assert member.pending.records
            # Bounded: at most what was in flight when the mark was crossed.
            assert peak < 16 * 1024 + 2 * 1024 * 1024
            transport.resume_reading()
            await follow(c, states, 2.0)
            assert session.slow_since is None
            assert states["chain.SPY"].updates > 0
            await ws.close()
    finally:
        await stop()
