"""A whole system in the test's event loop: simulator -> processing -> broker -> gateway.

Clients are real WebSocket connections over loopback (aiohttp's client).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from optionsfeed.aio import cancel_and_wait
from optionsfeed.broker import open_broker
from optionsfeed.broker.base import Broker
from optionsfeed.gateway.hub import Hub
from optionsfeed.gateway.rest import make_app
from optionsfeed.gateway.server import Gateway
from optionsfeed.gateway.session import Limits
from optionsfeed.processing.service import ProcessingService
from optionsfeed.sources.sim.source import SimSource


@dataclass
class System:
    url: str
    http: str
    broker: Broker
    service: ProcessingService
    gateway: Gateway
    task: asyncio.Task[None]


class Client:
    """A protocol client that reads every message (arrays unpacked) into a queue."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.backlog: list[dict[str, Any]] = []  # read from a frame, not yet consumed

    async def send(self, obj: Any) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def messages(self, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """The backlog, else the messages of the next frame."""
        if self.backlog:
            out, self.backlog = self.backlog, []
            return out
        msg = await self.ws.receive(timeout=wait_s)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"{msg.type.name}: {msg.data} {msg.extra}")
        data = json.loads(msg.data)
        return data if isinstance(data, list) else [data]

    async def next(
        self, pred: Callable[[dict[str, Any]], bool] = lambda m: True, wait_s: float = 5.0
    ) -> dict[str, Any]:
        """The next message that satisfies `pred` (others are skipped)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_s
        while True:
            msgs = await self.messages(max(0.01, end - loop.time()))
            for i, m in enumerate(msgs):
                if pred(m):
                    self.backlog = msgs[i + 1 :] + self.backlog
                    return m


def of_type(t: str, channel: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == t and (channel is None or m.get("channel") == channel)


async def start_gateway(
    broker: Broker, limits: Limits | None = None, **options: Any
) -> tuple[Gateway, str, Callable[[], Any]]:
    """A gateway (REST + /ws) over `broker` on a free port: (gateway, host:port, stop)."""
    gw = Gateway(Hub(broker), limits=limits or Limits(max_channels=5), **options)
    gw.start()

    async def ready() -> str | None:
        return None

    app = make_app(broker, ready, gw, tokens=options.get("tokens"))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    async def stop() -> None:
        await gw.shutdown(2.0)
        await runner.cleanup()

    return gw, f"127.0.0.1:{port}", stop


async def start_system(
    limits: Limits | None = None, rate: float = 2000, broker_url: str = "memory://"
) -> tuple[System, Callable[[], Any]]:
    broker_cm = open_broker(broker_url)
    broker = await broker_cm.__aenter__()
    svc = ProcessingService(SimSource(["SPY", "QQQ"], rate=rate, seed=1), broker)
    task = asyncio.create_task(svc.run())
    await asyncio.wait_for(svc.ready.wait(), 30)
    gw, addr, stop_gw = await start_gateway(broker, limits)
    system = System(f"ws://{addr}/ws", f"http://{addr}", broker, svc, gw, task)

    async def stop() -> None:
        await stop_gw()
        await cancel_and_wait(task)
        await broker_cm.__aexit__(None, None, None)

    return system, stop


@pytest.fixture
async def system() -> AsyncIterator[System]:
    s, stop = await start_system()
    try:
        yield s
    finally:
        await stop()


@pytest.fixture
async def connect(system: System) -> AsyncIterator[Callable[[], Any]]:
    session = aiohttp.ClientSession()
    clients: list[aiohttp.ClientWebSocketResponse] = []

    async def _connect() -> Client:
        ws = await session.ws_connect(system.url, autoclose=False, max_msg_size=0)
        clients.append(ws)
        c = Client(ws)
        welcome = await c.next()
        assert welcome["type"] == "welcome"
        return c

    try:
        yield _connect
    finally:
        for ws in clients:
            await ws.close()
        await session.close()
