"""`GET /ws`: the WebSocket endpoint over aiohttp, and the sessions of this process.

aiohttp does the HTTP upgrade, reads client frames (enforcing the message size
limit with close 1009) and answers WebSocket pings. Outgoing frames bypass its
per-message writer: a session writes one pre-built frame per flush straight to
the transport (see session.py), which is what keeps the cost per client low.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from aiohttp import WSMsgType, web

from .hub import Hub
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
    ) -> None:
        self.hub = hub
        self.limits = limits
        self.max_connections = max_connections
        self.node = node or socket.gethostname()
        self.sessions: set[Session] = set()
        self._all_gone = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self.closed_slow = 0
        self.closed_flood = 0

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="gateway ticker")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for s in list(self.sessions):
                s.tick(now)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=self.limits.max_message_bytes,
            compress=False,
            heartbeat=self.limits.heartbeat_ms / 1000 * 3,
        )
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        if len(self.sessions) >= self.max_connections:
            await ws.close(code=1013, message=b"too many connections, try again later")
            return ws
        closing: list[asyncio.Task[bool]] = []

        def close(code: int, reason: str) -> None:
            closing.append(asyncio.create_task(ws.close(code=code, message=reason.encode())))

        session = Session(self.hub, transport, close, limits=self.limits, node=self.node)
        self.sessions.add(session)
        session.start()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    session.on_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    session.on_binary()
                if session.closed:
                    break
        finally:
            self.sessions.discard(session)
            if not self.sessions:
                self._all_gone.set()
            session.release()
            for t in closing:
                await t
        return ws

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
