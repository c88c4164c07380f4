"""JSON-RPC 2.0 over one aiohttp WebSocket to Deribit: the thin I/O around `Decoder`.

`RpcConnection.run()` is the connection's only reader. It decodes every message
(normalize.Decoder), resolves the future of the request a response answers,
answers `test_request` heartbeats with `public/test` at once, and hands every
other item (quotes, ticks, drops) to a callback. It ends with `ConnectionLost`
when the socket closes or nothing at all arrives for `silence_s` (a dead TCP
connection can stay open for minutes without either side noticing).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from ...aio import cancel_and_wait
from ...errors import OptionsFeedError
from .normalize import Decoder, Heartbeat, Incoming, Response, RpcError, encode_request

log = logging.getLogger("optionsfeed.sources.deribit")


class ConnectionLost(OptionsFeedError):
    """The venue connection closed, failed or went silent; reconnecting may help."""


class VenueError(OptionsFeedError):
    """The venue answered one of our requests with a JSON-RPC error."""

    def __init__(self, method: str, error: RpcError) -> None:
        super().__init__(f"{method}: error {error.code} {error.message}")
        self.method = method
        self.code = error.code
        self.error_message = error.message


class RpcConnection:
    """Requests and the read loop of one WebSocket (see the module docstring).

    Bounded: at most one pending future per request in flight (requests are
    awaited one at a time by the session, plus fire-and-forget `public/test`s
    whose entries are removed when answered, or when the connection ends).
    """

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        decoder: Decoder,
        on_item: Callable[[Incoming], None],
        *,
        silence_s: float,
        request_timeout_s: float,
    ) -> None:
        self.ws = ws
        self.decoder = decoder
        self.on_item = on_item
        self.silence_s = silence_s
        self.request_timeout_s = request_timeout_s
        self._ids = itertools.count(1)
        # id -> (method, future); the future is None for requests nobody awaits.
        self._pending: dict[int, tuple[str, asyncio.Future[msgspec.Raw] | None]] = {}
        self._lost: ConnectionLost | None = None
        self._last_heard = 0.0  # loop time of the newest message

    async def request(self, method: str, params: dict[str, Any]) -> msgspec.Raw:
        """Send a request and return its raw `result`.

        Raises VenueError for a JSON-RPC error, ConnectionLost when the connection
        ends first or the answer takes longer than `request_timeout_s`.
        """
        if self._lost is not None:
            raise self._lost
        fut: asyncio.Future[msgspec.Raw] = asyncio.get_running_loop().create_future()
        request_id = await self._send(method, params, fut)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                return await fut
        except TimeoutError:
            raise ConnectionLost(
                f"no answer to {method} within {self.request_timeout_s:g} s"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _send(
        self, method: str, params: dict[str, Any], fut: asyncio.Future[msgspec.Raw] | None
    ) -> int:
        request_id = next(self._ids)
        self._pending[request_id] = (method, fut)
        try:
            await self.ws.send_str(encode_request(request_id, method, params).decode())
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._pending.pop(request_id, None)
            raise ConnectionLost(f"sending {method} failed: {exc}") from exc
        return request_id

    async def run(self) -> None:
        """Read until the connection ends; always raises ConnectionLost (or is cancelled)."""
        failure: Exception = ConnectionLost("connection closed")
        self._last_heard = asyncio.get_running_loop().time()
        reader = asyncio.ensure_future(self._read())
        watchdog = asyncio.ensure_future(self._watch())
        try:
            done, _ = await asyncio.wait({reader, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            done.pop().result()  # raises why the connection ended
        except ConnectionLost as exc:
            self._lost = failure = exc
            raise
        except Exception as exc:
            failure = exc  # a bug, not the network: the waiting request fails with it too
            raise
        finally:
            for task in (reader, watchdog):
                await cancel_and_wait(task)
            for _, fut in self._pending.values():
                if fut is not None and not fut.done():
                    fut.set_exception(failure)
            self._pending.clear()

    async def _watch(self) -> None:
        """Raise ConnectionLost once nothing has arrived for `silence_s`.

        A separate timer, not a timeout per receive: arming and cancelling one for
        every message cost a third of the adapter's time per ticker (bench venues).
        """
        loop = asyncio.get_running_loop()
        while True:
            left = self._last_heard + self.silence_s - loop.time()
            if left <= 0:
                raise ConnectionLost(f"nothing received for {self.silence_s:g} s")
            await asyncio.sleep(left)

    async def _read(self) -> None:
        ws = self.ws
        decode = self.decoder.decode
        now = asyncio.get_running_loop().time
        while True:
            msg = await ws.receive()
            self._last_heard = now()
            if msg.type == aiohttp.WSMsgType.TEXT:
                item = decode(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                item = decode(msg.data)  # Deribit sends text; JSON in binary is still JSON
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionLost(f"connection error: {ws.exception() or msg.data}")
            else:  # CLOSE, CLOSING, CLOSED
                raise ConnectionLost(_closed_reason(ws.close_code))
            if isinstance(item, Response):
                self._resolve(item)
            elif isinstance(item, Heartbeat):
                if item.test_request:
                    # Deribit closes the connection unless public/test comes back in time.
                    await self._send("public/test", {}, None)
            else:
                self.on_item(item)

    def _resolve(self, r: Response) -> None:
        entry = self._pending.pop(r.id, None)
        if entry is None:
            log.debug("deribit: a response to no pending request (id %d)", r.id)
            return
        method, fut = entry
        if r.error is not None:
            err = VenueError(method, r.error)
            if fut is None:
                log.error("deribit: %s", err)
            elif not fut.done():
                fut.set_exception(err)
        elif fut is not None and not fut.done():
            fut.set_result(r.result)


def _closed_reason(code: int | None) -> str:
    if code is None or code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
        return "connection reset"
    return f"closed by the venue (code {code})"
