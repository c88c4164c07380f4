"""Throttle, heartbeats, the connection limit and the slow-consumer close, over real sockets."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp

from optionsfeed.gateway.session import Limits

from .conftest import Client, of_type, start_gateway, start_system
from .test_stream import ChannelState


async def test_throttle_sends_at_most_one_frame_per_interval_and_keeps_the_sequence() -> None:
    system, stop = await start_system(rate=5000)
    try:
        async with aiohttp.ClientSession() as http:
            c = Client(await http.ws_connect(system.url, max_msg_size=0))
            await c.next(of_type("welcome"))
            await c.send(
                {"op": "subscribe", "id": 1, "channels": ["chain.SPY"], "throttle_ms": 300}
            )
            state = ChannelState()
            state.apply(await c.next(of_type("snapshot", "chain.SPY")))
            times: list[float] = []
            loop = asyncio.get_running_loop()
            end = loop.time() + 2.5
            while loop.time() < end:
                try:
                    msgs = await c.messages(end - loop.time())
                except TimeoutError:
                    break
                ups = [m for m in msgs if m.get("type") == "update"]
                if ups:
                    times.append(loop.time())
                for m in ups:
                    state.apply(m)  # asserts prev == the seq held
        # Unthrottled, SPY changes about 100 times a second; throttled, ~3 frames/s.
        assert 4 <= len(times) <= 10, len(times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Receive times, on a loop sharing the machine with the gateway: two frames sent
        # 300 ms apart can arrive closer. Exact timing: test_session.py's throttle test.
        assert min(gaps) > 0.1, gaps
        assert state.updates == len(times)
    finally:
        await stop()


async def test_an_idle_connection_gets_heartbeats() -> None:
    system, stop = await start_system(Limits(heartbeat_ms=200))
    try:
        async with aiohttp.ClientSession() as http:
            c = Client(await http.ws_connect(system.url))
            welcome = await c.next(of_type("welcome"))
            assert welcome["heartbeat_ms"] == 200
            beats = [await c.next(of_type("heartbeat"), wait_s=2) for _ in range(3)]
            assert all(isinstance(b["ts"], int) for b in beats)
    finally:
        await stop()


async def test_connections_past_the_limit_are_closed_with_1013() -> None:
    system, stop = await start_system()
    _, addr, stop_gw = await start_gateway(system.broker, max_connections=2)
    try:
        async with aiohttp.ClientSession() as http:
            held = [await http.ws_connect(f"ws://{addr}/ws") for _ in range(2)]
            for ws in held:
                assert (await ws.receive_json())["type"] == "welcome"
            extra = await http.ws_connect(f"ws://{addr}/ws")
            msg = await extra.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.data == 1013
    finally:
        await stop_gw()
        await stop()


async def test_a_client_that_never_drains_is_closed_with_4008() -> None:
    limits = Limits(high_water=8 * 1024, low_water=2 * 1024, slow_close_s=1.0)
    system, stop = await start_system(limits, rate=20_000)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(system.url, max_msg_size=0)
            await ws.send_json({"op": "subscribe", "id": 1, "channels": ["chain.SPY"]})
            transport = ws._response.connection.transport  # type: ignore[union-attr]
            assert transport is not None
            transport.pause_reading()
            session = next(iter(system.gateway.sessions))
            for _ in range(100):
                if session.closed:
                    break
                await asyncio.sleep(0.1)
            assert session.closed
            assert system.gateway.closes.get(4008) == 1
    finally:
        await stop()
