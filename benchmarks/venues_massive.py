"""`optionsfeed bench venues`, second part: how fast the Massive adapter ingests events.

Massive's options WebSocket streams the quotes (`Q`) and trades (`T`) of at most
1,000 contracts per connection; at busy times OPRA's quote rate for 1,000
near-the-money contracts reaches tens of thousands of events/s. The figures are
set against `BUSY_RATE`, 50,000 events/s, the high end of that (our assumption:
no per-connection rate is published). Three figures, as for Deribit (venues.py); the
pipeline at the live rate follows in venues_paced.py:

- ``decode``: µs per event through `decode_frame`, the adapter's `EventFilter` and
  `Tape` and `FeedBuffer.quote` / `.trade`, as `MassiveSource._read` does it (pure CPU); also
  `decode_frame` alone, and the whole decode with one event per frame.
- ``ingest``: events/s over a real local WebSocket. The Massive fake of the tests
  (`tests.fakes.massive.Venue`: aiohttp, port 0, in this process; massive_venue.py)
  serves the two REST endpoints the adapter needs at start (contracts, chain
  snapshot) and the WebSocket's greeting, auth and subscription acknowledgements.
  Once the window is subscribed, it sends one warm-up quote (so every
  acknowledgement is read before the clock starts), then hands all N events'
  frames to its socket at once (`write_frames`); a real `MassiveSource` consumes them
  through `batches()`. The figure is N / (first frame written -> the adapter's
  counters `quotes + trades` reach N). Quotes are conflated per contract in the
  buffer, so batches carry fewer rows than N; the share is reported.
- ``pipeline``: the same, each batch also applied to a `Processor`.

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

import math
import random
import statistics
import time
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import numpy as np

from optionsfeed.gateway.frames import text_frame
from optionsfeed.model.calendar import expiry_instant_us
from optionsfeed.model.contract import Contract
from optionsfeed.pricing import bsm_price
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.feed import DEFAULT_MAX_REST_S, DEFAULT_REST_RATIO, FeedBuffer
from optionsfeed.sources.massive import MassiveSource
from optionsfeed.sources.massive.normalize import EventFilter, decode_frame, parse_contracts_page
from optionsfeed.sources.massive.tape import Tape
from optionsfeed.sources.massive.window import choose_window
from tests.fakes.massive import VenueContract

from .massive_venue import API_KEY, UNDERLYING, EventStream, serve, subscribed, warming
from .venue_common import (
    BatchConsumer,
    IngestRun,
    decode_row,
    print_ingest_table,
    timed_run,
)

DEFAULT_EVENTS = 100_000  # 2 s at BUSY_RATE
DECODE_EVENTS = 20_000  # the decode figures run over the first frames holding these
BUSY_RATE = 50_000  # events/s of 1,000 near-the-money contracts at busy times (assumed)
EVENTS_PER_FRAME = 20  # the mean; a frame holds 1 to 2 * EVENTS_PER_FRAME - 1
TRADE_SHARE = 0.01  # OPRA carries far more quotes than trades
TAKE_EVERY = 1_000  # decode: events between two takes of the buffer (outside the clock)
MAX_CONTRACTS = 1000  # the venue's cap per connection, the adapter's default

REFERENCE = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 in New York, a Monday
REFERENCE_MS = int(REFERENCE.timestamp() * 1000)
REFERENCE_US = REFERENCE_MS * 1000
REFERENCE_DAY = date(2026, 11, 30)  # in New York: which contracts have expired
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


def build_listing() -> list[VenueContract]:
    """Every listed contract, with its quote in the chain snapshot, sorted by expiry."""
    out: list[VenueContract] = []
    lo, hi = math.ceil(SPOT * (1 - STRIKE_SPAN)), math.floor(SPOT * (1 + STRIKE_SPAN))
    strikes = np.arange(lo, hi + 1, dtype=np.float64)
    for n, expiry in enumerate(EXPIRIES):
        years = (expiry_instant_us(expiry) - SNAPSHOT_MS * 1000) / US_PER_YEAR
        for right, is_call in (("C", True), ("P", False)):
            prices = bsm_price(is_call, SPOT, strikes, years, RATE, 0.0, _vol(strikes, years))
            for i, (k, price) in enumerate(zip(strikes.tolist(), prices.tolist(), strict=True)):
                mid = round(price, 2)
                out.append(VenueContract(
                    _vendor(expiry, right, k), UNDERLYING, expiry, k, is_call,
                    open_interest=100 + (i * 37 + n * 11) % 9000,
                    bid=max(round(mid - 0.01, 2), 0.0), ask=round(mid + 0.01, 2),
                    quote_ns=SNAPSHOT_MS * 1_000_000,
                ))  # fmt: skip
    return sorted(out, key=lambda c: (c.expiry, c.ticker))


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
    contracts = build_listing()
    window = streamed_window([c.rest_row() for c in contracts])
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
        tuple(contracts), REFERENCE_DAY, SPOT, SNAPSHOT_MS * 1_000_000, window, b"".join(frames), len(frames), events, trades,
        sample, single, enc.encode([warmup]).decode(), total_bytes / max(events, 1),
        tuple(ends), tuple(counts),
    )  # fmt: skip


# -- decode: the adapter's pure part --------------------------------------------------


def _filter(stream: EventStream) -> EventFilter:
    f = EventFilter()
    f.relist(UNDERLYING, list(stream.window))
    return f


def _decode_into(texts: list[str], f: EventFilter, buffer: FeedBuffer) -> tuple[float, int, int]:
    """Decode `texts` into `buffer` as `MassiveSource._read` does (with its `Tape`: the
    newest quote per contract, the day's volume put with it after each trade);
    (seconds, events, drops).

    The buffer is taken outside the clock every `TAKE_EVERY` events or so, as
    processing would take it.
    """
    elapsed = 0.0
    events = drops = pending = 0
    tape = Tape()  # each contract's newest quote and day volume, as the adapter keeps them
    tops, unsent, nan = tape.tops, tape.unsent, math.nan
    for text in texts:
        t0 = time.perf_counter()
        frame = decode_frame(text)
        for q in frame.quotes:
            hit = f.quote(q)
            if isinstance(hit, str):
                drops += 1
                continue
            ts = q.t * 1000
            tops[hit[1]] = (q.bp, q.ap, q.bs, q.as_, ts)
            volume = tape.take_unsent(hit[1]) if unsent else nan
            buffer.quote(hit[0], hit[1], bid=q.bp, ask=q.ap, bid_size=q.bs,
                         ask_size=q.as_, ts=ts, volume=volume)  # fmt: skip
        for t in frame.trades:
            hit = f.trade(t)
            if isinstance(hit, str):
                drops += 1
                continue
            ts = t.t * 1000
            buffer.trade(hit[0], hit[1], t.p, t.s, ts)
            volume = tape.trade(hit[1], t.s, ts)
            top = tape.tops.get(hit[1])
            if top is None:
                tape.unsent.add(hit[1])
            else:
                buffer.quote(hit[0], hit[1], bid=top[0], ask=top[1], bid_size=top[2],
                             ask_size=top[3], ts=top[4], volume=volume)  # fmt: skip
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


class MassiveConsumer(BatchConsumer[MassiveSource]):
    """Ready once the listing and the warm-up quote came through; done once the adapter
    took (or dropped) the warm-up quote and `events` more.

    With `handoffs`, from ready on each batch appends to `handoffs` (`time.monotonic()`
    as it is handed over, events the adapter had taken or dropped by then, the
    warm-up included).
    """

    def __init__(
        self,
        source: MassiveSource,
        processor: Processor | None,
        events: int,
        *,
        handoffs: bool = False,
    ) -> None:
        super().__init__(source, processor, REFERENCE_US)
        self.target = events + 1  # the warm-up quote
        self.handoffs: list[tuple[float, int]] = []
        self._note_handoffs = handoffs

    def _arrived(self) -> bool:
        source = self.source
        # The reader decodes whole frames, so the counters say which events the
        # batches so far hold.
        taken = source.quotes + source.trades + sum(source.dropped.values())
        if self._note_handoffs and self.ready.is_set():
            self.handoffs.append((time.monotonic(), taken))
        return taken >= self.target

    def _is_ready(self) -> bool:
        return self.listings > 0 and self.source.quotes > 0


def massive_source(
    ws_url: str,
    rest_url: str,
    *,
    rest_ratio: float = DEFAULT_REST_RATIO,
    max_rest_s: float = DEFAULT_MAX_REST_S,
) -> MassiveSource:
    """A MassiveSource of `UNDERLYING` on the bench's venue at these URLs, its batches
    paced by `rest_ratio` and `max_rest_s` (FeedBuffer's; the defaults: no rest)."""
    return MassiveSource(
        [UNDERLYING], api_key=API_KEY, ws_url=ws_url, rest_url=rest_url,
        snapshot_interval_s=3600.0,  # no poll during a run
        clock=lambda: REFERENCE_US, rng=random.Random(1),
        rest_ratio=rest_ratio, max_rest_s=max_rest_s,
    )  # fmt: skip


def check_window(source: MassiveSource, stream: EventStream) -> None:
    """Raise RuntimeError when `source` streams another window than `stream`'s."""
    window = source.windows[UNDERLYING]
    if window is None or window.contracts != stream.window:
        raise RuntimeError("the adapter streamed another window than the bench built")


async def ingest(stream: EventStream, *, process: bool, limit_s: float = 60.0) -> IngestRun:
    """One run: a MassiveSource on the Massive fake streaming `stream` (see module docstring).

    With `process`, each batch is also applied to a fresh `Processor`. Raises
    TimeoutError when the adapter has not taken the last event within `limit_s`,
    RuntimeError when it streams another window than the stream's.
    """
    async with serve(stream) as venue, warming(venue, stream):
        source = massive_source(venue.ws_url, venue.rest_url)
        consumer = MassiveConsumer(source, Processor() if process else None, stream.events)
        seconds, cpu_seconds = await timed_run(
            consumer, lambda: venue.write_frames(stream.frames),
            name="bench-venues-massive-consumer", limit_s=limit_s,
            subscribed=lambda: venue.until(lambda: subscribed(venue, stream), limit_s),
        )  # fmt: skip
    check_window(source, stream)
    taken = source.quotes + source.trades - 1
    return IngestRun(
        stream.events, taken, sum(source.dropped.values()), consumer.rows, consumer.batches,
        seconds, cpu_seconds,
    )  # fmt: skip


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
    busy = BUSY_RATE
    print_ingest_table(
        lambda process: ingest(stream, process=process), runs,
        unit="event", versus="x busy", reference=busy,
        decode_rows=[
            decode_row("decode (decode_frame + EventFilter + FeedBuffer)", dec["decode"], busy),
            decode_row("  of which decode_frame", dec["decode_frame"], None),
            decode_row("decode, one event per frame", dec["single"], busy),
        ],
    )  # fmt: skip
    print(
        f"  x busy: against ~{busy:,} events/s, 1,000 near-the-money contracts at busy times"
        " (assumed). CPU: this process's CPU time / wall time."
    )
    return 0
