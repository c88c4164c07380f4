"""A scripted stand-in for the gateway, for what the real one does not do on demand.

It speaks only the transport: a welcome on each connection, then the test reads
what the client sent and writes what the server would (an `error` naming a
channel, a close with any code). It also serves the dashboard's static files and
a fixed `/api/v1/underlyings`, so a browser can run the page against it.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

from aiohttp import WSMsgType, web

from optionsfeed.dashboard import STATIC

WAIT_S = 5.0


class FakeConnection:
    """One client connection: `recv()` what the client sent, `send()` server messages."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def recv(self, op: str | None = None) -> dict[str, Any]:
        """The next message the client sent (of `op`, skipping others when given)."""
        async with asyncio.timeout(WAIT_S):
            while True:
                msg = await self.received.get()
                if op is None or msg.get("op") == op:
                    return msg

    async def send(self, *msgs: dict[str, Any]) -> None:
        """Each message in a frame of its own, in order."""
        for m in msgs:
            await self.ws.send_str(json.dumps(m))

    async def close(self, code: int, reason: str = "test") -> None:
        await self.ws.close(code=code, message=reason.encode())


class FakeGateway:
    """`async with FakeGateway() as gw:` listens on 127.0.0.1, port 0; `connection()`
    returns each client connection in the order they came. `/readyz` answers the body
    in `readyz` (200 when its status is "ready", else 503)."""

    def __init__(self, underlyings: dict[str, list[str]] | None = None) -> None:
        self.underlyings = underlyings or {}
        self.readyz: dict[str, Any] = {"status": "ready"}
        self._connections: asyncio.Queue[FakeConnection] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self.http = ""

    @property
    def url(self) -> str:
        return self.http.replace("http://", "ws://") + "/ws"

    async def connection(self) -> FakeConnection:
        async with asyncio.timeout(WAIT_S):
            return await self._connections.get()

    def connected(self) -> bool:
        """Whether a connection came that `connection()` has not returned yet."""
        return not self._connections.empty()

    async def __aenter__(self) -> FakeGateway:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/api/v1/underlyings", self._underlyings)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert self._runner.addresses
        host, port = self._runner.addresses[0][:2]
        self.http = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _index(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _readyz(self, _: web.Request) -> web.Response:
        status = 200 if self.readyz.get("status") == "ready" else 503
        return web.json_response(self.readyz, status=status)

    async def _underlyings(self, _: web.Request) -> web.Response:
        listed = [{"symbol": u, "expiries": e, "contracts": 0} for u, e in self.underlyings.items()]
        return web.json_response({"underlyings": listed})

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(
            json.dumps({"type": "welcome", "protocol": 1, "connection_id": "c-fake",
                        "node": "fake", "heartbeat_ms": 10_000,
                        "limits": {"max_channels": 500, "max_message_bytes": 65536}})
        )  # fmt: skip
        conn = FakeConnection(ws)
        self._connections.put_nowait(conn)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                conn.received.put_nowait(json.loads(msg.data))
        return ws


def ack(msg: dict[str, Any], refused: dict[str, str] | None = None) -> dict[str, Any]:
    """The ack of a subscribe or unsubscribe `msg`: ok, or refused with a code per channel."""
    refused = refused or {}
    results = [
        {"channel": ch, "ok": False, "error": {"code": refused[ch], "message": "test"}}
        if ch in refused
        else {"channel": ch, "ok": True}
        for ch in msg["channels"]
    ]
    return {"type": "ack", "id": msg["id"], "results": results}


def channel_error(channel: str, code: str) -> dict[str, Any]:
    """The server stops serving `channel` (PROTOCOL.md's error naming a channel)."""
    return {"type": "error", "id": None, "channel": channel,
            "error": {"code": code, "message": f"{channel}: test"}}  # fmt: skip
