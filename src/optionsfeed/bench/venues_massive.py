"""`optionsfeed bench venues`, second part: how fast the Massive adapter ingests events.

Massive's options WebSocket streams the quotes (`Q`) and trades (`T`) of at most
1,000 contracts per connection; at busy times OPRA's quote rate for 1,000
near-the-money contracts reaches tens of thousands of events/s. The figures are
set against `BUSY_RATE`, 50,000 events/s, the high end of that (our assumption:
no per-connection rate is published). Three figures, as for Deribit (venues.py),
then the pipeline at the live rate:

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
- ``paced``: the pipeline at `BUSY_RATE`, under `feed.REST_RATIO` 0 (the default:
  processing takes the next batch at once) and 1 (a rest when busy), alternating. The
  venue runs in a process of its own (`VenueProcess`) and writes one frame of
  `BUSY_RATE x interval` events every `interval` (0.5 ms; others through
  `paced_main`'s `intervals`) for `PACED_SECONDS`, sleeping in between. Per run: this process's CPU time / wall time, batches/s,
  events per batch, the mean `Processor.apply` per batch, and the added delay of
  each event: from the venue's write of its frame (`time.monotonic()` in the
  venue, just before the write) to the moment the batch holding it is handed to
  the Processor (the same clock in this process). Each hand-off notes the
  adapter's counters (`quotes + trades + dropped`); the reader decodes a frame
  whole between two awaits, so the first hand-off whose count reaches a frame's
  last event is the one that holds the frame (`handoff_delays`). p50 and p99 are
  over the events.

For decode, ingest and pipeline, server and client share this process and its
one event loop: the figures are one core's. During the run the server only
writes bytes built before the clock (one `transport.write`). Plain `ws://`, no
permessage-deflate: Massive is `wss://`, so TLS would add to the client's cost.

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
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

import msgspec
import numpy as np
from numpy.typing import NDArray

from ..aio import cancel_and_wait
from ..gateway.frames import text_frame
from ..model.contract import Contract
from ..processing.pricing import bsm_price
from ..processing.processor import Processor
from ..sources import feed
from ..sources.base import SourceBatch
from ..sources.feed import FeedBuffer
from ..sources.massive import MassiveSource
from ..sources.massive.normalize import EventFilter, decode_frame, parse_contracts_page
from ..sources.massive.window import choose_window
from ..sources.sim.calendar import expiry_instant_us
from .massive_venue import API_KEY, UNDERLYING, EventStream, LocalMassive, VenueProcess

DEFAULT_EVENTS = 100_000  # 2 s at BUSY_RATE
DECODE_EVENTS = 20_000  # the decode figures run over the first frames holding these
BUSY_RATE = 50_000  # events/s of 1,000 near-the-money contracts at busy times (assumed)
EVENTS_PER_FRAME = 20  # the mean; a frame holds 1 to 2 * EVENTS_PER_FRAME - 1
TRADE_SHARE = 0.01  # OPRA carries far more quotes than trades
TAKE_EVERY = 1_000  # decode: events between two takes of the buffer (outside the clock)
MAX_CONTRACTS = 1000  # the venue's cap per connection, the adapter's default
PACED_SECONDS = 1.0  # paced: how long the venue writes at BUSY_RATE
PACED_INTERVALS = (0.0005, 0.002)  # paced: seconds between two frames: busy, and not

REFERENCE = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 in New York, a Monday
REFERENCE_MS = int(REFERENCE.timestamp() * 1000)
REFERENCE_US = REFERENCE_MS * 1000
SNAPSHOT_MS = REFERENCE_MS - 1_000  # the snapshot's quotes: before every streamed one
WARMUP_MS = REFERENCE_MS - 500
US_PER_YEAR = 365 * 86_400_000_000

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


def build_stream(
    events: int = DEFAULT_EVENTS, *, seed: int = 1, frame_events: int | None = None
) -> EventStream:
    """`events` events of the streamed window, in frames of 1-39 (see the module docstring),
    or of `frame_events` each when given (the last may hold fewer).

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
    ends: list[int] = []
    counts: list[int] = []
    sample: list[str] = []
    single: list[str] = []
    total_bytes = trades = offset = 0
    size = frame_events or 0
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
            offset += len(frames[-1])
            ends.append(offset)
            counts.append(len(out))
            total_bytes += len(payload)
            if len(single) < DECODE_EVENTS:
                sample.append(payload.decode())
                single += [enc.encode([e]).decode() for e in out]
            out, size = [], frame_events or 0
    warmup = {"ev": "Q", "sym": syms[0], "bx": 300, "ax": 300, "bp": 1.0, "ap": 1.02, "bs": 1,
              "as": 1, "t": WARMUP_MS, "q": 1}  # fmt: skip
    return EventStream(
        rest_rows, snapshot_rows, window, b"".join(frames), len(frames), events, trades,
        sample, single, enc.encode([warmup]).decode(), total_bytes / max(events, 1),
        tuple(ends), tuple(counts),
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
    the adapter took (or dropped) the warm-up quote and `events` more. While
    `handoffs` is a list, each batch appends (`time.monotonic()` as it is handed
    over, events the adapter had taken or dropped by then, the warm-up included).
    """

    def __init__(self, source: MassiveSource, processor: Processor | None, events: int) -> None:
        self.source = source
        self.processor = processor
        self.target = events + 1  # the warm-up quote
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.started_at = self.finished_at = self.apply_seconds = 0.0
        self.listings = self.rows = self.batches = 0
        self.handoffs: list[tuple[float, int]] | None = None

    async def run(self) -> None:
        source = self.source
        self.started_at = time.perf_counter()
        batches = cast(AsyncGenerator[SourceBatch, None], source.batches())
        async with contextlib.aclosing(batches) as feed:
            async for batch in feed:
                # No await between the buffer's take and here: the counters say which
                # events the batches so far hold (the reader decodes whole frames).
                taken = source.quotes + source.trades + sum(source.dropped.values())
                if self.handoffs is not None:
                    self.handoffs.append((time.monotonic(), taken))
                self._apply(batch)
                if taken >= self.target:
                    self.finished_at = time.perf_counter()
                    self.done.set()
                    return
                if self.listings and source.quotes:
                    self.ready.set()

    def _apply(self, batch: SourceBatch) -> None:
        if self.processor is not None:
            t0 = time.perf_counter()
            self.processor.apply(batch, REFERENCE_US + int((t0 - self.started_at) * 1e6))
            self.apply_seconds += time.perf_counter() - t0
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


def _source(ws_url: str, rest_url: str) -> MassiveSource:
    return MassiveSource(
        [UNDERLYING], api_key=API_KEY, ws_url=ws_url, rest_url=rest_url,
        snapshot_interval_s=3600.0,  # no poll during a run
        clock=lambda: REFERENCE_US, rng=random.Random(1),
    )  # fmt: skip


def _check_window(source: MassiveSource, stream: EventStream) -> None:
    window = source.windows[UNDERLYING]
    if window is None or window.contracts != stream.window:
        raise RuntimeError("the adapter streamed another window than the bench built")


async def ingest(stream: EventStream, *, process: bool, limit_s: float = 60.0) -> IngestRun:
    """One run: a MassiveSource on a `LocalMassive` streaming `stream` (see module docstring).

    With `process`, each batch is also applied to a fresh `Processor`. Raises
    TimeoutError when the adapter has not taken the last event within `limit_s`,
    RuntimeError when it streams another window than the stream's.
    """
    async with LocalMassive(stream) as venue:
        source = _source(venue.ws_url, venue.rest_url)
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
    _check_window(source, stream)
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


# -- paced: the pipeline at the live rate ------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestSetting:
    """A paced run's `feed.REST_RATIO` (and `feed.MAX_REST_S`, unless None) and its label."""

    label: str
    ratio: float
    max_rest_s: float | None = None

    @property
    def title(self) -> str:
        """The label, with MAX_REST_S when the setting sets it."""
        if self.max_rest_s is None:
            return self.label
        return f"{self.label}, MAX_REST_S {self.max_rest_s * 1e3:g} ms"


REST_SETTINGS = (
    RestSetting("rest ratio 0 (default)", 0.0),
    RestSetting("rest ratio 1", 1.0),
)


@contextlib.contextmanager
def rest_setting(setting: RestSetting) -> Iterator[None]:
    """Set `feed.REST_RATIO` (and `MAX_REST_S`) to `setting` for the block, then restore
    both: `feed_batches` reads them at every batch."""
    saved = feed.REST_RATIO, feed.MAX_REST_S
    feed.REST_RATIO = setting.ratio
    if setting.max_rest_s is not None:
        feed.MAX_REST_S = setting.max_rest_s
    try:
        yield
    finally:
        feed.REST_RATIO, feed.MAX_REST_S = saved


@dataclass(frozen=True, slots=True)
class PacedRun:
    """One paced run (`paced`); `taken + dropped == events` (0 drops expected).

    `delay_p50` / `delay_p99`: over the events, the seconds from the venue's write
    of the event's frame to the hand-off of the batch holding it to the Processor
    (`handoff_delays`). `venue_late_p99`: how late the venue wrote its frames
    against their schedule (its pacing's accuracy).
    """

    events: int
    taken: int
    dropped: int
    rows: int  # reached processing (see IngestRun)
    batches: int
    seconds: float  # start_paced -> the adapter has taken the last event
    cpu_seconds: float  # this process's CPU time over the same span (not the venue's)
    apply_seconds: float  # of the span, in Processor.apply
    delay_p50: float
    delay_p99: float
    venue_late_p99: float
    venue_cpu_seconds: float  # the venue process's, while it wrote

    @property
    def cpu_share(self) -> float:
        """This process's CPU time / wall time (1.0 = one core busy all the time)."""
        return self.cpu_seconds / self.seconds

    @property
    def batches_per_s(self) -> float:
        """Batches handed to the Processor per second."""
        return self.batches / self.seconds

    @property
    def events_per_batch(self) -> float:
        """Events taken per batch (before conflation)."""
        return self.events / max(self.batches, 1)

    @property
    def rows_share(self) -> float:
        """The share of the events that reached processing as rows (1 = no conflation)."""
        return self.rows / self.events


def handoff_delays(
    stream: EventStream, written: NDArray[np.float64], handoffs: list[tuple[float, int]]
) -> NDArray[np.float64]:
    """Per event of `stream`: seconds from the write of its frame to the hand-off of the
    batch holding it.

    `written[k]`: when frame k was written; `handoffs`: (time, stream events taken by
    then) of each batch, in order, on the same clock. The adapter decodes a frame
    whole between two awaits, so a batch holds frame k's events when it is the first
    whose count reaches the end of frame k. Raises RuntimeError when no batch holds
    the last frame, or a batch was handed over before its frame was written (clocks
    that differ).
    """
    sizes = np.array(stream.frame_events, dtype=np.int64)
    times = np.array([t for t, _ in handoffs], dtype=np.float64)
    taken = np.array([n for _, n in handoffs], dtype=np.int64)
    at = np.searchsorted(taken, np.cumsum(sizes), side="left")
    if not len(taken) or at[-1] >= len(taken):
        raise RuntimeError("no batch handed over the stream's last frame")
    delays = times[at] - written
    if delays.min() < 0.0:
        raise RuntimeError("a batch was handed over before its frame was written")
    return np.repeat(delays, sizes)


async def paced(
    stream: EventStream, venue: VenueProcess, *, interval_s: float, limit_s: float = 60.0
) -> PacedRun:
    """One run: a MassiveSource on `venue`, which writes `stream` one frame every
    `interval_s`; each batch is applied to a fresh `Processor`, under the current
    `feed.REST_RATIO` / `MAX_REST_S`.

    Raises TimeoutError when the adapter has not taken the last event within
    `limit_s`, RuntimeError when the venue fails or the adapter streams another
    window than the stream's.
    """
    source = _source(venue.ws_url, venue.rest_url)
    consumer = _Consumer(source, Processor(), stream.events)
    task = asyncio.create_task(consumer.run(), name="bench-venues-massive-paced")
    try:
        async with asyncio.timeout(limit_s):
            await _until(consumer.ready, task)
            handoffs = consumer.handoffs = []
            apply0 = consumer.apply_seconds
            cpu0, t0 = time.process_time(), time.perf_counter()
            venue.start_paced(interval_s)
            await _until(consumer.done, task)
            cpu1 = time.process_time()
            writes = await venue.writes(limit_s)
        await task
    finally:
        await cancel_and_wait(task)
    _check_window(source, stream)
    # The warm-up quote is counted in `taken`, before the stream's events.
    delays = handoff_delays(stream, writes.written, [(t, n - 1) for t, n in handoffs])
    p50, p99 = np.percentile(delays, [50, 99])
    due = writes.start + np.arange(len(writes.written)) * interval_s
    return PacedRun(
        stream.events, source.quotes + source.trades - 1, sum(source.dropped.values()),
        consumer.rows, len(handoffs), consumer.finished_at - t0, cpu1 - cpu0,
        consumer.apply_seconds - apply0, float(p50), float(p99),
        float(np.percentile(writes.written - due, 99)), writes.cpu_seconds,
    )  # fmt: skip


async def bench_paced(
    stream: EventStream,
    runs: int,
    *,
    interval_s: float,
    settings: Sequence[RestSetting] = REST_SETTINGS,
) -> dict[RestSetting, list[PacedRun]]:
    """`runs` paced runs of each setting, alternating, against one `VenueProcess`;
    the feed's module values are restored after each run. Raises ValueError when
    two settings are equal (their runs would be pooled)."""
    if len(set(settings)) != len(settings):
        raise ValueError(f"the same setting twice in {settings}")
    out: dict[RestSetting, list[PacedRun]] = {s: [] for s in settings}
    async with VenueProcess(stream) as venue:
        for _ in range(runs):
            for s in settings:
                with rest_setting(s):
                    out[s].append(await paced(stream, venue, interval_s=interval_s))
    return out


def paced_stream(interval_s: float, seconds: float = PACED_SECONDS) -> EventStream:
    """`seconds` of events at `BUSY_RATE`, in frames of what arrives in `interval_s`."""
    per_frame = max(1, round(BUSY_RATE * interval_s))
    return build_stream(
        max(1, round(BUSY_RATE * seconds / per_frame)) * per_frame, frame_events=per_frame
    )


def _paced_row(s: RestSetting, interval_s: float, rs: list[PacedRun]) -> tuple[str, ...]:
    def med(figure: Callable[[PacedRun], float]) -> float:
        return statistics.median(figure(r) for r in rs)

    return (
        s.title, f"{interval_s * 1e3:g} ms", f"{med(lambda r: r.cpu_share):.2f}",
        f"{med(lambda r: r.batches_per_s):,.0f}", f"{med(lambda r: r.events_per_batch):,.0f}",
        f"{med(lambda r: r.rows_share):.1%}",
        f"{med(lambda r: r.apply_seconds / max(r.batches, 1)) * 1e3:.2f} ms",
        f"{med(lambda r: r.delay_p50) * 1e3:.2f} ms", f"{med(lambda r: r.delay_p99) * 1e3:.2f} ms",
    )  # fmt: skip


def paced_main(
    runs: int,
    *,
    seconds: float = PACED_SECONDS,
    intervals: Sequence[float] = PACED_INTERVALS,
    settings: Sequence[RestSetting] = REST_SETTINGS,
) -> int:
    """Run every setting `runs` times (alternating) at each frame interval; print medians."""
    print(
        f"venues: Massive at the live rate, {BUSY_RATE:,} events/s for {seconds:g} s from a "
        f"venue process, one frame every {' / '.join(f'{i * 1e3:g}' for i in intervals)} ms; "
        f"each batch applied to a Processor; medians of {runs} runs, settings alternating "
        f"(MAX_REST_S = {feed.MAX_REST_S * 1e3:g} ms unless shown)"
    )
    rows: list[tuple[str, ...]] = [("setting", "frame every", "CPU", "batches/s", "events/batch", "as rows",
             "apply/batch", "delay p50", "delay p99")]  # fmt: skip
    late = venue_cpu = 0.0
    for interval_s in intervals:
        stream = paced_stream(interval_s, seconds)
        results = asyncio.run(bench_paced(stream, runs, interval_s=interval_s, settings=settings))
        for s in settings:
            rs = results[s]
            bad = [r for r in rs if r.dropped or r.taken != r.events]
            if bad:
                raise RuntimeError(f"{s.title}: events were dropped: {bad[0]}")
            rows.append(_paced_row(s, interval_s, rs))
            late = max(late, max(r.venue_late_p99 for r in rs))
            venue_cpu = max(venue_cpu, max(r.venue_cpu_seconds / r.seconds for r in rs))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("  " + "  ".join(cells))
    print(
        "  CPU: this process's CPU time / wall time; the venue's process is not counted "
        f"(at most {venue_cpu:.2f} core), and wrote 99 % of its frames within "
        f"{late * 1e3:.2f} ms of their time. delay: per event, from the venue's write of its "
        "frame to the hand-off of the batch holding it to the Processor."
    )
    return 0
