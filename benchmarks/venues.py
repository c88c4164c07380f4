"""`optionsfeed bench venues`: how fast the Deribit adapter ingests ticker notifications.

The Massive adapter's figures follow in a second table (venues_massive.py), and its
pipeline at the live rate (paced, rest ratio 0 against 1) in a third (venues_paced.py).
What the three share (runs, the consumer, the local server's plumbing, the tables)
is in venue_common.py.

Deribit's full public options feed (`ticker.{instrument}.100ms` of every BTC and ETH
option, about 1,500 instruments) reaches about 15,000 ticker messages/s. Three
figures say whether one core keeps up, and what each stage costs:

- ``decode``: µs per ticker notification through the adapter's `Decoder` and into
  a `FeedBuffer` (pure CPU, no sockets); also `Decoder.decode` alone.
- ``ingest``: messages/s over a real local WebSocket. The Deribit fake of the tests
  (`tests.fakes.deribit.DeribitVenue`: aiohttp, port 0, in this process) lists the
  stream's instruments and answers the adapter's requests as Deribit does; once
  every channel is subscribed and the listings reached the consumer, it hands N
  pre-built ticker frames to its socket at once (`write_frames`), and a real
  `DeribitSource` consumes them through `batches()`. The
  figure is N / (first frame written -> the adapter has decoded the last one). The
  buffer conflates quotes per instrument, so batches carry fewer rows than N; the
  share that reached processing as rows is reported too.
- ``pipeline``: the same, each batch also applied to a `Processor` (repricing
  included, no broker): what the whole processor side sustains on one core.

Server and client share this process and its one event loop, so the figures are
one core's. The server's share is small: the frames are built before the clock
starts and written with one `transport.write`, so during the run it only sends
bytes (about 8 % of an ingest run on loopback, where a send also does the
receiving side's TCP work). The frames are uncompressed text over plain `ws://`: TLS
(Deribit is `wss://`) and permessage-deflate would add to the client's cost.

The tickers (`build_stream`) look like Deribit's: every field Deribit sends,
compact JSON of about 800 bytes, prices from Black-76 on a drifting forward with
a smile, on the venue's price ticks. Each 100 ms round carries every instrument
once, in a fresh random order, as the full 100ms feed does.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import numpy as np

from optionsfeed.gateway.frames import text_frame
from optionsfeed.pricing import bsm_greeks, bsm_price
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import UnderlyingTick
from optionsfeed.sources.deribit.normalize import Decoder, Quote, put
from optionsfeed.sources.deribit.source import DeribitSource
from optionsfeed.sources.deribit.symbols import (
    Right,
    expiry_instant_us,
    format_name,
    index_channel,
    ticker_channel,
    trades_channel,
)
from optionsfeed.sources.feed import FeedBuffer
from tests.fakes.deribit import DeribitVenue

from .venue_common import (
    BatchConsumer,
    IngestRun,
    decode_row,
    print_ingest_table,
    timed_run,
)
from .venues_massive import DEFAULT_EVENTS as MASSIVE_EVENTS
from .venues_massive import main as massive_main
from .venues_paced import PACED_SECONDS
from .venues_paced import paced_main as massive_paced_main

DEFAULT_MESSAGES = 60_000  # 40 rounds of every instrument: 4 s of Deribit's full feed
DECODE_MESSAGES = 15_000  # the decode figure runs over the first 10 rounds
DERIBIT_FULL_FEED = 15_000  # ticker messages/s of the full BTC + ETH options feed
ROUND_MS = 100  # `ticker.*.100ms`: each instrument at most once per 100 ms

REFERENCE = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
REFERENCE_MS = int(REFERENCE.timestamp() * 1000)
REFERENCE_US = REFERENCE_MS * 1000
MS_PER_YEAR = 365 * 86_400_000

CURRENCIES = ("BTC", "ETH")
SPOT = {"BTC": 91_000.0, "ETH": 3_000.0}
STRIKE_TICK = {"BTC": 500, "ETH": 25}
BASE_VOL = {"BTC": 0.45, "ETH": 0.6}
# Deribit's expiries as of the reference day: dailies, weeklies, monthlies, quarterlies.
EXPIRIES = (
    date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3), date(2026, 12, 4),
    date(2026, 12, 11), date(2026, 12, 18), date(2026, 12, 25), date(2027, 1, 29),
    date(2027, 2, 26), date(2027, 3, 26), date(2027, 6, 25), date(2027, 9, 24),
    date(2027, 12, 31),
)  # fmt: skip
# Strikes per expiry (each a call and a put): 800 BTC and 700 ETH options.
STRIKES = {
    "BTC": (16, 18, 18, 22, 26, 28, 34, 34, 36, 40, 42, 42, 44),
    "ETH": (14, 16, 16, 18, 22, 24, 30, 30, 32, 34, 36, 38, 40),
}
RIGHTS: tuple[tuple[str, Right], ...] = (("call", "C"), ("put", "P"))

# -- the tickers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickerStream:
    """What the local venue lists and sends, built once per bench run.

    `frames` is every notification as an unmasked WebSocket text frame, back to
    back; `sample` the text of the first `DECODE_MESSAGES` of them; `final` the
    instrument and timestamp (ms) of the last one, which no earlier one reaches.
    """

    instruments: dict[str, list[dict[str, Any]]]
    frames: bytes
    sample: list[str]
    messages: int
    distinct: int
    final: tuple[str, int]
    mean_bytes: float

    def names(self) -> dict[str, list[str]]:
        """The instrument names of each currency."""
        return {c: [i["instrument_name"] for i in v] for c, v in self.instruments.items()}


def build_instruments() -> dict[str, list[dict[str, Any]]]:
    """`public/get_instruments` results of the options of `CURRENCIES`, as Deribit sends them."""
    out: dict[str, list[dict[str, Any]]] = {}
    instrument_id = 400_000
    for currency in CURRENCIES:
        spot, tick = SPOT[currency], STRIKE_TICK[currency]
        out[currency] = []
        for expiry, count in zip(EXPIRIES, STRIKES[currency], strict=True):
            expiry_ms = expiry_instant_us(expiry) // 1000
            t = (expiry_ms - REFERENCE_MS) / MS_PER_YEAR
            half_width = spot * min(0.85, 0.06 + 1.1 * math.sqrt(t))
            step = math.ceil(2 * half_width / count / tick) * tick
            atm = round(spot / step) * step
            lowest = max(-(count // 2), -(atm // step) + 1)
            period = "day" if expiry.day < 4 else "week" if expiry.month == 12 else "month"
            for i in range(count):
                strike = atm + step * (lowest + i)
                for option_type, right in RIGHTS:
                    instrument_id += 1
                    out[currency].append({
                        "tick_size": 0.0001,
                        "tick_size_steps": [{"above_price": 0.005, "tick_size": 0.0005}],
                        "taker_commission": 0.0003, "strike": float(strike),
                        "settlement_period": period, "settlement_currency": currency,
                        "rfq": False, "quote_currency": currency,
                        "price_index": f"{currency.lower()}_usd", "option_type": option_type,
                        "min_trade_amount": 0.1, "maker_commission": 0.0003, "kind": "option",
                        "is_active": True,
                        "instrument_name": format_name(currency, expiry, float(strike), right),
                        "instrument_id": instrument_id, "expiration_timestamp": expiry_ms,
                        "creation_timestamp": expiry_ms - 60 * 86_400_000,
                        "counter_currency": "USD", "contract_size": 1.0,
                        "block_trade_tick_size": 0.0001, "block_trade_min_trade_amount": 25,
                        "block_trade_commission": 0.00015, "base_currency": currency,
                    })  # fmt: skip
    return out


@dataclass(slots=True)
class _Chain:
    """One currency's instruments as columns, for pricing a round at once."""

    currency: str
    names: list[str]
    channels: list[str]
    underlying_index: list[str]
    strike: np.ndarray[Any, np.dtype[np.float64]]
    expiry_ms: np.ndarray[Any, np.dtype[np.float64]]
    is_call: np.ndarray[Any, np.dtype[np.bool_]]
    open_interest: list[float]
    volume: list[float]
    last: list[float | None]


def _chain(currency: str, instruments: list[dict[str, Any]], rng: random.Random) -> _Chain:
    names = [i["instrument_name"] for i in instruments]
    index = []
    for i in instruments:
        label = i["instrument_name"].split("-")[1]
        daily = i["settlement_period"] == "day"  # no future of that expiry: a synthetic one
        index.append(f"SYN.{currency}-{label}" if daily else f"{currency}-{label}")
    return _Chain(
        currency, names, [ticker_channel(n) for n in names], index,
        np.array([i["strike"] for i in instruments]),
        np.array([i["expiration_timestamp"] for i in instruments], dtype=np.float64),
        np.array([i["option_type"] == "call" for i in instruments]),
        [round(rng.uniform(0, 3000), 1) for _ in names],
        [round(rng.uniform(0, 500), 1) for _ in names],
        [None if rng.random() < 0.3 else 0.0 for _ in names],
    )  # fmt: skip


def _round(ch: _Chain, spot: float, ts_ms: int, rng: random.Random) -> list[dict[str, Any]]:
    """The ticker data of every instrument of `ch` at `spot` (in listing order)."""
    t = np.maximum((ch.expiry_ms - ts_ms) / MS_PER_YEAR, 1e-6)
    fwd = spot * np.exp(0.05 * t)
    x = np.log(ch.strike / fwd)
    smile = 1 + 0.25 * x * x / np.sqrt(np.maximum(t, 0.02))
    vol = np.clip(BASE_VOL[ch.currency] * smile, 0.2, 2.0)
    coin = bsm_price(ch.is_call, fwd, ch.strike, t, 0.0, 0.0, vol) / fwd
    mark = np.maximum(np.round(coin, 7), 0.0001)
    tick = np.where(mark >= 0.005, 0.0005, 0.0001)
    on_tick = np.round(mark / tick) * tick
    half = tick * np.array([rng.choice((1, 1, 2, 3)) for _ in ch.names])
    bid = np.round(np.maximum(on_tick - half, 0.0), 4)
    ask = np.round(on_tick + half, 4)
    g = bsm_greeks(ch.is_call, fwd, ch.strike, t, 0.0, 0.0, vol)
    cols = [np.round(a, 5).tolist() for a in (g.rho, g.theta, g.vega, g.gamma, g.delta)]
    rho, theta, vega, gamma, delta = cols
    mark_l, bid_l, ask_l = mark.tolist(), bid.tolist(), ask.tolist()
    iv_l, fwd_l = np.round(vol * 100, 2).tolist(), np.round(fwd, 2).tolist()
    index_price = round(spot, 2)
    out = []
    for i, name in enumerate(ch.names):
        if ch.last[i] is not None and rng.random() < 0.01:
            ch.last[i] = mark_l[i]
        out.append({
            "timestamp": ts_ms,
            "stats": {"volume_usd": round(ch.volume[i] * mark_l[i] * spot, 2),
                      "volume": ch.volume[i], "price_change": -2.5442,
                      "low": bid_l[i] or None, "high": ask_l[i]},
            "state": "open", "settlement_price": mark_l[i],
            "open_interest": ch.open_interest[i], "min_price": 0.0001,
            "max_price": round(mark_l[i] + 0.05, 4), "mark_price": mark_l[i],
            "mark_iv": iv_l[i], "last_price": ch.last[i], "interest_rate": 0.0,
            "instrument_name": name, "index_price": index_price,
            "greeks": {"rho": rho[i], "theta": theta[i], "vega": vega[i], "gamma": gamma[i],
                       "delta": delta[i]},
            "estimated_delivery_price": index_price, "bid_iv": round(iv_l[i] - 1.3, 2),
            "best_bid_price": bid_l[i],
            "best_bid_amount": round(rng.uniform(0.1, 50), 1) if bid_l[i] > 0 else 0.0,
            "best_ask_price": ask_l[i], "best_ask_amount": round(rng.uniform(0.1, 50), 1),
            "ask_iv": round(iv_l[i] + 1.4, 2), "underlying_price": fwd_l[i],
            "underlying_index": ch.underlying_index[i],
        })  # fmt: skip
    return out


def build_stream(messages: int = DEFAULT_MESSAGES, *, seed: int = 1) -> TickerStream:
    """`messages` ticker notifications of the `build_instruments` options, 100 ms rounds.

    Each round holds every instrument once (the last round may be cut short), in
    random order, with timestamps rising through the round; spots follow a random
    walk. Deterministic for a `seed`.
    """
    rng = random.Random(seed)
    instruments = build_instruments()
    chains = [_chain(c, instruments[c], rng) for c in CURRENCIES]
    spot = dict(SPOT)
    enc = msgspec.json.Encoder()
    frames: list[bytes] = []
    sample: list[str] = []
    total_bytes = 0
    seen: set[str] = set()
    final = ("", 0)
    r = 0
    while len(frames) < messages:
        ts0 = REFERENCE_MS + r * ROUND_MS
        order: list[tuple[str, str, dict[str, Any]]] = []
        for ch in chains:
            spot[ch.currency] *= math.exp(rng.gauss(0.0, 0.0005))
            tickers = _round(ch, spot[ch.currency], ts0, rng)
            order.extend(zip(ch.channels, ch.names, tickers, strict=True))
        rng.shuffle(order)
        order = order[: messages - len(frames)]
        for j, (channel, name, data) in enumerate(order):
            ts = ts0 + j * ROUND_MS // len(order)
            data["timestamp"] = ts
            payload = enc.encode(
                {"jsonrpc": "2.0", "method": "subscription",
                 "params": {"channel": channel, "data": data}}
            )  # fmt: skip
            frames.append(text_frame(payload))
            total_bytes += len(payload)
            if len(sample) < DECODE_MESSAGES:
                sample.append(payload.decode())
            seen.add(name)
            final = (name, ts)
        r += 1
    return TickerStream(
        instruments, b"".join(frames), sample, messages, len(seen), final,
        total_bytes / max(messages, 1),
    )  # fmt: skip


# -- decode: the adapter's pure part -----------------------------------------------------


def _decoder(stream: TickerStream) -> Decoder:
    decoder = Decoder()
    for currency, names in stream.names().items():
        decoder.set_instruments(currency, names)
    return decoder


def bench_decode(stream: TickerStream, runs: int) -> dict[str, float]:
    """Median µs per notification of `stream.sample`: "decode" (Decoder.decode and
    FeedBuffer.quote, as the adapter's reader does) and "Decoder.decode" alone.

    The buffer is taken (outside the clock) after every round's worth of
    messages, as processing would take it.
    """
    per_round = sum(len(v) for v in stream.instruments.values())
    chunks = [stream.sample[i : i + per_round] for i in range(0, len(stream.sample), per_round)]
    into_buffer: list[float] = []
    decode_only: list[float] = []
    for _ in range(runs):
        decoder, buffer = _decoder(stream), FeedBuffer()
        decode = decoder.decode
        elapsed = 0.0
        for chunk in chunks:
            t0 = time.perf_counter()
            for text in chunk:
                item = decode(text)
                if isinstance(item, Quote | UnderlyingTick):  # as DeribitSource._on_item
                    put(buffer, item)
            elapsed += time.perf_counter() - t0
            buffer.take()
        into_buffer.append(elapsed / len(stream.sample) * 1e6)
        if decoder.dropped:
            raise RuntimeError(f"the decoder dropped messages: {dict(decoder.dropped)}")
        decode = _decoder(stream).decode
        t0 = time.perf_counter()
        for text in stream.sample:
            decode(text)
        decode_only.append((time.perf_counter() - t0) / len(stream.sample) * 1e6)
    return {
        "decode": statistics.median(into_buffer),
        "Decoder.decode": statistics.median(decode_only),
    }


# -- ingest and pipeline: a real WebSocket -----------------------------------------------


def stream_channels(stream: TickerStream) -> set[str]:
    """The channels the adapter subscribes for `stream`: every option's ticker, and the
    index and option trades of every currency."""
    names = [n for v in stream.names().values() for n in v]
    channels = {ticker_channel(n) for n in names}
    channels.update(index_channel(c) for c in stream.instruments)
    channels.update(trades_channel(c) for c in stream.instruments)
    return channels


class TickerRun(IngestRun):
    """An ingest (or pipeline) run counted in ticker messages: `messages` are its
    `events`, `decoded` its `taken` (drops by the decoder or the buffer)."""

    __slots__ = ()

    @property
    def messages(self) -> int:
        """Ticker messages sent."""
        return self.events

    @property
    def decoded(self) -> int:
        """Ticker messages decoded and buffered."""
        return self.taken


class _Consumer(BatchConsumer[DeribitSource]):
    """Ready once every currency is listed; done once the decoder has the stream's last
    notification (`final`: instrument and timestamp, which no earlier one reaches)."""

    def __init__(
        self,
        source: DeribitSource,
        processor: Processor | None,
        final: tuple[str, int],
        currencies: int,
    ) -> None:
        super().__init__(source, processor, REFERENCE_US)
        self._final = final
        self._currencies = currencies

    def _arrived(self) -> bool:
        name, ts = self._final
        return self.source.decoder.last_ts.get(name, 0) >= ts

    def _is_ready(self) -> bool:
        return self.listings >= self._currencies


async def ingest(
    stream: TickerStream,
    *,
    process: bool,
    limit_s: float = 120.0,
    buffer: FeedBuffer | None = None,
) -> TickerRun:
    """One run: a DeribitSource on a `DeribitVenue` streaming `stream` (see module docstring).

    With `process`, each batch is also applied to a fresh `Processor`. `buffer` is
    the source's (default: a fresh FeedBuffer). Raises TimeoutError when the
    adapter has not decoded the last notification within `limit_s`.
    """
    channels = stream_channels(stream)
    instruments = [i for v in stream.instruments.values() for i in v]
    async with DeribitVenue(instruments) as venue:

        def subscribed() -> bool:
            return any(channels <= c.channels for c in venue.clients.values())

        source = DeribitSource(
            list(stream.instruments), venue.url, clock=lambda: REFERENCE_US,
            rng=random.Random(1), buffer=buffer,
        )  # fmt: skip
        processor = Processor() if process else None
        consumer = _Consumer(source, processor, stream.final, len(stream.instruments))
        seconds, cpu_seconds = await timed_run(
            consumer, lambda: venue.write_frames(stream.frames), name="bench-venues-consumer",
            limit_s=limit_s, subscribed=lambda: venue.wait_for(subscribed, limit_s),
        )  # fmt: skip
    dropped = sum(source.decoder.dropped.values()) + source.buffer.dropped_quotes
    return TickerRun(
        stream.messages, stream.messages - dropped, dropped, consumer.rows, consumer.batches,
        seconds, cpu_seconds,
    )  # fmt: skip


def main(
    runs: int,
    *,
    messages: int = DEFAULT_MESSAGES,
    massive_events: int = MASSIVE_EVENTS,
    paced_seconds: float = PACED_SECONDS,
) -> int:
    """Build the stream, run the three figures `runs` times each and print their medians;
    then the same for the Massive adapter (venues_massive.py, `massive_events` events),
    and its pipeline at the live rate (venues_paced.py, `paced_seconds` per run)."""
    t0 = time.perf_counter()
    stream = build_stream(messages)
    counts = {c: len(v) for c, v in stream.instruments.items()}
    print(
        f"venues: Deribit adapter, {sum(counts.values()):,} instruments "
        f"({', '.join(f'{c} {n}' for c, n in counts.items())}), {messages:,} ticker "
        f"notifications of {stream.mean_bytes:,.0f} bytes on average "
        f"(built in {time.perf_counter() - t0:.1f} s); medians of {runs} runs"
    )
    dec = bench_decode(stream, runs)
    full = DERIBIT_FULL_FEED
    print_ingest_table(
        lambda process: ingest(stream, process=process), runs,
        unit="message", versus="x full feed", reference=full,
        decode_rows=[
            decode_row("decode (Decoder + FeedBuffer)", dec["decode"], full),
            decode_row("  of which Decoder.decode", dec["Decoder.decode"], None),
        ],
    )  # fmt: skip
    print(
        f"  x full feed: against Deribit's full BTC + ETH options feed, ~{full:,} tickers/s."
        " CPU: this process's CPU time / wall time."
    )
    print()
    code = massive_main(runs, events=massive_events)
    print()
    return code or massive_paced_main(runs, seconds=paced_seconds)
