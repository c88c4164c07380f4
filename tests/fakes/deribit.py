"""A local Deribit: JSON-RPC 2.0 over WebSocket at /ws/api/v2 on 127.0.0.1:<port 0>.

It speaks the part of Deribit's public API v2 that DeribitSource uses, as
docs.deribit.com documents it:

- `public/set_heartbeat` {"interval": s}: "ok"; then a `test_request` heartbeat every
  interval, and the connection is closed if `public/test` does not come back within
  one interval. An interval below `min_heartbeat_s` (Deribit: 10) is -32602.
- `public/test`: {"version": ...}. `public/disable_heartbeat`: "ok".
- `public/get_instruments` {"currency", "kind", "expired"}: the configured instruments
  whose `base_currency` is the currency (and `kind` matches, when given).
- `public/subscribe` / `public/unsubscribe` {"channels": [...]}: the result lists the
  channels (un)subscribed; an unknown channel is left out of the list, which is how
  Deribit answers it (no error). Known: `ticker.{listed instrument}.{100ms|agg2|raw}`
  and `deribit_price_index.{btc_usd|eth_usd}`.
- An unknown method: -32601 "Method not found". Text that is not JSON: -32700 with
  id null. JSON that is not a request object: -32600. Bad params: -32602.
- Responses carry Deribit's extra fields (usIn, usOut, usDiff, testnet), which a
  client must tolerate.

Test controls: `push` / `push_ticker` / `push_index` (to subscribers), `push_raw`
(any text, to every client), `drop_all` (abort every connection mid-stream),
`silence` (current connections stay open but get nothing more), `refuse` (new
connections get HTTP 503), `received` (what each client sent), `wait_for` (await a
condition on all that, no sleeping).

The benches' fast path: `write_frames` hands pre-built WebSocket frames (a whole
stream of notifications) to a connection's socket in one write, so that serving
costs the bench's process almost nothing while it measures the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import WSMsgType, web

from optionsfeed.aio import cancel_and_wait

PATH = "/ws/api/v2"
INTERVALS = ("100ms", "agg2", "raw")
INDEXES = ("btc_usd", "eth_usd")


@dataclass(eq=False)
class VenueClient:
    """One connection as the venue sees it."""

    id: int
    ws: web.WebSocketResponse
    request: web.Request
    channels: set[str] = field(default_factory=set)
    muted: bool = False
    heartbeat_s: float | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeat_task: asyncio.Task[None] | None = None
    # Every heartbeat task started (a replaced one is cancelled at once); all are
    # awaited when the connection ends.
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class DeribitVenue:
    """The server; an async context manager. `url` is valid inside the block.

    `instruments` may be changed between requests (a later get_instruments sees it).
    """

    def __init__(
        self, instruments: Sequence[dict[str, Any]] = (), *, min_heartbeat_s: float = 10.0
    ) -> None:
        self.instruments = list(instruments)
        self.min_heartbeat_s = min_heartbeat_s
        self.clients: dict[int, VenueClient] = {}
        self.connections = 0  # accepted WebSocket connections, ever
        self.heartbeat_closes = 0  # connections closed for a missing public/test
        self.received: list[tuple[int, Any]] = []  # (client id, message as sent)
        self.accepting = True
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for client in list(self.clients.values()):
            await client.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test controls ------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
        """Return once `predicate()` holds; it is checked whenever the venue's state changes."""
        async with asyncio.timeout(limit_s), self._changed:
            await self._changed.wait_for(predicate)

    def sent(self, method: str, client: int | None = None) -> list[dict[str, Any]]:
        """The requests of `method` received (from one client, or from all)."""
        return [
            m
            for c, m in self.received
            if isinstance(m, dict) and m.get("method") == method and client in (None, c)
        ]

    def subscribers(self, channel: str) -> list[VenueClient]:
        return [c for c in self.clients.values() if channel in c.channels and not c.muted]

    async def push(self, channel: str, data: Any) -> int:
        """A notification on `channel` to its subscribers; returns how many got it."""
        text = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "subscription",
                "params": {"channel": channel, "data": data},
            }
        )
        clients = self.subscribers(channel)
        for c in clients:
            await _send_text(c, text)
        return len(clients)

    async def push_ticker(self, data: dict[str, Any], interval: str = "100ms") -> int:
        """`data` (a ticker, with its instrument_name) on ``ticker.{name}.{interval}``."""
        return await self.push(f"ticker.{data['instrument_name']}.{interval}", data)

    async def push_trades(self, currency: str, trades: list[dict[str, Any]]) -> int:
        """Option trades of `currency` on ``trades.option.{currency}.100ms`` (a list)."""
        return await self.push(f"trades.option.{currency}.100ms", trades)

    async def push_index(self, currency: str, price: float, timestamp_ms: int) -> int:
        """An index price of `currency` ("BTC") on ``deribit_price_index.btc_usd``."""
        index = f"{currency.lower()}_usd"
        data = {"index_name": index, "price": price, "timestamp": timestamp_ms}
        return await self.push(f"deribit_price_index.{index}", data)

    async def push_raw(self, text: str) -> int:
        """`text` as it is to every client that is not silenced."""
        clients = [c for c in self.clients.values() if not c.muted]
        for c in clients:
            await _send_text(c, text)
        return len(clients)

    async def drop_all(self) -> None:
        """Abort every connection (a TCP reset as the client sees it)."""
        for c in list(self.clients.values()):
            if c.request.transport is not None:
                c.request.transport.abort()

    def write_frames(self, frames: bytes, client: VenueClient | None = None) -> None:
        """Write `frames` (unmasked WebSocket frames, back to back) to the socket of
        `client` (default: the newest connection) in one write; asyncio paces it.

        Bypasses the WebSocket writer (nothing is encoded, no subscription filter).
        Raises RuntimeError when there is no such open connection.
        """
        if client is None and self.clients:
            client = self.clients[max(self.clients)]
        transport = client.request.transport if client is not None else None
        if transport is None or transport.is_closing():
            raise RuntimeError("no open connection to write the frames to")
        transport.write(frames)

    def silence(self) -> None:
        """The current connections stay open but get nothing more (no answers either)."""
        for c in self.clients.values():
            c.muted = True

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, a new connection gets HTTP 503 instead of a WebSocket."""
        self.accepting = not refusing

    # -- the protocol ---------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return web.Response(status=503, text="maintenance")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        client = VenueClient(self.connections, ws, request)
        self.clients[client.id] = client
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._message(client, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._message(client, msg.data.decode(errors="replace"))
        finally:
            for task in client.tasks:
                await cancel_and_wait(task)
            del self.clients[client.id]
            await self._notify()
        return ws

    async def _send(self, client: VenueClient, message: dict[str, Any]) -> None:
        if not client.muted:
            await _send_text(client, json.dumps(message))

    async def _reply(
        self, client: VenueClient, request_id: Any, us_in: int, *, result: Any = None,
        error: tuple[int, str, Any] | None = None,
    ) -> None:  # fmt: skip
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if error is not None:
            code, message, data = error
            out["error"] = {"code": code, "message": message, **({"data": data} if data else {})}
        else:
            out["result"] = result
        us_out = time.time_ns() // 1000
        out.update(usIn=us_in, usOut=us_out, usDiff=us_out - us_in, testnet=False)
        await self._send(client, out)

    async def _message(self, client: VenueClient, text: str) -> None:
        try:
            await self._answer(client, text)
        finally:
            await self._notify()  # after handling, so waiters see its effect too

    async def _answer(self, client: VenueClient, text: str) -> None:
        us_in = time.time_ns() // 1000
        try:
            msg = json.loads(text)
        except ValueError:
            self.received.append((client.id, text))
            await self._reply(client, None, us_in, error=(-32700, "Parse error", None))
            return
        self.received.append((client.id, msg))
        request_id = msg.get("id") if isinstance(msg, dict) else None
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            request_id = None
        if not (isinstance(msg, dict) and isinstance(msg.get("method"), str)):
            await self._reply(client, request_id, us_in, error=(-32600, "Invalid Request", None))
            return
        params = msg.get("params", {})
        if not isinstance(params, dict):
            error = _invalid("params", "must be an object")
            await self._reply(client, request_id, us_in, error=error)
            return
        handler = self._methods().get(msg["method"])
        if handler is None:
            await self._reply(client, request_id, us_in, error=(-32601, "Method not found", None))
            return
        try:
            result = handler(client, params)
        except _InvalidParams as exc:
            await self._reply(client, request_id, us_in, error=_invalid(exc.param, exc.reason))
            return
        await self._reply(client, request_id, us_in, result=result)

    def _methods(self) -> dict[str, Callable[[VenueClient, dict[str, Any]], Any]]:
        return {
            "public/test": self._test,
            "public/set_heartbeat": self._set_heartbeat,
            "public/disable_heartbeat": self._disable_heartbeat,
            "public/get_instruments": self._get_instruments,
            "public/subscribe": self._subscribe,
            "public/unsubscribe": self._unsubscribe,
        }

    def _test(self, client: VenueClient, params: dict[str, Any]) -> Any:
        client.answered.set()
        return {"version": "1.2.26"}

    def _set_heartbeat(self, client: VenueClient, params: dict[str, Any]) -> Any:
        interval = params.get("interval")
        if not isinstance(interval, int | float) or not math.isfinite(interval):
            raise _InvalidParams("interval", "must be a number")
        if interval < self.min_heartbeat_s:
            raise _InvalidParams("interval", f"must be at least {self.min_heartbeat_s:g}")
        if client.heartbeat_task is not None:
            client.heartbeat_task.cancel()  # awaited with the others when the connection ends
        client.heartbeat_s = float(interval)
        client.heartbeat_task = asyncio.create_task(self._heartbeats(client))
        client.tasks = [t for t in client.tasks if not t.done()] + [client.heartbeat_task]
        return "ok"

    def _disable_heartbeat(self, client: VenueClient, params: dict[str, Any]) -> Any:
        if client.heartbeat_task is not None:
            client.heartbeat_task.cancel()
            client.heartbeat_task = None
        return "ok"

    async def _heartbeats(self, client: VenueClient) -> None:
        interval = client.heartbeat_s or self.min_heartbeat_s
        while True:
            await asyncio.sleep(interval)  # the venue's own timer, not a test waiting
            if client.muted:
                continue
            client.answered.clear()
            await self._send(
                client,
                {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}},
            )
            try:
                await asyncio.wait_for(client.answered.wait(), interval)
            except TimeoutError:
                self.heartbeat_closes += 1
                await client.ws.close(code=1000, message=b"heartbeat not answered")
                return

    def _get_instruments(self, client: VenueClient, params: dict[str, Any]) -> Any:
        currency = params.get("currency")
        if not isinstance(currency, str):
            raise _InvalidParams("currency", "must be a string")
        kind = params.get("kind")
        return [
            i
            for i in self.instruments
            if i.get("base_currency") == currency and kind in (None, i.get("kind"))
        ]

    def _channels(self, params: dict[str, Any]) -> list[str]:
        channels = params.get("channels")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise _InvalidParams("channels", "value must be a list")
        return channels

    @staticmethod
    def _known(channel: str, names: set[Any]) -> bool:
        if channel.startswith("deribit_price_index."):
            return channel.removeprefix("deribit_price_index.") in INDEXES
        if channel.startswith("ticker."):
            name, _, interval = channel.removeprefix("ticker.").rpartition(".")
            return interval in INTERVALS and name in names
        if channel.startswith("trades.option."):
            currency, _, interval = channel.removeprefix("trades.option.").rpartition(".")
            return interval in INTERVALS and currency in ("BTC", "ETH", "any")
        return False

    def _subscribe(self, client: VenueClient, params: dict[str, Any]) -> Any:
        names = {i.get("instrument_name") for i in self.instruments}
        ok = [c for c in self._channels(params) if self._known(c, names)]
        client.channels.update(ok)
        return ok

    def _unsubscribe(self, client: VenueClient, params: dict[str, Any]) -> Any:
        gone = [c for c in self._channels(params) if c in client.channels]
        client.channels.difference_update(gone)
        return gone


async def _send_text(client: VenueClient, text: str) -> None:
    """Send unless the connection is closing (a client gone mid-send is not an error here)."""
    if client.ws.closed:
        return
    with contextlib.suppress(ConnectionError):
        await client.ws.send_str(text)


class _InvalidParams(Exception):
    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


def _invalid(param: str, reason: str) -> tuple[int, str, Any]:
    return (-32602, "Invalid params", {"param": param, "reason": reason})
