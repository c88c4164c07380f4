"""Every row of PROTOCOL.md's "Exact replies to every kind of input", over a real socket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from .conftest import Client, System, of_type

Connect = Callable[[], Any]


async def read_until_closed(c: Client) -> list[dict[str, Any]]:
    """Every message until the server closes the connection."""
    got: list[dict[str, Any]] = []
    while True:
        try:
            got += await c.messages()
        except ConnectionError:
            return got


def nearest_expiry(system: System, underlying: str = "SPY") -> str:
    chain = system.service.processor.chains[underlying]
    return min(chain.expiry_str)


async def test_the_welcome_names_protocol_heartbeat_and_limits(connect: Connect) -> None:
    c = await connect()
    await c.send({"op": "ping", "id": 1})
    pong = await c.next(of_type("pong"))
    assert pong["id"] == 1
    assert isinstance(pong["ts"], int)


@pytest.mark.parametrize(
    ("text", "code", "id"),
    [
        ("not json", "bad_request", None),
        ("[1, 2]", "bad_request", None),
        ('"a string"', "bad_request", None),
        ('{"id": 3}', "bad_request", 3),
        ('{"op": 5, "id": 4}', "bad_request", 4),
        ('{"op": "subscribe", "id": 5, "channels": "chain.SPY"}', "bad_request", 5),
        ('{"op": "subscribe", "id": 6, "channels": [1]}', "bad_request", 6),
        ('{"op": "subscribe", "id": "7", "channels": ["chain.SPY"]}', "bad_request", None),
        ('{"op": "subscribe", "id": 8, "channels": ["stats.SPY"], "throttle_ms": -1}', "bad_request", 8),
        ('{"op": "subscribe", "id": 9, "channels": ["stats.SPY"], "resume": {"stats.SPY": {"seq": 1}}}', "bad_request", 9),
        ('{"op": "subscribe", "id": 10, "channels": ["stats.SPY"], "resume": []}', "bad_request", 10),
        ('{"op": "subscribe", "id": true, "channels": ["stats.SPY"]}', "bad_request", None),
        ('{"op": "fly", "id": 11}', "unknown_op", 11),
    ],
)  # fmt: skip
async def test_malformed_input_gets_its_error_and_keeps_the_connection(
    connect: Connect, text: str, code: str, id: int | None
) -> None:
    c = await connect()
    await c.send(text)
    err = await c.next(of_type("error"))
    assert err["error"]["code"] == code
    assert err["id"] == id
    assert err["error"]["message"]
    await c.send({"op": "ping", "id": 99})
    assert (await c.next(of_type("pong")))["id"] == 99


async def test_a_binary_frame_is_a_bad_request_and_the_connection_stays(connect: Connect) -> None:
    c = await connect()
    await c.ws.send_bytes(b'{"op":"ping","id":1}')
    err = await c.next(of_type("error"))
    assert err["error"]["code"] == "bad_request"
    assert err["id"] is None
    await c.send({"op": "ping", "id": 2})
    assert (await c.next(of_type("pong")))["id"] == 2


async def test_subscribe_acks_each_channel_in_order(system: System, connect: Connect) -> None:
    c = await connect()
    exp = nearest_expiry(system).replace("-", "")
    channels = [
        f"chain.SPY.{exp}", "CHAIN.SPY", "chain.spy", "chain.SPY.20261399", "chain.NOPE",
        "chain.SPY.20991218", "option.SPY991218C00500000", "weather.SPY", "stats.QQQ",
    ]  # fmt: skip
    await c.send({"op": "subscribe", "id": 7, "channels": channels})
    ack = await c.next(of_type("ack"))
    assert ack["id"] == 7
    assert [r["channel"] for r in ack["results"]] == channels
    codes = [r["ok"] or r["error"]["code"] for r in ack["results"]]
    assert codes == [
        True, "invalid_channel", "invalid_channel", "invalid_channel", "unknown_symbol",
        "unknown_symbol", "unknown_symbol", "invalid_channel", True,
    ]  # fmt: skip
    snaps = {(await c.next(of_type("snapshot")))["channel"] for _ in range(2)}
    assert snaps == {f"chain.SPY.{exp}", "stats.QQQ"}


async def test_unsubscribe_is_idempotent(connect: Connect) -> None:
    c = await connect()
    await c.send({"op": "unsubscribe", "id": 1, "channels": ["stats.SPY", "bogus"]})
    ack = await c.next(of_type("ack"))
    assert ack["id"] == 1
    assert [r["ok"] for r in ack["results"]] == [True, True]


async def test_subscribing_again_sends_a_fresh_snapshot(connect: Connect) -> None:
    c = await connect()
    for i in (1, 2):
        await c.send({"op": "subscribe", "id": i, "channels": ["underlying.SPY"]})
        assert (await c.next(of_type("ack")))["results"][0]["ok"]
        snap = await c.next(of_type("snapshot", "underlying.SPY"))
        assert snap["data"][0]["symbol"] == "SPY"


async def test_channels_past_the_limit_get_too_many_channels(connect: Connect) -> None:
    """The fixture's limit is 5 held channels, counted after earlier unsubscribes."""
    c = await connect()
    first = ["stats.SPY", "stats.QQQ", "underlying.SPY", "underlying.QQQ"]
    await c.send({"op": "subscribe", "id": 1, "channels": first})
    await c.next(of_type("ack"))
    await c.send({"op": "subscribe", "id": 2, "channels": ["chain.SPY", "chain.QQQ"]})
    ack = await c.next(of_type("ack"))
    assert [r["ok"] or r["error"]["code"] for r in ack["results"]] == [True, "too_many_channels"]
    await c.send({"op": "unsubscribe", "id": 3, "channels": ["stats.SPY"]})
    await c.next(of_type("ack"))
    await c.send({"op": "subscribe", "id": 4, "channels": ["chain.QQQ"]})
    ack = await c.next(of_type("ack"))
    assert ack["results"][0]["ok"] is True


async def test_a_message_over_the_size_limit_closes_with_1009(connect: Connect) -> None:
    c = await connect()
    await c.send({"op": "ping", "id": 1, "pad": "x" * 70_000})
    await read_until_closed(c)
    assert c.ws.close_code == 1009


async def test_a_flood_is_rate_limited_then_closed_with_4029(connect: Connect) -> None:
    c = await connect()
    for i in range(400):
        await c.send({"op": "ping", "id": i})
    got = await read_until_closed(c)
    assert any(m.get("error", {}).get("code") == "rate_limited" for m in got)
    assert c.ws.close_code == 4029


async def test_rest_and_ws_share_the_port(system: System) -> None:
    async with aiohttp.ClientSession() as s, s.get(system.http + "/healthz") as r:
        assert r.status == 200


async def test_the_root_serves_the_dashboard_and_its_assets(system: System) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(system.http + "/") as r:
            assert r.status == 200
            text = await r.text()
        assert "/static/app.js" in text
        async with s.get(system.http + "/static/app.js") as r:
            assert r.status == 200
            assert "WebSocket" in await r.text()
