"""`GET /ws`: the WebSocket endpoint over aiohttp, and the sessions of this process.

aiohttp does the HTTP upgrade, reads client frames (enforcing the message size
limit with close 1009) and answers WebSocket pings. Outgoing frames bypass its
per-message writer: a session writes one pre-built frame per flush straight to
the transport (see session.py), which is what keeps the cost per client low.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST

from ..model.records import encode
from .auth import EVERYTHING, TokenStore, token_of
from .hub import Hub
from .metrics import GatewayMetrics
from .session import DEFAULT_LIMITS, Limits, Session

log = logging.getLogger("optionsfeed.gateway")

TICK_S = 0.05


class Gateway:
    """The WebSocket side of one gateway process: hub, sessions, timers."""

    def __init__(
        self,
        hub: Hub,
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_connections: int = 10_000,
        node: str | None = None,
        tokens: TokenStore | None = None,
        allow_origins: frozenset[str] = frozenset(),
    ) -> None:
        self.hub = hub
        self.tokens = tokens
        self.allow_origins = allow_origins
        self.limits = limits
        self.max_connections = max_connections
        self.node = node or f"{socket.gethostname()}-{os.getpid()}"
        self.sessions: set[Session] = set()
        self._all_gone = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self.totals = {"frames_out": 0, "bytes_out": 0, "conflated_records": 0}  # ended sessions
        self.closes: dict[int, int] = {}  # server-initiated closes by code
        self.metrics = GatewayMetrics()
        self.metrics.attach(self)
        hub.metrics = self.metrics

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="gateway ticker")

    async def _tick(self) -> None:
        cpu = time.process_time()
        while True:
            asked = time.monotonic()
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            # The whole process's CPU time: one thread runs the loop and everything else.
            spent = time.process_time()
            used, cpu = spent - cpu, spent
            self.hub.pace(used, now - asked, now - asked - TICK_S)
            for s in list(self.sessions):
                s.tick(now)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if self.allow_origins and origin is not None and origin not in self.allow_origins:
            return _refuse(403, "forbidden", f"origin {origin} is not allowed")
        ent = EVERYTHING
        if self.tokens is not None:
            token = token_of(request)
            try:
                found = await self.tokens.lookup(token) if token else None
            except Exception as exc:  # the token store (Redis) is unreachable
                log.warning("token lookup failed: %s", exc)
                return _refuse(503, "internal", "cannot check the token now; retry")
            if found is None:
                return _refuse(401, "unauthorized", "a valid bearer token is required")
            ent = found
        ws = web.WebSocketResponse(
            max_msg_size=self.limits.max_message_bytes,
            compress=False,
            heartbeat=self.limits.heartbeat_ms / 1000 * 3,
            # Pings are answered below, under the session's rate limit: answered
            # unconditionally, a ping flood from a client that never reads would
            # pile pongs up in the write buffer.
            autoping=False,
        )
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        if len(self.sessions) >= self.max_connections:
            self.closes[1013] = self.closes.get(1013, 0) + 1
            await ws.close(code=1013, message=b"too many connections, try again later")
            return ws
        closing: list[asyncio.Task[bool]] = []

        def close(code: int, reason: str) -> None:
            self.closes[code] = self.closes.get(code, 0) + 1
            closing.append(asyncio.create_task(ws.close(code=code, message=reason.encode())))

        session = Session(
            self.hub, transport, close, limits=self.limits, node=self.node, entitlements=ent
        )
        self.sessions.add(session)
        session.start()
        try:
            async for msg in ws:
                try:
                    if msg.type is WSMsgType.TEXT:
                        session.on_text(msg.data)
                    elif msg.type is WSMsgType.BINARY:
                        session.on_binary()
                    elif msg.type is WSMsgType.PING and session.admit_ping() and not session.closed:
                        await ws.pong(msg.data)
                except Exception:  # a bug, not the client's fault: 1011, with a close frame
                    log.exception("connection %s: closing after an internal error", session.id)
                    session.close(1011, "internal error")
                if session.closed:
                    break
        finally:
            self.sessions.discard(session)
            self.totals["frames_out"] += session.frames_out
            self.totals["bytes_out"] += session.bytes_out
            self.totals["conflated_records"] += session.conflated
            if not self.sessions:
                self._all_gone.set()
            session.release()
            await session.wait_released()
            for t in closing:
                await t
        return ws

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Close every client with 1001 (going away), within `timeout_s`."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self.sessions:
            self._all_gone.clear()
            for s in list(self.sessions):
                s.close(1001, "server shutting down")
            try:
                await asyncio.wait_for(self._all_gone.wait(), timeout_s)
            except TimeoutError:
                log.warning("%d connections still open after %.0f s", len(self.sessions), timeout_s)
        await self.hub.aclose()


def _refuse(status: int, code: str, message: str) -> web.Response:
    """An HTTP error before any upgrade (no WebSocket is opened)."""
    body = encode({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json")
