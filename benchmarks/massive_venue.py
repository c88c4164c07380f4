"""The bench's local Massive: what it serves (`EventStream`) and the server itself.

`LocalMassive` (aiohttp, 127.0.0.1, port 0) serves the two REST endpoints
`MassiveSource` needs at start and the options WebSocket's greeting, auth and
subscription acknowledgements, then streams the frames of an `EventStream`: all at
once (`send_stream`, the saturated ingest figures) or paced (`send_paced`, the
live-rate figures). For the paced figures it runs in a process of its own
(`VenueProcess`), so that when the frames arrive does not depend on the
consumer's event loop, as with a real venue.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import TracebackType
from typing import Any, Self

import msgspec
import numpy as np
from aiohttp import WSMsgType, web
from numpy.typing import NDArray

from optionsfeed.model.contract import Contract

from .venue_common import LocalVenue

UNDERLYING = "SPY"  # the only underlying the venue lists
API_KEY = "bench-venues-key"
WS_PATH = "/options"
CONTRACTS_PATH = "/v3/reference/options/contracts"
SNAPSHOT_PATH = "/v3/snapshot/options/{underlying}"
WRITE_STALL_S = 5.0  # send_paced: a socket that takes no byte for this long is an error
START_LIMIT_S = 60.0  # VenueProcess: the child's import, stream and server start
STOP_LIMIT_S = 10.0
VENUE = "the Massive venue process"


@dataclass(frozen=True, slots=True)
class EventStream:
    """What the local venue lists and sends, built once per bench run.

    `rest_rows`: the contracts endpoint's rows of every listed contract, sorted by
    expiry; `snapshot_rows`: the chain snapshot's row of each (same order);
    `window`: the contracts the adapter streams (its own `choose_window`).
    `frames`: every frame of the stream as an unmasked WebSocket text frame, back
    to back; frame k ends at byte `frame_ends[k]` and holds `frame_events[k]`
    events. `sample` the text of the first frames (at least `DECODE_EVENTS`
    events), `single` the same events one per frame; `warmup` the text of one
    quote older than every streamed event.
    """

    rest_rows: list[dict[str, Any]]
    snapshot_rows: list[dict[str, Any]]
    window: tuple[Contract, ...]
    frames: bytes
    frame_count: int
    events: int
    trades: int
    sample: list[str]
    single: list[str]
    warmup: str
    mean_bytes: float  # the frames' JSON per event
    frame_ends: tuple[int, ...]
    frame_events: tuple[int, ...]

    @property
    def expiries(self) -> int:
        """How many expiries the window spans."""
        return len({c.expiry for c in self.window})


@dataclass(frozen=True, slots=True)
class PacedWrites:
    """What `LocalMassive.send_paced` did: frame k was due at `start + k * interval`
    and written at `written[k]` (`time.monotonic()` just before the write);
    `cpu_seconds` the venue process's CPU time over the writes."""

    start: float
    written: NDArray[np.float64]
    cpu_seconds: float


def _status(*pairs: tuple[str, str]) -> str:
    return msgspec.json.encode(
        [{"ev": "status", "status": s, "message": m} for s, m in pairs]
    ).decode()


def _matches(query: Any, name: str, value: Any, conv: Callable[[str], Any]) -> bool:
    """Whether `value` passes the query's `name`, `name.gte` and `name.lte` filters."""
    eq, gte, lte = (query.get(name + s) for s in ("", ".gte", ".lte"))
    return (
        (eq is None or value == conv(eq))
        and (gte is None or value >= conv(gte))
        and (lte is None or value <= conv(lte))
    )


def _write_all(fd: int, data: memoryview) -> None:
    """Write all of `data` to the non-blocking socket `fd`, waiting while it is full."""
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            _, writable, _ = select.select([], [fd], [], WRITE_STALL_S)
            if not writable:
                raise RuntimeError(f"the client read nothing for {WRITE_STALL_S:g} s") from None


class _Addresses:
    """The URLs of a Massive venue on 127.0.0.1 at `port`."""

    port: int

    @property
    def ws_url(self) -> str:
        """The WebSocket URL (valid inside the `async with` block)."""
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    @property
    def rest_url(self) -> str:
        """The REST base URL (valid inside the `async with` block)."""
        return f"http://127.0.0.1:{self.port}"


class LocalMassive(_Addresses, LocalVenue):
    """A minimal Massive on 127.0.0.1, port 0; an async context manager.

    REST (`Authorization: Bearer API_KEY`, else 401): the contracts endpoint
    (`underlying_ticker`, `expiration_date[.gte|.lte]`, sorted by expiry) and the
    chain snapshot (`expiration_date`, `strike_price[.gte|.lte]`), paged by `limit`
    and an absolute `next_url`. WebSocket at `/options`: the `connected` greeting,
    `auth` (`auth_success` or `auth_failed`), `subscribe` / `unsubscribe` acknowledged
    with one `success` status per param, in one frame per action. Once quotes and
    trades of the whole window are subscribed it sends the warm-up quote and sets
    `subscribed`; `send_stream()` or `send_paced()` then writes the stream's frames.
    Each new WebSocket connection starts over (nothing subscribed), so one venue
    serves one connection after another.
    """

    def __init__(self, stream: EventStream) -> None:
        super().__init__(stream.frames)
        self.stream = stream
        self._wanted = {f"{ch}.O:{c.symbol}" for c in stream.window for ch in ("Q", "T")}
        self._subscribed: set[str] = set()

    def _route(self, router: web.UrlDispatcher) -> None:
        router.add_get(WS_PATH, self._ws)
        router.add_get(CONTRACTS_PATH, self._contracts)
        router.add_get(SNAPSHOT_PATH, self._snapshot)

    def send_paced(self, interval_s: float) -> PacedWrites:
        """Write frame k of the stream at `start + k * interval_s`, one write each.

        Blocks this process (its event loop too) until the last frame is written:
        run it where nothing else needs the loop meanwhile (`VenueProcess`). Each
        write goes straight to the socket; its time is taken just before the write
        (on loopback the bytes are in the client's socket once it returns). A frame
        whose time has passed (a late wake-up, a full socket) is written at once,
        and `written` says how late. Raises RuntimeError without a subscribed
        connection, or when the client reads nothing for `WRITE_STALL_S`.
        """
        transport = self._streaming()
        if transport.get_write_buffer_size():
            raise RuntimeError("the connection's acknowledgements are still being written")
        fd = transport.get_extra_info("socket").fileno()
        data = memoryview(self.stream.frames)
        written = np.empty(len(self.stream.frame_ends), dtype=np.float64)
        cpu0 = time.process_time()
        start = time.monotonic()
        begin = 0
        for k, end in enumerate(self.stream.frame_ends):
            wait = start + k * interval_s - time.monotonic()
            if wait > 0.0:
                time.sleep(wait)  # µs-precise, unlike a loop timer (epoll waits whole ms)
            # Stamped before the write: the client (on the other core) may read the
            # frame before the write returns here.
            written[k] = time.monotonic()
            _write_all(fd, data[begin:end])
            begin = end
        return PacedWrites(start, written, time.process_time() - cpu0)

    # -- WebSocket ------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        async with self._websocket(request) as ws:
            self._subscribed = set()
            self.subscribed.clear()
            self._transport = None
            authed = False
            await ws.send_str(_status(("connected", "Connected Successfully")))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = msgspec.json.decode(msg.data)
                action = req.get("action") if isinstance(req, dict) else None
                params = req.get("params") if isinstance(req, dict) else None
                if not isinstance(params, str):
                    await ws.send_str(_status(("error", "Invalid message")))
                elif action == "auth":
                    authed = params == API_KEY
                    ok = ("auth_success", "authenticated")
                    await ws.send_str(_status(ok if authed else ("auth_failed", "bad key")))
                elif not authed:
                    await ws.send_str(_status(("error", "not authorized")))
                elif action in ("subscribe", "unsubscribe"):
                    await self._subscribe(ws, request, action, params)
                else:
                    await ws.send_str(_status(("error", f"unknown action {action!r}")))
        return ws

    async def _subscribe(
        self, ws: web.WebSocketResponse, request: web.Request, action: str, params: str
    ) -> None:
        ps = [p.strip() for p in params.split(",") if p.strip()]
        if action == "subscribe":
            self._subscribed.update(ps)
        else:
            self._subscribed.difference_update(ps)
        await ws.send_str(_status(*(("success", f"{action}d to: {p}") for p in ps)))
        done = action == "subscribe" and self._wanted <= self._subscribed
        if done and not self.subscribed.is_set():
            await ws.send_str(self.stream.warmup)
            self._stream_to(request)

    # -- REST -----------------------------------------------------------------------------

    @staticmethod
    def _page(
        request: web.Request,
        rows: list[dict[str, Any]],
        keep: Callable[[dict[str, Any]], bool],
        max_limit: int,
    ) -> web.Response:
        """401 without the API key; else the page of the `rows` to `keep` that the
        request's `cursor` and `limit` (at most `max_limit`) select."""
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"status": "ERROR", "error": "Unknown API Key"}, status=401)
        kept = [r for r in rows if keep(r)]
        limit = min(max(int(request.query.get("limit", "10")), 1), max_limit)
        start = int(request.query.get("cursor", "0"))
        body: dict[str, Any] = {"status": "OK", "request_id": f"r{start}",
                                "results": kept[start : start + limit]}  # fmt: skip
        if start + limit < len(kept):
            body["next_url"] = str(request.url.update_query(cursor=str(start + limit)))
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    async def _contracts(self, request: web.Request) -> web.Response:
        q = request.query

        def keep(r: dict[str, Any]) -> bool:
            return q.get("underlying_ticker") == UNDERLYING and _matches(
                q, "expiration_date", r["expiration_date"], str
            )

        return self._page(request, self.stream.rest_rows, keep, 1000)

    async def _snapshot(self, request: web.Request) -> web.Response:
        q = request.query

        def keep(r: dict[str, Any]) -> bool:
            return (
                request.match_info["underlying"] == UNDERLYING
                and _matches(q, "expiration_date", r["details"]["expiration_date"], str)
                and _matches(q, "strike_price", r["details"]["strike_price"], float)
            )

        return self._page(request, self.stream.snapshot_rows, keep, 250)


# -- the venue in a process of its own ---------------------------------------------------


async def _received(conn: Connection, limit_s: float | None, who: str) -> tuple[Any, ...]:
    """The next message on `conn`, waited for on the loop (a reader callback, no
    thread). Raises RuntimeError on an ("error", why) message, a closed pipe or
    nothing within `limit_s` (None: no limit)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), ready)
    try:
        async with asyncio.timeout(limit_s):
            await readable
    except TimeoutError:
        raise RuntimeError(f"{who}: nothing within {limit_s:g} s") from None
    finally:
        loop.remove_reader(conn.fileno())
    try:
        msg: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise RuntimeError(f"{who} closed its pipe") from None
    if msg[0] == "error":
        raise RuntimeError(f"{who}: {msg[1]}")
    return msg


async def _message(conn: Connection, tag: str, limit_s: float, who: str) -> tuple[Any, ...]:
    """The next message on `conn`, which must be `tag`: its fields after the tag. Raises
    RuntimeError as `_received` does, and on another tag."""
    msg = await _received(conn, limit_s, who)
    if msg[0] != tag:
        raise RuntimeError(f"{who}: expected {tag!r}, got {msg[0]!r}")
    return msg[1:]


async def _serve(stream: EventStream, conn: Connection) -> None:
    """The child's loop: serve; write the frames paced on ("pace", interval_s); end on
    ("stop",) or when the bench's end of the pipe closes."""
    async with LocalMassive(stream) as venue:
        conn.send(("port", venue.port))
        while True:
            try:
                msg = await _received(conn, None, "the bench")
            except RuntimeError:
                return  # the bench is gone
            if msg[0] == "stop":
                return
            if msg[0] != "pace":
                conn.send(("error", f"unknown request {msg[0]!r}"))
                continue
            try:
                writes = venue.send_paced(msg[1])
            except RuntimeError as exc:
                conn.send(("error", str(exc)))
                continue
            conn.send(("written", writes))


def _venue_entry(conn: Connection) -> None:
    try:
        tag, stream = conn.recv()
        if tag != "events" or not isinstance(stream, EventStream):
            raise RuntimeError(f"expected the events first, got {tag!r}")
        asyncio.run(_serve(stream, conn))
    except Exception as exc:
        conn.send(("error", f"{exc!r}"))
        raise


class VenueProcess(_Addresses):
    """A `LocalMassive` serving `stream` in a child process (spawn); an async context
    manager that starts it, and on exit stops it (killed if it has not ended within
    `STOP_LIMIT_S`).

    Between the two, connect a `MassiveSource` to `ws_url` / `rest_url`; once the
    warm-up quote came through, `start_paced` has the child write the stream's frames
    paced (`LocalMassive.send_paced`) and `writes` returns when each was written.
    The child writes with `time.sleep` between frames, so the frames arrive on time
    whatever the consumer's loop is doing. Both processes read CLOCK_MONOTONIC
    (`time.monotonic()`), so the child's write times compare with the parent's.
    """

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.port = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._conn, self._child = self._ctx.Pipe()
        self._proc: SpawnProcess | None = None

    async def __aenter__(self) -> Self:
        self._proc = proc = self._ctx.Process(
            target=_venue_entry, args=(self._child,), name="bench-massive-venue", daemon=True
        )
        proc.start()
        self._child.close()
        try:
            # Over the pipe, not as the Process's argument: spawn writes its arguments
            # holding the child's end of that pipe open, so a child that dies before
            # reading them all (a script without the `__main__` guard) would leave
            # start() blocked for good. Here its death closes our pipe: EOF.
            try:
                self._conn.send(("events", self.stream))
            except (BrokenPipeError, ConnectionResetError):
                raise RuntimeError(f"{VENUE} ended before it took the stream") from None
            (self.port,) = await _message(self._conn, "port", START_LIMIT_S, VENUE)
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    def start_paced(self, interval_s: float) -> None:
        """Have the venue write the stream's frames, one every `interval_s`, from now."""
        self._conn.send(("pace", interval_s))

    async def writes(self, limit_s: float) -> PacedWrites:
        """When each frame was written (after `start_paced`); raises RuntimeError when
        the child failed or sent nothing within `limit_s`."""
        (writes,) = await _message(self._conn, "written", limit_s, VENUE)
        if not isinstance(writes, PacedWrites):
            raise RuntimeError(f"{VENUE} sent {type(writes).__name__}, not PacedWrites")
        return writes

    async def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.is_alive():
                self._conn.send(("stop",))
            await asyncio.to_thread(proc.join, STOP_LIMIT_S)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child is gone already
        finally:
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, STOP_LIMIT_S)
            self._conn.close()
