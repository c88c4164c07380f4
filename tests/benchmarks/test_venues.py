"""`optionsfeed bench venues` runs at a tiny size, counts every message and reports sane
figures (no timing is asserted); Deribit first, then Massive."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pytest

from benchmarks import venues_massive, venues_paced
from benchmarks.venues import REFERENCE_US, bench_decode, build_stream, ingest, main
from optionsfeed.sources import feed
from optionsfeed.sources.deribit.normalize import build_listing, decode_instruments
from optionsfeed.sources.deribit.symbols import instrument_of_ticker_channel
from optionsfeed.sources.feed import FeedBuffer
from optionsfeed.sources.massive.normalize import decode_frame


def test_the_stream_lists_about_1500_instruments_and_every_one_is_usable() -> None:
    """Every instrument passes the adapter's listing, and each one is quoted once per round."""
    stream = build_stream(3000)
    assert stream.messages == 3000
    total = sum(len(v) for v in stream.instruments.values())
    assert total == 1500
    assert stream.distinct == total  # two full rounds
    for currency, instruments in stream.instruments.items():
        raw = msgspec.Raw(msgspec.json.encode(instruments))
        result = build_listing(currency, decode_instruments(raw), now_us=REFERENCE_US)
        assert len(result.names) == len(instruments)
        assert not result.skipped
    assert 600 < stream.mean_bytes < 1200
    assert instrument_of_ticker_channel(f"ticker.{stream.final[0]}.100ms") == stream.final[0]


def test_decode_reports_positive_figures() -> None:
    """Both decode figures are finite and positive."""
    figures = bench_decode(build_stream(300), runs=1)
    assert set(figures) == {"decode", "Decoder.decode"}
    assert all(v > 0 and math.isfinite(v) for v in figures.values())


class CountingBuffer(FeedBuffer):
    """A FeedBuffer that counts the quotes put into it."""

    def __init__(self) -> None:
        super().__init__()
        self.quotes_in = 0

    def quote(self, underlying: str, symbol: str, **values: Any) -> None:
        self.quotes_in += 1
        super().quote(underlying, symbol, **values)


@pytest.mark.parametrize("process", [False, True], ids=["ingest", "pipeline"])
async def test_every_ticker_is_decoded_and_the_rows_add_up(process: bool) -> None:
    """All N tickers are decoded, none dropped; rows lie between the instruments and N."""
    stream = build_stream(3100)
    buffer = CountingBuffer()
    run = await ingest(stream, process=process, limit_s=30.0, buffer=buffer)
    assert run.messages == 3100
    assert run.dropped == 0
    assert buffer.quotes_in == run.decoded == run.messages
    # Each instrument's newest quote reaches processing; older ones may be conflated.
    assert stream.distinct <= run.rows <= run.decoded
    assert 0 < run.rows_share <= 1
    assert run.batches >= 1
    assert run.seconds > 0
    assert run.rate > 0
    assert run.cpu_seconds >= 0


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The command prints one line per stage, Deribit's table, Massive's, then the paced one."""
    assert main(1, messages=1500, massive_events=1000, paced_seconds=0.02) == 0
    out = capsys.readouterr().out
    deribit, massive = out.split("venues: Massive adapter")
    massive, live = massive.split("venues: Massive at the live rate")
    for stage in ("decode", "Decoder.decode", "ingest", "pipeline"):
        assert stage in deribit
    for stage in ("decode_frame", "one event per frame", "ingest", "pipeline"):
        assert stage in massive
    for setting in venues_paced.REST_SETTINGS:
        assert setting.title in live


# -- Massive ---------------------------------------------------------------------------


def test_the_massive_stream_quotes_the_window_the_adapter_streams() -> None:
    """992 contracts over 8 expiries; every event is of the window and passes decode_frame."""
    stream = venues_massive.build_stream(2000)
    assert len(stream.window) == 992
    assert stream.expiries == 8
    assert len(stream.rest_rows) == len(stream.snapshot_rows) > len(stream.window)
    vendor = {f"O:{c.symbol}" for c in stream.window}
    quotes = trades = 0
    for text in stream.single:
        frame = decode_frame(text)
        assert not frame.rejects
        assert {q.sym for q in frame.quotes} | {t.sym for t in frame.trades} <= vendor
        quotes += len(frame.quotes)
        trades += len(frame.trades)
    assert quotes + trades == len(stream.single) == stream.events == 2000
    assert trades == stream.trades
    assert 1 < stream.events / stream.frame_count < 2 * venues_massive.EVENTS_PER_FRAME
    assert 80 < stream.mean_bytes < 200


def test_massive_decode_reports_positive_figures() -> None:
    """The three decode figures are finite and positive."""
    figures = venues_massive.bench_decode(venues_massive.build_stream(500), runs=1)
    assert set(figures) == {"decode", "decode_frame", "single"}
    assert all(v > 0 and math.isfinite(v) for v in figures.values())


@pytest.mark.parametrize("process", [False, True], ids=["ingest", "pipeline"])
async def test_massive_takes_every_event_and_the_rows_add_up(process: bool) -> None:
    """All N events are taken, none dropped; rows lie between the contracts touched and N."""
    stream = venues_massive.build_stream(3000)
    run = await venues_massive.ingest(stream, process=process, limit_s=30.0)
    assert run.events == run.taken == 3000
    assert run.dropped == 0
    # Each contract's newest quote and every trade reach processing; older quotes
    # may be conflated.
    quoted: set[str] = set()
    for text in stream.single:
        quoted.update(q.sym for q in decode_frame(text).quotes)
    assert len(quoted) + stream.trades <= run.rows <= run.events
    assert 0 < run.rows_share <= 1
    assert run.batches >= 1
    assert run.seconds > 0
    assert run.rate > 0
    assert run.cpu_seconds >= 0


def test_a_paced_stream_has_frames_of_one_interval_each() -> None:
    """At 0.5 ms a frame holds the 25 events of its interval; the byte ends tile the frames."""
    stream = venues_paced.paced_stream(0.0005, seconds=0.01)
    assert stream.events == 500
    assert stream.frame_events == (25,) * 20
    assert stream.frame_count == len(stream.frame_ends) == 20
    assert stream.frame_ends[-1] == len(stream.frames)
    assert list(stream.frame_ends) == sorted(set(stream.frame_ends))


def test_handoff_delays_count_from_each_frame_to_the_batch_holding_it() -> None:
    """A frame belongs to the first batch whose count reaches its last event."""
    stream = venues_massive.build_stream(60, frame_events=25)  # frames of 25, 25, 10
    written = np.array([0.5, 0.9, 1.5])
    delays = venues_paced.handoff_delays(stream, written, [(1.0, 25), (2.0, 60)])
    assert delays.tolist() == pytest.approx([0.5] * 25 + [1.1] * 25 + [0.5] * 10)
    with pytest.raises(RuntimeError, match="last frame"):
        venues_paced.handoff_delays(stream, written, [(1.0, 25), (2.0, 50)])
    with pytest.raises(RuntimeError, match="before its frame"):
        venues_paced.handoff_delays(stream, written, [(0.1, 25), (2.0, 60)])


async def test_paced_runs_take_every_event_and_leave_the_feed_defaults() -> None:
    """Tiny paced runs add up; each setting reaches its source, and the feed's defaults
    (rest_ratio, max_rest_s) are as before."""
    before = feed.DEFAULT_REST_RATIO, feed.DEFAULT_MAX_REST_S
    settings = (*venues_paced.REST_SETTINGS, venues_paced.RestSetting("capped", 1.0, 0.001))
    stream = venues_paced.paced_stream(0.0005, seconds=0.05)
    results = await venues_paced.bench_paced(stream, 1, interval_s=0.0005, settings=settings)
    assert before == (feed.DEFAULT_REST_RATIO, feed.DEFAULT_MAX_REST_S) == (0.0, 0.002)
    fresh = FeedBuffer()
    assert (fresh.rest_ratio, fresh.max_rest_s) == before
    capped = settings[-1].source("ws://127.0.0.1:9/options", "http://127.0.0.1:9")
    assert (capped.rest_ratio, capped.max_rest_s) == (1.0, 0.001)
    assert list(results) == list(settings)
    for (run,) in results.values():
        assert run.events == run.taken == 2500
        assert run.dropped == 0
        assert 1 <= run.batches <= stream.frame_count
        assert 0 < run.rows <= run.events
        assert run.events_per_batch * run.batches == pytest.approx(run.events)
        assert run.seconds > 0
        assert run.cpu_seconds > 0
        assert 0 < run.apply_seconds <= run.seconds
        assert 0 < run.delay_p50 <= run.delay_p99
        assert run.batches_per_s > 0
        assert run.venue_cpu_seconds >= 0
    with pytest.raises(ValueError, match="twice"):
        await venues_paced.bench_paced(stream, 1, interval_s=0.0005, settings=settings[:1] * 2)
