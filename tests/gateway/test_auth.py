"""Bearer tokens, entitlements and the Origin allow-list, on /ws and the REST API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from optionsfeed.gateway.auth import EVERYTHING, Entitlements, load_tokens

from .conftest import Client, System, of_type, start_gateway

TOKENS = '{"t-all": ["*"], "t-spy": ["SPY"]}'


@pytest.fixture
async def secured(system: System) -> AsyncIterator[str]:
    tokens = load_tokens(TOKENS, redis_url=None)
    _, addr, stop = await start_gateway(
        system.broker, tokens=tokens, allow_origins=frozenset({"https://desk.example"})
    )
    try:
        yield addr
    finally:
        await stop()


async def _status(http: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    try:
        async with http.ws_connect(url, **kw) as ws:
            await ws.close()
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_no_token_or_a_bad_one_is_401_before_upgrade(secured: str) -> None:
    async with aiohttp.ClientSession() as http:
        assert await _status(http, f"ws://{secured}/ws") == 401
        assert await _status(http, f"ws://{secured}/ws?token=nope") == 401
        bad = {"Authorization": "Bearer nope"}
        assert await _status(http, f"ws://{secured}/ws", headers=bad) == 401
        assert await _status(http, f"ws://{secured}/ws?token=t-all") == 101
        good = {"Authorization": "Bearer t-spy"}
        assert await _status(http, f"ws://{secured}/ws", headers=good) == 101


class _CountingTokens:
    """Every token is good; counts the lookups that reach it."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def lookup(self, token: str) -> Entitlements | None:
        self.lookups.append(token)
        return EVERYTHING


async def test_tokens_no_store_could_hold_are_401_without_a_lookup(system: System) -> None:
    """Over-long or non-ASCII tokens are refused before the store (Redis) sees them."""
    store = _CountingTokens()
    _, addr, stop = await start_gateway(system.broker, tokens=store)
    try:
        async with aiohttp.ClientSession() as http:
            for bad in ["x" * 600, "t-%C3%A4ll", "t-all%00", "t%E2%80%8Ball"]:
                assert await _status(http, f"ws://{addr}/ws?token={bad}") == 401
            assert store.lookups == []
            assert await _status(http, f"ws://{addr}/ws?token=t-fine") == 101
            assert store.lookups == ["t-fine"]
    finally:
        await stop()


async def test_a_foreign_origin_is_refused(secured: str) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"ws://{secured}/ws?token=t-all"
        assert await _status(http, url, origin="https://evil.example") == 403
        assert await _status(http, url, origin="https://desk.example") == 101


async def test_channels_outside_the_entitlements_are_not_entitled(secured: str) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://{secured}/ws?token=t-spy", max_msg_size=0)
        c = Client(ws)
        await c.next(of_type("welcome"))
        await c.send({"op": "subscribe", "id": 1, "channels": ["stats.SPY", "stats.QQQ"]})
        ack = await c.next(of_type("ack"))
        assert [r["ok"] or r["error"]["code"] for r in ack["results"]] == [True, "not_entitled"]
        await ws.close()


async def test_rest_needs_the_token_and_respects_entitlements(secured: str) -> None:
    base = f"http://{secured}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/chain/SPY") as r:
            assert r.status == 401
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
        spy = {"Authorization": "Bearer t-spy"}
        async with http.get(f"{base}/api/v1/chain/QQQ", headers=spy) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "not_entitled"
        async with http.get(f"{base}/api/v1/chain/SPY", headers=spy) as r:
            assert r.status == 200
        async with http.get(f"{base}/api/v1/underlyings?token=t-spy") as r:
            assert [u["symbol"] for u in (await r.json())["underlyings"]] == ["SPY"]


async def test_tokens_kept_in_redis_are_shared_and_revocable(
    system: System, redis_url: str
) -> None:
    r = aioredis.from_url(redis_url)
    await r.hset("of:tokens", mapping={"t-redis": '["QQQ"]'})
    tokens = load_tokens("redis", redis_url=redis_url)
    _, addr, stop = await start_gateway(system.broker, tokens=tokens)
    try:
        async with aiohttp.ClientSession() as http:
            assert await _status(http, f"ws://{addr}/ws?token=t-redis") == 101
            assert await _status(http, f"ws://{addr}/ws?token=t-other") == 401
    finally:
        await stop()
        await r.aclose()
        await tokens.aclose()  # type: ignore[attr-defined]
