"""A local Massive: the options WebSocket and the two REST endpoints the adapter uses.

An aiohttp server on 127.0.0.1, port 0, entered as `async with Venue() as venue:`.
It speaks the shapes of Massive's documentation:

- WebSocket at `/options`: greets `[{"ev":"status","status":"connected",...}]`;
  `{"action":"auth","params":KEY}` gets `auth_success`, or `auth_failed` and a
  close; `subscribe` / `unsubscribe` with comma-separated `Q.O:...` / `T.O:...`
  params get one `success` status per param ("subscribed to: P" / "unsubscribed
  to: P"). At most `max_quote_contracts` contracts per connection for quotes (the
  documented 1,000): a `Q.` param past it gets an `error` status naming it
  (Massive documents the cap, not its reply, so this reply is our assumption).
  Events are JSON arrays; `push` sends each client the events it subscribed to.
- REST (`Authorization: Bearer KEY` or `?apiKey=`, else 401):
  `GET /v3/reference/options/contracts` (filters `underlying_ticker`, `expired`,
  `expiration_date[.gte|.gt|.lte|.lt]`, `contract_type`; `sort` ticker or
  expiration_date, `order`, `limit` up to 1,000) and
  `GET /v3/snapshot/options/{underlying}` (filters `expiration_date[...]`,
  `strike_price[...]`, `contract_type`; `limit` up to 250), both paginated by an
  absolute `next_url` with a `cursor`.

The market: per underlying, `expiries` daily expiries (weekdays from today, New
York) with strikes every `strike_step` within +-`strike_span` of spot, a call and
a put each; quotes are Black-Scholes prices (20 % volatility, 4 % rate) +-3 %. Or,
given `contracts`, exactly those, quoted as they are. `today` (default: New York's)
decides which contracts have expired.

Test controls: `push` events, `push_raw` text, `drop` every connection (no close
handshake), `down` / `up` (refuse everything with 503 meanwhile), `silent` (no
pushes), `set_spot` (the price snapshots serve), `fail_next` (REST errors),
`foreign_next_url` (pages that point to another host), and what clients did: `sent`
(every message, parsed), `connections`, `rest_log` (and `rest_times`, when each
came), `quote_subscriptions`. `until` waits for a condition on that state.

The benches' fast path: `write_frames` hands pre-built WebSocket frames to the newest
authed connection's socket in one write, and `write_paced` writes them a frame at a
time on a schedule (blocking: for a venue in a process of its own), so that serving
costs almost nothing while a bench measures the adapter.
"""

from __future__ import annotations

import asyncio
import json
import math
import operator
import os
import select
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo

import numpy as np
from aiohttp import WSMsgType, web
from numpy.typing import NDArray

NEW_YORK = ZoneInfo("America/New_York")
VOL, RATE = 0.20, 0.04
CONTRACTS_MAX_LIMIT = 1000
SNAPSHOT_MAX_LIMIT = 250
WRITE_STALL_S = 5.0  # write_paced: a socket that takes no byte for this long is an error


def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def bs_price(spot: float, strike: float, years: float, call: bool) -> float:
    """Black-Scholes price at VOL and RATE, no dividends."""
    if years <= 0:
        return max(spot - strike, 0.0) if call else max(strike - spot, 0.0)
    sd = VOL * math.sqrt(years)
    d1 = (math.log(spot / strike) + (RATE + VOL * VOL / 2) * years) / sd
    d2 = d1 - sd
    disc = strike * math.exp(-RATE * years)
    if call:
        return spot * _ncdf(d1) - disc * _ncdf(d2)
    return disc * _ncdf(-d2) - spot * _ncdf(-d1)


def osi(underlying: str, expiry: date, right: str, strike: float) -> str:
    """Massive's ticker: ``O:`` + compact OSI."""
    return f"O:{underlying}{expiry:%y%m%d}{right}{round(strike * 1000):08d}"


@dataclass
class VenueContract:
    """One listed contract, its latest quote, the day's volume and (once set) its last
    trade, as the chain snapshot serves them."""

    ticker: str
    underlying: str
    expiry: date
    strike: float
    call: bool
    open_interest: int
    bid: float = 0.0
    ask: float = 0.0
    bid_size: int = 10
    ask_size: int = 12
    quote_ns: int = 0
    day_volume: float = 100
    day_ns: int = 0  # the day aggregate's last_updated; 0: quote_ns
    last_price: float | None = None
    last_size: float = 0
    last_ns: int = 0

    def rest_row(self) -> dict[str, Any]:
        return {
            "cfi": "OCASPS" if self.call else "OPASPS",
            "contract_type": "call" if self.call else "put",
            "exercise_style": "american",
            "expiration_date": self.expiry.isoformat(),
            "primary_exchange": "BATO",
            "shares_per_contract": 100,
            "strike_price": self.strike,
            "ticker": self.ticker,
            "underlying_ticker": self.underlying,
        }


def snapshot_row(c: VenueContract, spot: float, spot_ns: int) -> dict[str, Any]:
    """`c`'s row of the chain snapshot, its underlying at `spot` as of `spot_ns`."""
    mid = round((c.bid + c.ask) / 2, 4)
    details = c.rest_row()
    del details["cfi"], details["primary_exchange"], details["underlying_ticker"]
    day_ns = c.day_ns or c.quote_ns
    row: dict[str, Any] = {
        "break_even_price": c.strike + mid if c.call else c.strike - mid,
        "day": {"close": mid, "volume": c.day_volume, "vwap": mid, "last_updated": day_ns},
        "details": details,
        "greeks": {"delta": 0.5, "gamma": 0.01, "theta": -0.1, "vega": 0.3},
        "implied_volatility": VOL,
        "last_quote": {"ask": c.ask, "ask_size": c.ask_size, "bid": c.bid,
                       "bid_size": c.bid_size, "last_updated": c.quote_ns,
                       "midpoint": mid, "timeframe": "REAL-TIME"},
        "open_interest": c.open_interest,
        "underlying_asset": {"change_to_break_even": 1.0, "price": spot,
                             "last_updated": spot_ns, "ticker": c.underlying,
                             "timeframe": "REAL-TIME"},
    }  # fmt: skip
    if c.last_price is not None:
        row["last_trade"] = {"conditions": [209], "exchange": 316, "price": c.last_price,
                             "sip_timestamp": c.last_ns, "size": c.last_size,
                             "timeframe": "REAL-TIME"}  # fmt: skip
    return row


@dataclass(frozen=True, slots=True)
class PacedWrites:
    """What `Venue.write_paced` did: frame k was due at `start + k * interval` and
    written at `written[k]` (`time.monotonic()` just before the write); `cpu_seconds`
    this process's CPU time over the writes."""

    start: float
    written: NDArray[np.float64]
    cpu_seconds: float


def _write_all(fd: int, data: memoryview) -> None:
    """Write all of `data` to the non-blocking socket `fd`, waiting while it is full."""
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            _, writable, _ = select.select([], [fd], [], WRITE_STALL_S)
            if not writable:
                raise RuntimeError(f"the client read nothing for {WRITE_STALL_S:g} s") from None


@dataclass
class _Client:
    id: int
    ws: web.WebSocketResponse
    request: web.Request
    authed: bool = False
    subs: set[str] = field(default_factory=set)

    def quote_contracts(self) -> set[str]:
        return {p[2:] for p in self.subs if p.startswith("Q.")}


def _expiries(count: int) -> list[date]:
    now = datetime.now(NEW_YORK)
    day = now.date() if now.hour < 15 else now.date() + timedelta(days=1)
    out: list[date] = []
    while len(out) < count:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


def _status(status: str, message: str) -> str:
    return json.dumps([{"ev": "status", "status": status, "message": message}])


class Addresses:
    """The URLs of a Massive fake listening on 127.0.0.1 at `port`."""

    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/options"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Venue(Addresses):
    """The local Massive; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str = "venue-test-key-3f9c",
        ws_key: str | None = None,
        spots: dict[str, float] | None = None,
        expiries: int = 12,
        strike_step: float = 5.0,
        strike_span: float = 0.25,
        max_quote_contracts: int = 1000,
        contracts: Iterable[VenueContract] | None = None,
        today: date | None = None,
    ) -> None:
        self.api_key = api_key
        self.ws_key = api_key if ws_key is None else ws_key
        self.spot: dict[str, float] = dict(spots or {"SPY": 650.0})
        self.spot_ns: dict[str, int] = {u: time.time_ns() for u in self.spot}
        self.max_quote_contracts = max_quote_contracts
        self.today = today
        self.contracts: dict[str, VenueContract] = {}
        if contracts is not None:
            self.contracts = {c.ticker: c for c in contracts}
        else:
            for u, s in self.spot.items():
                self._list(u, s, _expiries(expiries), strike_step, strike_span)
        self.clients: list[_Client] = []
        self.sent: list[tuple[int, Any]] = []
        self.connections = 0
        self.rest_log: list[tuple[str, dict[str, str], bool]] = []
        self.rest_times: list[float] = []  # time.monotonic() of each rest_log entry
        self.silent = False
        self.is_down = False
        self.foreign_next_url = False
        self._failures: list[tuple[int, str | None]] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def _list(self, u: str, spot: float, expiries: list[date], step: float, span: float) -> None:
        lo = math.ceil(spot * (1 - span) / step) * step
        hi = math.floor(spot * (1 + span) / step) * step
        n = round((hi - lo) / step) + 1
        for e in expiries:
            for i in range(n):
                k = round(lo + i * step, 3)
                for call in (True, False):
                    t = osi(u, e, "C" if call else "P", k)
                    oi = 100 + (i * 37 + e.toordinal()) % 900
                    self.contracts[t] = VenueContract(t, u, e, k, call, oi)
        self.reprice(u)

    def reprice(self, underlying: str) -> None:
        """Quote every contract of `underlying` at its current spot, timestamped now."""
        now_ns = time.time_ns()
        spot = self.spot[underlying]
        for c in self.contracts.values():
            if c.underlying != underlying:
                continue
            instant = datetime.combine(c.expiry, datetime.min.time(), NEW_YORK) + timedelta(
                hours=16
            )
            years = (instant.timestamp() - now_ns / 1e9) / (365 * 86400)
            price = bs_price(spot, c.strike, years, c.call)
            c.bid = max(round(price * 0.97 - 0.01, 2), 0.0)
            c.ask = round(price * 1.03 + 0.01, 2)
            c.quote_ns = now_ns

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/options", self._ws)
        app.router.add_get("/v3/reference/options/contracts", self._contracts)
        app.router.add_get("/v3/snapshot/options/{underlying}", self._snapshot)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for c in list(self.clients):
            await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- controls ---------------------------------------------------------------------

    async def until(self, pred: Callable[[], bool], timeout_s: float | None = 10.0) -> None:
        """Return once `pred()` holds (checked on every change of the venue's state);
        TimeoutError after `timeout_s` (None: no limit)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(pred)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def authed(self) -> list[_Client]:
        """The connected clients that authenticated."""
        return [c for c in self.clients if c.authed]

    def quote_subscriptions(self) -> set[str]:
        """The contracts (``O:...``) whose quotes the newest authed client subscribed."""
        clients = self.authed()
        return clients[-1].quote_contracts() if clients else set()

    def set_spot(self, underlying: str, price: float) -> None:
        """The underlying's price that snapshots serve from now on (quotes follow it)."""
        self.spot[underlying] = price
        self.spot_ns[underlying] = time.time_ns()
        self.reprice(underlying)

    async def push(self, events: list[dict[str, Any]]) -> int:
        """Send each authed client the events it subscribed to (one frame); the count sent."""
        if self.silent:
            return 0
        n = 0
        for c in self.authed():
            mine = [e for e in events if f"{e.get('ev')}.{e.get('sym')}" in c.subs]
            if mine:
                await c.ws.send_str(json.dumps(mine))
                n += len(mine)
        return n

    async def push_raw(self, text: str) -> None:
        """Send `text` as is to every authed client (no subscription filter)."""
        for c in self.authed():
            await c.ws.send_str(text)

    def write_frames(self, frames: bytes) -> None:
        """Write `frames` (unmasked WebSocket frames, back to back) to the newest authed
        connection's socket in one write; asyncio paces it. Bypasses the WebSocket
        writer (no subscription filter). Raises RuntimeError without such a connection."""
        self._transport().write(frames)

    def write_paced(
        self, frames: bytes, frame_ends: Sequence[int], interval_s: float
    ) -> PacedWrites:
        """Write frame k of `frames` (it ends at byte `frame_ends[k]`) to the newest authed
        connection at `start + k * interval_s`, one write each.

        Blocks this process (its event loop too) until the last frame is written: run
        it where nothing else needs the loop meanwhile (a venue process of its own).
        Each write goes straight to the socket; its time is taken just before the
        write (on loopback the bytes are in the client's socket once it returns). A
        frame whose time has passed (a late wake-up, a full socket) is written at
        once, and `written` says how late. Raises RuntimeError without a connection,
        while it still has bytes queued (acknowledgements), or when the client reads
        nothing for `WRITE_STALL_S`.
        """
        transport = self._transport()
        if transport.get_write_buffer_size():
            raise RuntimeError("the connection's acknowledgements are still being written")
        fd = transport.get_extra_info("socket").fileno()
        data = memoryview(frames)
        written = np.empty(len(frame_ends), dtype=np.float64)
        cpu0 = time.process_time()
        start = time.monotonic()
        begin = 0
        for k, end in enumerate(frame_ends):
            wait = start + k * interval_s - time.monotonic()
            if wait > 0.0:
                time.sleep(wait)  # µs-precise, unlike a loop timer (epoll waits whole ms)
            # Stamped before the write: the client (on the other core) may read the
            # frame before the write returns here.
            written[k] = time.monotonic()
            _write_all(fd, data[begin:end])
            begin = end
        return PacedWrites(start, written, time.process_time() - cpu0)

    def _transport(self) -> asyncio.Transport:
        clients = self.authed()
        transport = clients[-1].request.transport if clients else None
        if transport is None or transport.is_closing():
            raise RuntimeError("no authed connection to write the frames to")
        return transport

    async def drop(self) -> None:
        """Cut every connection without a close handshake (a network failure)."""
        for c in list(self.clients):
            transport = c.request.transport
            if transport is not None:
                transport.abort()
        self.clients.clear()
        await self._notify()

    async def down(self) -> None:
        """Refuse every request (HTTP 503) and cut the connections until `up`."""
        self.is_down = True
        await self.drop()

    def up(self) -> None:
        """Serve again after `down`."""
        self.is_down = False

    def fail_next(self, status: int, times: int = 1, *, retry_after: str | None = None) -> None:
        """Answer the next `times` REST requests with HTTP `status` (an error body), with
        a `Retry-After: retry_after` header when given."""
        self._failures += [(status, retry_after)] * times

    @property
    def failing(self) -> bool:
        """Whether failures asked for by `fail_next` are still to come."""
        return bool(self._failures)

    def quote(self, ticker: str, *, bid: float, ask: float, t_ms: int | None = None,
              bs: int = 5, as_: int = 7) -> dict[str, Any]:  # fmt: skip
        """A quote event as Massive sends it (also updates what snapshots serve)."""
        t = t_ms if t_ms is not None else time.time_ns() // 1_000_000
        c = self.contracts[ticker]
        c.bid, c.ask, c.bid_size, c.ask_size, c.quote_ns = bid, ask, bs, as_, t * 1_000_000
        return {"ev": "Q", "sym": ticker, "bx": 302, "ax": 313, "bp": bid, "ap": ask,
                "bs": bs, "as": as_, "t": t, "q": t % 1_000_000}  # fmt: skip

    @staticmethod
    def trade(ticker: str, *, price: float, size: int, t_ms: int | None = None) -> dict[str, Any]:
        """A trade event as Massive sends it."""
        t = t_ms if t_ms is not None else time.time_ns() // 1_000_000
        return {"ev": "T", "sym": ticker, "x": 65, "p": price, "s": size, "c": [227], "t": t,
                "q": t % 1_000_000}  # fmt: skip

    # -- WebSocket --------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.is_down:
            return web.Response(status=503, text="down")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        client = _Client(self.connections, ws, request)
        self.clients.append(client)
        await ws.send_str(_status("connected", "Connected Successfully"))
        await self._notify()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_message(client, msg.data)
                    await self._notify()
        finally:
            if client in self.clients:
                self.clients.remove(client)
            await self._notify()
        return ws

    async def _on_message(self, client: _Client, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            self.sent.append((client.id, text))
            await client.ws.send_str(_status("error", "Invalid JSON"))
            return
        self.sent.append((client.id, msg))
        action = msg.get("action") if isinstance(msg, dict) else None
        params = msg.get("params") if isinstance(msg, dict) else None
        if not isinstance(params, str):
            await client.ws.send_str(_status("error", "Invalid message"))
            return
        if action == "auth":
            if params == self.ws_key:
                client.authed = True
                await client.ws.send_str(_status("auth_success", "authenticated"))
            else:
                await client.ws.send_str(_status("auth_failed", "authentication failed"))
                await client.ws.close(code=1008)
            return
        if not client.authed:
            await client.ws.send_str(_status("error", "not authorized"))
            return
        for p in (x.strip() for x in params.split(",") if x.strip()):
            channel, _, sym = p.partition(".")
            if action == "subscribe":
                quotes = client.quote_contracts()
                if channel == "Q" and sym not in quotes and len(quotes) >= self.max_quote_contracts:
                    await client.ws.send_str(_status(
                        "error",
                        f"maximum of {self.max_quote_contracts} option contracts per "
                        f"connection exceeded: {p}",
                    ))  # fmt: skip
                    continue
                client.subs.add(p)
                await client.ws.send_str(_status("success", f"subscribed to: {p}"))
            elif action == "unsubscribe":
                client.subs.discard(p)
                await client.ws.send_str(_status("success", f"unsubscribed to: {p}"))
            else:
                await client.ws.send_str(_status("error", f"unknown action {action!r}"))
                return

    # -- REST -------------------------------------------------------------------------

    def _check(self, request: web.Request) -> web.Response | None:
        q = dict(request.query)
        bearer = request.headers.get("Authorization", "")
        self.rest_log.append((request.path, {k: v for k, v in q.items() if k != "apiKey"},
                              bearer.startswith("Bearer ")))  # fmt: skip
        self.rest_times.append(time.monotonic())
        if self.is_down:
            return web.Response(status=503, text="down")
        if self._failures:
            status, retry_after = self._failures.pop(0)
            return web.json_response(
                {"status": "ERROR", "request_id": "r0", "error": f"failing on purpose ({status})"},
                status=status,
                headers={"Retry-After": retry_after} if retry_after is not None else None,
            )
        key = bearer.removeprefix("Bearer ") if bearer else q.get("apiKey")
        if key != self.api_key:
            return web.json_response(
                {"status": "ERROR", "request_id": "r1", "error": "Unknown API Key"}, status=401
            )
        return None

    def _page(
        self, request: web.Request, rows: list[dict[str, Any]], max_limit: int
    ) -> web.Response:
        limit = min(max(int(request.query.get("limit", "10")), 1), max_limit)
        start = int(request.query.get("cursor", "0"))
        body: dict[str, Any] = {
            "status": "OK",
            "request_id": f"r{start}",
            "results": rows[start : start + limit],
        }
        if start + limit < len(rows):
            url = request.url.update_query(cursor=str(start + limit))
            if self.foreign_next_url:
                url = url.with_host("elsewhere.example")
            body["next_url"] = str(url)
        return web.json_response(body)

    @staticmethod
    def _match(query: Any, name: str, value: Any, conv: Callable[[str], Any]) -> bool:
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "": operator.eq, ".gte": operator.ge, ".gt": operator.gt,
            ".lte": operator.le, ".lt": operator.lt,
        }  # fmt: skip
        for suffix, op in ops.items():
            given = query.get(name + suffix)
            if given is not None and not op(value, conv(given)):
                return False
        return True

    def _filtered(self, request: web.Request, underlying: str) -> list[VenueContract]:
        q = request.query
        today = self.today or datetime.now(NEW_YORK).date()
        out = []
        for c in self.contracts.values():
            if c.underlying != underlying:
                continue
            if q.get("expired", "false") == "false" and c.expiry < today:
                continue
            kind = q.get("contract_type")
            if kind is not None and kind != ("call" if c.call else "put"):
                continue
            if not self._match(q, "expiration_date", c.expiry, date.fromisoformat):
                continue
            if not self._match(q, "strike_price", c.strike, float):
                continue
            out.append(c)
        key = q.get("sort", "ticker")
        if key == "expiration_date":
            out.sort(key=lambda c: (c.expiry, c.ticker))
        else:
            out.sort(key=lambda c: c.ticker)
        if q.get("order") == "desc":
            out.reverse()
        return out

    async def _contracts(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        u = request.query.get("underlying_ticker", "")
        rows = [c.rest_row() for c in self._filtered(request, u)]
        return self._page(request, rows, CONTRACTS_MAX_LIMIT)

    async def _snapshot(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        u = request.match_info["underlying"]
        spot = self.spot.get(u, 0.0)
        spot_ns = self.spot_ns.get(u, 0)
        rows = [snapshot_row(c, spot, spot_ns) for c in self._filtered(request, u)]
        return self._page(request, rows, SNAPSHOT_MAX_LIMIT)
