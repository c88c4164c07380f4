"""Gateways over a real Redis: two of them agree, and a Redis restart heals without a gap."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from optionsfeed.aio import cancel_and_wait
from optionsfeed.broker.redis import RedisBroker

from .conftest import Client, of_type, start_gateway, start_system
from .test_stream import ChannelState, follow


async def _client(http: aiohttp.ClientSession, addr: str) -> Client:
    c = Client(await http.ws_connect(f"ws://{addr}/ws", max_msg_size=0))
    assert (await c.next())["type"] == "welcome"
    return c


@pytest.mark.timeout(60)
async def test_two_gateways_send_the_same_epoch_seq_and_records(redis_url: str) -> None:
    system, stop = await start_system(rate=3000, broker_url=redis_url)
    async with RedisBroker(redis_url) as other:
        _, addr2, stop2 = await start_gateway(other)
        try:
            async with aiohttp.ClientSession() as http:
                addr1 = system.url.split("/")[2]
                a, b = await _client(http, addr1), await _client(http, addr2)
                seen: list[dict[int, Any]] = [{}, {}]
                for c in (a, b):
                    await c.send({"op": "subscribe", "id": 1, "channels": ["chain.QQQ"]})
                states: list[dict[str, ChannelState]] = [{}, {}]

                async def watch(i: int, c: Client) -> None:
                    loop = asyncio.get_running_loop()
                    end = loop.time() + 3
                    while loop.time() < end:
                        for m in await c.messages(5):
                            if m.get("type") in ("snapshot", "update"):
                                states[i].setdefault(m["channel"], ChannelState()).apply(m)
                            if m.get("type") == "update":
                                seen[i][m["seq"]] = (m["epoch"], m["data"])

                await asyncio.gather(watch(0, a), watch(1, b))
                common = set(seen[0]) & set(seen[1])
                assert len(common) > 20
                assert all(seen[0][s] == seen[1][s] for s in common)
        finally:
            await stop2()
            await stop()


@pytest.mark.timeout(90)
async def test_a_redis_restart_resnapshots_live_clients_without_a_silent_gap(
    redis_server: Any, redis_url: str
) -> None:
    system, stop = await start_system(rate=3000, broker_url=redis_url)
    try:
        async with aiohttp.ClientSession() as http:
            c = await _client(http, system.url.split("/")[2])
            await c.send({"op": "subscribe", "id": 1, "channels": ["chain.SPY", "stats.SPY"]})
            states: dict[str, ChannelState] = {}
            await follow(c, states, 1.0)
            epoch = states["chain.SPY"].epoch
            redis_server.stop()
            await asyncio.sleep(1.0)
            redis_server.start()
            # Processing starts a new epoch; the gateway's feed resubscribes and resyncs.
            snap = await c.next(of_type("snapshot", "chain.SPY"), wait_s=30)
            assert snap["epoch"] != epoch
            states["chain.SPY"].apply(snap)
            await follow(c, states, 1.5)  # ChannelState asserts the sequence rule
            assert states["chain.SPY"].updates > 0
            await cancel_and_wait(system.task)
            await follow(c, states, 0.5)
            async with http.get(f"{system.http}/api/v1/chain/SPY") as r:
                rest = await r.json()
            assert states["chain.SPY"].epoch == rest["epoch"]
            assert states["chain.SPY"].rows == {r["symbol"]: r for r in rest["data"]}
    finally:
        await stop()
