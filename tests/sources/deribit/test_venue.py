"""The local venue itself answers as Deribit documents (so the adapter tests mean something)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import aiohttp

from ...fakes.deribit import DeribitVenue
from .fixtures import chain, ticker

BTC = chain("BTC", date.today(), 90_000)


async def call(ws: aiohttp.ClientWebSocketResponse, text: str) -> dict[str, Any]:
    await ws.send_str(text)
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    out: dict[str, Any] = json.loads(msg.data)
    return out


def request(i: int, method: str, params: dict[str, Any] | None = None) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params or {}})


async def test_requests_and_errors() -> None:
    """Results, -32601 for an unknown method, -32700 for text that is not JSON, -32600
    for JSON that is not a request, -32602 for bad params; Deribit's extra fields."""
    async with DeribitVenue(BTC) as venue, aiohttp.ClientSession() as http:
        async with http.ws_connect(venue.url) as ws:
            r = await call(ws, request(1, "public/test"))
            assert r["id"] == 1
            assert "version" in r["result"]
            assert {"usIn", "usOut", "usDiff", "testnet"} <= r.keys()
            r = await call(ws, request(2, "public/get_instruments", {"currency": "BTC"}))
            assert [i["instrument_name"] for i in r["result"]] == [
                i["instrument_name"] for i in BTC
            ]
            r = await call(ws, request(3, "public/nope"))
            assert (r["id"], r["error"]["code"], r["error"]["message"]) == (
                3, -32601, "Method not found",
            )  # fmt: skip
            r = await call(ws, "{oops")
            assert (r["id"], r["error"]["code"]) == (None, -32700)
            r = await call(ws, '[{"id": 4}]')
            assert (r["id"], r["error"]["code"]) == (None, -32600)
            r = await call(ws, '{"id": 5, "params": {}}')
            assert (r["id"], r["error"]["code"]) == (5, -32600)
            r = await call(ws, request(6, "public/subscribe", {"channels": "ticker.x"}))
            assert r["error"]["code"] == -32602
            assert r["error"]["data"]["param"] == "channels"
            r = await call(ws, request(7, "public/set_heartbeat", {"interval": 5}))
            assert r["error"]["code"] == -32602
        sent = [m for _, m in venue.received]
        assert sent[3:5] == ["{oops", [{"id": 4}]]  # logged as sent, parsed where possible
        assert [m.get("id") for m in sent if isinstance(m, dict)] == [1, 2, 3, 5, 6, 7]


async def test_subscriptions() -> None:
    """Unknown channels are left out of the result; notifications go to subscribers."""
    name = BTC[0]["instrument_name"]
    known = [f"ticker.{name}.100ms", "deribit_price_index.btc_usd"]
    async with (
        DeribitVenue(BTC) as venue,
        aiohttp.ClientSession() as http,
        http.ws_connect(venue.url) as ws,
    ):
        channels = [*known, "ticker.BTC-1JAN20-1-C.100ms", "book.BTC-PERPETUAL.100ms"]
        r = await call(ws, request(1, "public/subscribe", {"channels": channels}))
        assert r["result"] == known
        assert await venue.push_ticker(ticker(BTC[0], 1, 90_000.0)) == 1
        assert await venue.push_ticker(ticker(BTC[1], 1, 90_000.0)) == 0
        msg = json.loads((await ws.receive(timeout=5)).data)
        assert msg["method"] == "subscription"
        assert msg["params"]["channel"] == f"ticker.{name}.100ms"
        r = await call(ws, request(2, "public/unsubscribe", {"channels": [known[0], "x"]}))
        assert r["result"] == [known[0]]
        assert await venue.push_ticker(ticker(BTC[0], 2, 90_000.0)) == 0


async def test_a_client_that_does_not_answer_test_requests_is_cut() -> None:
    async with DeribitVenue(BTC, min_heartbeat_s=0.05) as venue, aiohttp.ClientSession() as http:
        async with http.ws_connect(venue.url) as ws:
            r = await call(ws, request(1, "public/set_heartbeat", {"interval": 0.05}))
            assert r["result"] == "ok"
            msg = json.loads((await ws.receive(timeout=5)).data)
            assert msg == {
                "jsonrpc": "2.0",
                "method": "heartbeat",
                "params": {"type": "test_request"},
            }
            closing = await ws.receive(timeout=5)  # no public/test sent: the venue closes
            assert closing.type == aiohttp.WSMsgType.CLOSE
        assert venue.heartbeat_closes == 1
