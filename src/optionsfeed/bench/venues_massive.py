"""`optionsfeed bench venues`, second part: how fast the Massive adapter ingests events.

Massive's options WebSocket streams the quotes (`Q`) and trades (`T`) of at most
1,000 contracts per connection; at busy times OPRA's quote rate for 1,000
near-the-money contracts reaches tens of thousands of events/s. The figures are
set against `BUSY_RATE`, 50,000 events/s, the high end of that (our assumption:
no per-connection rate is published). Three figures, as for Deribit (venues.py):

- ``decode``: µs per event through `decode_frame`, the adapter's `EventFilter` and
  `FeedBuffer.quote` / `.trade`, as `MassiveSource._read` does it (pure CPU); also
  `decode_frame` alone, and the whole decode with one event per frame.
- ``ingest``: events/s over a real local WebSocket. `LocalMassive` (aiohttp, port 0,
  in this process) serves the two REST endpoints the adapter needs at start
  (contracts, chain snapshot) and the WebSocket's greeting, auth and subscription
  acknowledgements. Once the window is subscribed, it sends one warm-up quote
  (so every acknowledgement is read before the clock starts), then hands all N
  events' frames to its socket at once; a real `MassiveSource` consumes them
  through `batches()`. The figure is N / (first frame written -> the adapter's
  counters `quotes + trades` reach N). Quotes are conflated per contract in the
  buffer, so batches carry fewer rows than N; the share is reported.
- ``pipeline``: the same, each batch also applied to a `Processor`.

Server and client share this process and its one event loop: the figures are one
core's. During the run the server only writes bytes built before the clock (one
`transport.write`). Plain `ws://`, no permessage-deflate: Massive is `wss://`, so
TLS would add to the client's cost.

The stream (`build_stream`): SPY at 680 on 2026-11-30 10:00 New York, 13 expiries
(dailies, the December monthly and quarterly, January's monthly) with strikes $1
apart within 10 % of spot, as the contracts endpoint lists them. The adapter, at
its defaults, streams 8 expiries x 62 strikes x call/put = 992 contracts;
events fall on them weighted toward the money and the nearest expiries, 1 % are
trades. Quotes are Black-Scholes prices on a drifting spot with a smile, on
penny ticks, with every field Massive sends. Massive puts several events in one
frame when they come faster than it writes (its docs: to keep the send buffer
short); at the busy rates that matter here a writer that flushes every ~0.5-1 ms
sends tens of events per frame, so frames hold 1-39 events, 20 on average. The
decode row with one event per frame shows the cost when the venue does not batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Self, cast

import msgspec
import numpy as np
from aiohttp import WSMsgType, web

from ..aio import cancel_and_wait
from ..gateway.frames import text_frame
from ..model.contract import Contract
from ..processing.pricing import bsm_price
from ..processing.processor import Processor
from ..sources.base import SourceBatch
from ..sources.feed import FeedBuffer
from ..sources.massive import MassiveSource
from ..sources.massive.normalize import EventFilter, decode_frame, parse_contracts_page
from ..sources.massive.window import choose_window
from ..sources.sim.calendar import expiry_instant_us

DEFAULT_EVENTS = 100_000  # 2 s at BUSY_RATE
DECODE_EVENTS = 20_000  # the decode figures run over the first frames holding these
BUSY_RATE = 50_000  # events/s of 1,000 near-the-money contracts at busy times (assumed)
EVENTS_PER_FRAME = 20  # the mean; a frame holds 1 to 2 * EVENTS_PER_FRAME - 1
TRADE_SHARE = 0.01  # OPRA carries far more quotes than trades
TAKE_EVERY = 1_000  # decode: events between two takes of the buffer (outside the clock)
MAX_CONTRACTS = 1000  # the venue's cap per connection, the adapter's default
API_KEY = "bench-venues-key"
WS_PATH = "/options"
CONTRACTS_PATH = "/v3/reference/options/contracts"
SNAPSHOT_PATH = "/v3/snapshot/options/{underlying}"

REFERENCE = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 in New York, a Monday
REFERENCE_MS = int(REFERENCE.timestamp() * 1000)
REFERENCE_US = REFERENCE_MS * 1000
SNAPSHOT_MS = REFERENCE_MS - 1_000  # the snapshot's quotes: before every streamed one
WARMUP_MS = REFERENCE_MS - 500
US_PER_YEAR = 365 * 86_400_000_000

UNDERLYING = "SPY"
SPOT = 680.0
RATE = 0.04
STRIKE_SPAN = 0.10
EXPIRIES = (
    date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3),
    date(2026, 12, 4), date(2026, 12, 7), date(2026, 12, 8), date(2026, 12, 9),
    date(2026, 12, 10), date(2026, 12, 11), date(2026, 12, 18), date(2026, 12, 31),
    date(2027, 1, 15),
)  # fmt: skip
EXCHANGES = (300, 301, 302, 303, 304, 307, 308, 309, 312, 313, 315, 316, 319, 322, 323, 325)

# -- the events ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventStream:
    """What the local venue lists and sends, built once per bench run.

    `rest_rows`: the contracts endpoint's rows of every listed contract, sorted by
    expiry; `snapshot_rows`: the chain snapshot's row of each (same order);
    `window`: the contracts the adapter streams (its own `choose_window`).
    `frames`: every frame of the stream as an unmasked WebSocket text frame, back
    to back; `sample` the text of the first frames (at least `DECODE_EVENTS`
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

    @property
    def expiries(self) -> int:
        """How many expiries the window spans."""
        return len({c.expiry for c in self.window})


def _vendor(expiry: date, right: str, strike: float) -> str:
    return f"O:{UNDERLYING}{expiry:%y%m%d}{right}{round(strike * 1000):08d}"


def build_listing() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The contracts endpoint's rows and the chain snapshot's rows of every listed contract."""
    rest: list[dict[str, Any]] = []
    snap: list[dict[str, Any]] = []
    lo, hi = math.ceil(SPOT * (1 - STRIKE_SPAN)), math.floor(SPOT * (1 + STRIKE_SPAN))
    strikes = np.arange(lo, hi + 1, dtype=np.float64)
    for n, expiry in enumerate(EXPIRIES):
        years = (expiry_instant_us(expiry) - SNAPSHOT_MS * 1000) / US_PER_YEAR
        for right, is_call in (("C", True), ("P", False)):
            prices = bsm_price(is_call, SPOT, strikes, years, RATE, 0.0, _vol(strikes, years))
            for i, (k, price) in enumerate(zip(strikes.tolist(), prices.tolist(), strict=True)):
                ticker = _vendor(expiry, right, k)
                row = {
                    "contract_type": "call" if is_call else "put",
                    "exercise_style": "american", "expiration_date": expiry.isoformat(),
                    "shares_per_contract": 100, "strike_price": k, "ticker": ticker,
                }  # fmt: skip
                rest.append(row | {
                    "cfi": "OCASPS" if is_call else "OPASPS", "primary_exchange": "BATO",
                    "underlying_ticker": UNDERLYING,
                })  # fmt: skip
                mid = round(price, 2)
                bid, ask = max(round(mid - 0.01, 2), 0.0), round(mid + 0.01, 2)
                snap.append({
                    "break_even_price": round(k + mid if is_call else k - mid, 2),
                    "day": {"close": mid, "volume": 100 + i, "vwap": mid,
                            "last_updated": SNAPSHOT_MS * 1_000_000},
                    "details": row,
                    "greeks": {"delta": 0.5, "gamma": 0.01, "theta": -0.1, "vega": 0.3},
                    "implied_volatility": 0.16,
                    "last_quote": {"ask": ask, "ask_size": 12, "bid": bid, "bid_size": 10,
                                   "last_updated": SNAPSHOT_MS * 1_000_000, "midpoint": mid,
                                   "timeframe": "REAL-TIME"},
                    "open_interest": 100 + (i * 37 + n * 11) % 9000,
                    "underlying_asset": {"change_to_break_even": 1.0, "price": SPOT,
                                         "last_updated": SNAPSHOT_MS * 1_000_000,
                                         "ticker": UNDERLYING, "timeframe": "REAL-TIME"},
                })  # fmt: skip
    order = sorted(range(len(rest)), key=lambda j: (rest[j]["expiration_date"], rest[j]["ticker"]))
    return [rest[j] for j in order], [snap[j] for j in order]


def _vol(strikes: Any, years: Any) -> Any:
    """A smile with a put skew, steeper near expiry."""
    x = np.log(strikes / SPOT)
    return np.clip(0.16 * (1 - 1.5 * x + 2.0 * x * x / np.sqrt(np.maximum(years, 0.002))), 0.05, 2)


def streamed_window(rest_rows: list[dict[str, Any]]) -> tuple[Contract, ...]:
    """The contracts MassiveSource streams at its defaults, by its own parser and window."""
    page = parse_contracts_page(msgspec.json.encode({"results": rest_rows}), UNDERLYING)
    if page.rejects:
        raise RuntimeError(f"the adapter rejects listed contracts: {page.rejects[:3]}")
    return choose_window(page.contracts, SPOT, REFERENCE_US, max_contracts=MAX_CONTRACTS).contracts


def build_stream(events: int = DEFAULT_EVENTS, *, seed: int = 1) -> EventStream:
    """`events` events of the streamed window, in frames of 1-39 (see the module docstring).

    Event times run from `REFERENCE_MS` at `BUSY_RATE` (rising, so none is out of
    order); spot follows a random walk, repriced every 1,000 events. Deterministic
    for a `seed`.
    """
    rng = random.Random(seed)
    rest_rows, snapshot_rows = build_listing()
    window = streamed_window(rest_rows)
    syms = [_vendor(c.expiry, c.right, c.strike) for c in window]
    strike = np.array([c.strike for c in window])
    expiry_us = np.array([c.expiry_us for c in window], dtype=np.float64)
    is_call = np.array([c.right == "C" for c in window])
    nearest = sorted({c.expiry for c in window})
    # Busier near the money and near expiry (0DTE most of all).
    weights = [
        math.exp(-abs(c.strike - SPOT) / 8) / (1 + nearest.index(c.expiry)) for c in window
    ]  # fmt: skip
    picks = rng.choices(range(len(window)), weights=weights, k=events)
    enc = msgspec.json.Encoder()
    spot = SPOT
    mids: list[float] = []
    out: list[dict[str, Any]] = []
    frames: list[bytes] = []
    sample: list[str] = []
    single: list[str] = []
    total_bytes = trades = 0
    size = 0
    for i, j in enumerate(picks):
        t_ms = REFERENCE_MS + i * 1000 // BUSY_RATE
        if i % 1000 == 0:
            spot *= math.exp(rng.gauss(0.0, 0.0002))
            years = np.maximum((expiry_us - t_ms * 1000) / US_PER_YEAR, 1e-6)
            vol = _vol(strike, years) * spot / SPOT
            mids = np.round(bsm_price(is_call, spot, strike, years, RATE, 0.0, vol), 2).tolist()
        mid, ex = mids[j], rng.choice(EXCHANGES)
        ev: dict[str, Any]
        if rng.random() < TRADE_SHARE:
            trades += 1
            ev = {"ev": "T", "sym": syms[j], "x": ex, "p": max(mid, 0.01),
                  "s": rng.randint(1, 50), "c": [209], "t": t_ms, "q": 800_000_000 + i}  # fmt: skip
        else:
            half = 0.01 * rng.choice((1, 1, 2, 3))
            ev = {"ev": "Q", "sym": syms[j], "bx": ex, "ax": rng.choice(EXCHANGES),
                  "bp": max(round(mid - half, 2), 0.0), "ap": round(mid + half, 2),
                  "bs": rng.randint(1, 250), "as": rng.randint(1, 250), "t": t_ms,
                  "q": 800_000_000 + i}  # fmt: skip
        out.append(ev)
        if size == 0:
            size = rng.randint(1, 2 * EVENTS_PER_FRAME - 1)
        if len(out) == size or i == events - 1:
            payload = enc.encode(out)
            frames.append(text_frame(payload))
            total_bytes += len(payload)
            if len(single) < DECODE_EVENTS:
                sample.append(payload.decode())
                single += [enc.encode([e]).decode() for e in out]
            out, size = [], 0
    warmup = {"ev": "Q", "sym": syms[0], "bx": 300, "ax": 300, "bp": 1.0, "ap": 1.02, "bs": 1,
              "as": 1, "t": WARMUP_MS, "q": 1}  # fmt: skip
    return EventStream(
        rest_rows, snapshot_rows, window, b"".join(frames), len(frames), events, trades,
        sample, single, enc.encode([warmup]).decode(), total_bytes / max(events, 1),
    )  # fmt: skip


# -- decode: the adapter's pure part --------------------------------------------------


def _filter(stream: EventStream) -> EventFilter:
    f = EventFilter()
    f.relist(UNDERLYING, list(stream.window))
    return f


def _decode_into(texts: list[str], f: EventFilter, buffer: FeedBuffer) -> tuple[float, int, int]:
    """Decode `texts` into `buffer` as `MassiveSource._read` does; (seconds, events, drops).

    The buffer is taken outside the clock every `TAKE_EVERY` events or so, as
    processing would take it.
    """
    elapsed = 0.0
    events = drops = pending = 0
    for text in texts:
        t0 = time.perf_counter()
        frame = decode_frame(text)
        for q in frame.quotes:
            hit = f.quote(q)
            if isinstance(hit, str):
                drops += 1
                continue
            buffer.quote(hit[0], hit[1], bid=q.bp, ask=q.ap, bid_size=q.bs,
                         ask_size=q.as_, ts=q.t * 1000)  # fmt: skip
        for t in frame.trades:
            hit = f.trade(t)
            if isinstance(hit, str):
                drops += 1
                continue
            buffer.trade(hit[0], hit[1], t.p, t.s, t.t * 1000)
        elapsed += time.perf_counter() - t0
        n = len(frame.quotes) + len(frame.trades)
        events += n
        drops += len(frame.rejects)
        pending += n
        if pending >= TAKE_EVERY:
            buffer.take()
            pending = 0
    return elapsed, events, drops


def bench_decode(stream: EventStream, runs: int) -> dict[str, float]:
    """Median µs per event of `stream.sample`: "decode" (decode_frame, EventFilter and
    FeedBuffer, as the adapter's reader), "decode_frame" alone, and "single" (the
    whole decode of the same events sent one per frame).

    Raises RuntimeError when an event is dropped (none should be).
    """
    full: list[float] = []
    frame_only: list[float] = []
    single: list[float] = []
    for _ in range(runs):
        for texts, into in ((stream.sample, full), (stream.single, single)):
            seconds, events, drops = _decode_into(texts, _filter(stream), FeedBuffer())
            if drops:
                raise RuntimeError(f"the adapter's decode dropped {drops} of {events} events")
            into.append(seconds / events * 1e6)
        t0 = time.perf_counter()
        for text in stream.sample:
            decode_frame(text)
        frame_only.append((time.perf_counter() - t0) / len(stream.single) * 1e6)
    return {
        "decode": statistics.median(full),
        "decode_frame": statistics.median(frame_only),
        "single": statistics.median(single),
    }


# -- ingest and pipeline: a real WebSocket ---------------------------------------------


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


class LocalMassive:
    """A minimal Massive on 127.0.0.1, port 0; an async context manager.

    REST (`Authorization: Bearer API_KEY`, else 401): the contracts endpoint
    (`underlying_ticker`, `expiration_date[.gte|.lte]`, sorted by expiry) and the
    chain snapshot (`expiration_date`, `strike_price[.gte|.lte]`), paged by `limit`
    and an absolute `next_url`. WebSocket at `/options`: the `connected` greeting,
    `auth` (`auth_success` or `auth_failed`), `subscribe` / `unsubscribe` acknowledged
    with one `success` status per param, in one frame per action. Once quotes and
    trades of the whole window are subscribed it sends the warm-up quote and sets
    `subscribed`; `send_stream()` then writes every frame of the stream at once.
    """

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self._wanted = {f"{ch}.{_vendor(c.expiry, c.right, c.strike)}"
                        for c in stream.window for ch in ("Q", "T")}  # fmt: skip
        self._subscribed: set[str] = set()
        self.subscribed = asyncio.Event()
        self._transport: asyncio.Transport | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        """The WebSocket URL (valid inside the `async with` block)."""
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    @property
    def rest_url(self) -> str:
        """The REST base URL (valid inside the `async with` block)."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get(WS_PATH, self._ws)
        app.router.add_get(CONTRACTS_PATH, self._contracts)
        app.router.add_get(SNAPSHOT_PATH, self._snapshot)
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
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def send_stream(self) -> None:
        """Hand every frame to the subscribed connection's socket (asyncio paces the writes)."""
        if self._transport is None or self._transport.is_closing():
            raise RuntimeError("no subscribed connection to stream to")
        self._transport.write(self.stream.frames)

    # -- WebSocket ------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)  # plain text frames, as pre-built
        await ws.prepare(request)
        self._sockets.append(ws)
        authed = False
        try:
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
        finally:
            self._sockets.remove(ws)
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
            self._transport = request.transport
            self.subscribed.set()

    # -- REST -----------------------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"status": "ERROR", "error": "Unknown API Key"}, status=401)
        return None

    @staticmethod
    def _page(request: web.Request, rows: list[dict[str, Any]], max_limit: int) -> web.Response:
        limit = min(max(int(request.query.get("limit", "10")), 1), max_limit)
        start = int(request.query.get("cursor", "0"))
        body: dict[str, Any] = {"status": "OK", "request_id": f"r{start}",
                                "results": rows[start : start + limit]}  # fmt: skip
        if start + limit < len(rows):
            body["next_url"] = str(request.url.update_query(cursor=str(start + limit)))
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    async def _contracts(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        q = request.query
        rows = [
            r for r in self.stream.rest_rows
            if q.get("underlying_ticker") == UNDERLYING
            and _matches(q, "expiration_date", r["expiration_date"], str)
        ]  # fmt: skip
        return self._page(request, rows, 1000)

    async def _snapshot(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        q = request.query
        rows = [
            r for r in self.stream.snapshot_rows
            if request.match_info["underlying"] == UNDERLYING
            and _matches(q, "expiration_date", r["details"]["expiration_date"], str)
            and _matches(q, "strike_price", r["details"]["strike_price"], float)
        ]  # fmt: skip
        return self._page(request, rows, 250)


@dataclass(frozen=True, slots=True)
class IngestRun:
    """One ingest (or pipeline) run.

    `taken + dropped == events` (drops by the adapter's checks; 0 expected);
    `rows` is how many events reached processing: quote rows (at most one per
    contract per batch: a newer quote replaces a pending one) plus every trade.
    """

    events: int
    taken: int
    dropped: int
    rows: int
    batches: int
    seconds: float  # the first frame written -> the adapter has taken the last event
    cpu_seconds: float  # this process's CPU time over the same span

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds

    @property
    def rows_share(self) -> float:
        """The share of the events that reached processing as rows (1 = no conflation)."""
        return self.rows / self.events


class _Consumer:
    """Reads `source.batches()` (applying each to `processor`, when given) in a task.

    `ready` is set once the listing and the warm-up quote came through; `done` once
    the adapter took (or dropped) the warm-up quote and `events` more.
    """

    def __init__(self, source: MassiveSource, processor: Processor | None, events: int) -> None:
        self.source = source
        self.processor = processor
        self.target = events + 1  # the warm-up quote
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.started_at = self.finished_at = 0.0
        self.listings = self.rows = self.batches = 0

    async def run(self) -> None:
        source = self.source
        self.started_at = time.perf_counter()
        batches = cast(AsyncGenerator[SourceBatch, None], source.batches())
        async with contextlib.aclosing(batches) as feed:
            async for batch in feed:
                self._apply(batch)
                # No await between the buffer's take and this check: once the counters
                # say the last event was taken, the batches so far hold all of them.
                if source.quotes + source.trades + sum(source.dropped.values()) >= self.target:
                    self.finished_at = time.perf_counter()
                    self.done.set()
                    return
                if self.listings and source.quotes:
                    self.ready.set()

    def _apply(self, batch: SourceBatch) -> None:
        if self.processor is not None:
            now = REFERENCE_US + int((time.perf_counter() - self.started_at) * 1e6)
            self.processor.apply(batch, now)
        self.listings += len(batch.listings)
        if self.ready.is_set():
            self.batches += 1
            self.rows += sum(len(q.symbols) for q in batch.quotes)
            self.rows += sum(len(t.symbols) for t in batch.trades)


async def _until(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Return once `event` is set; raise the consumer's failure if it ends first (a
    source that cannot start ends with SourceError, rather than a wait until the limit)."""
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(waiter)
    if not event.is_set():
        task.result()
        raise RuntimeError("the consumer ended before the stream was taken")


async def ingest(stream: EventStream, *, process: bool, limit_s: float = 60.0) -> IngestRun:
    """One run: a MassiveSource on a `LocalMassive` streaming `stream` (see module docstring).

    With `process`, each batch is also applied to a fresh `Processor`. Raises
    TimeoutError when the adapter has not taken the last event within `limit_s`,
    RuntimeError when it streams another window than the stream's.
    """
    async with LocalMassive(stream) as venue:
        source = MassiveSource(
            [UNDERLYING], api_key=API_KEY, ws_url=venue.ws_url, rest_url=venue.rest_url,
            snapshot_interval_s=3600.0,  # no poll during a run
            clock=lambda: REFERENCE_US, rng=random.Random(1),
        )  # fmt: skip
        consumer = _Consumer(source, Processor() if process else None, stream.events)
        task = asyncio.create_task(consumer.run(), name="bench-venues-massive-consumer")
        try:
            async with asyncio.timeout(limit_s):
                await _until(venue.subscribed, task)
                await _until(consumer.ready, task)
                cpu0, t0 = time.process_time(), time.perf_counter()
                venue.send_stream()
                await _until(consumer.done, task)
                cpu1 = time.process_time()
            await task
        finally:
            await cancel_and_wait(task)
    window = source.windows[UNDERLYING]
    if window is None or window.contracts != stream.window:
        raise RuntimeError("the adapter streamed another window than the bench built")
    taken = source.quotes + source.trades - 1
    return IngestRun(
        stream.events, taken, sum(source.dropped.values()), consumer.rows, consumer.batches,
        consumer.finished_at - t0, cpu1 - cpu0,
    )  # fmt: skip


async def bench_ingest(stream: EventStream, runs: int) -> dict[str, list[IngestRun]]:
    """`runs` runs of "ingest" and of "pipeline", alternating (noise spreads over both)."""
    out: dict[str, list[IngestRun]] = {"ingest": [], "pipeline": []}
    for _ in range(runs):
        for name in out:
            out[name].append(await ingest(stream, process=name == "pipeline"))
    return out


def _median_run(runs: list[IngestRun]) -> tuple[float, float, float, float]:
    """Medians of (events/s, rows share, CPU share, events per batch)."""
    return (
        statistics.median(r.rate for r in runs),
        statistics.median(r.rows_share for r in runs),
        statistics.median(r.cpu_seconds / r.seconds for r in runs),
        statistics.median(r.events / max(r.batches, 1) for r in runs),
    )


def main(runs: int, *, events: int = DEFAULT_EVENTS) -> int:
    """Build the stream, run the three figures `runs` times each and print their medians."""
    t0 = time.perf_counter()
    stream = build_stream(events)
    print(
        f"venues: Massive adapter, {len(stream.window):,} contracts of {UNDERLYING} "
        f"({stream.expiries} expiries), {events:,} events ({stream.trades:,} trades) in "
        f"{stream.frame_count:,} frames of 1-{2 * EVENTS_PER_FRAME - 1} events, "
        f"{stream.mean_bytes:,.0f} bytes per event (built in {time.perf_counter() - t0:.1f} s); "
        f"medians of {runs} runs"
    )
    dec = bench_decode(stream, runs)
    results = asyncio.run(bench_ingest(stream, runs))
    for name, rs in results.items():
        bad = [r for r in rs if r.dropped or r.taken != r.events]
        if bad:
            raise RuntimeError(f"{name}: events were dropped: {bad[0]}")
    busy = BUSY_RATE
    rows = [
        ("stage", "µs/event", "events/s", "x busy", "reached processing", "CPU"),
        ("decode (decode_frame + EventFilter + FeedBuffer)", f"{dec['decode']:.2f}",
         f"{1e6 / dec['decode']:,.0f}", f"{1e6 / dec['decode'] / busy:.1f}", "", ""),
        ("  of which decode_frame", f"{dec['decode_frame']:.2f}", "", "", "", ""),
        ("decode, one event per frame", f"{dec['single']:.2f}", f"{1e6 / dec['single']:,.0f}",
         f"{1e6 / dec['single'] / busy:.1f}", "", ""),
    ]  # fmt: skip
    for name, rs in results.items():
        rate, share, cpu, per_batch = _median_run(rs)
        rows.append((
            name, f"{1e6 / rate:.2f}", f"{rate:,.0f}", f"{rate / busy:.1f}",
            f"{share:.1%} as rows (batches of ~{per_batch:,.0f})", f"{cpu:.2f}",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:4], widths[1:4], strict=True)
        ]
        cells += [c.ljust(w) for c, w in zip(r[4:], widths[4:], strict=True)]
        print("  " + "  ".join(cells).rstrip())
    print(
        f"  x busy: against ~{busy:,} events/s, 1,000 near-the-money contracts at busy times"
        " (assumed). CPU: this process's CPU time / wall time."
    )
    return 0
