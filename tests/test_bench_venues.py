"""`optionsfeed bench venues` runs at a tiny size, counts every message and reports sane
figures (no timing is asserted)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from optionsfeed.bench.venues import REFERENCE_US, bench_decode, build_stream, ingest, main
from optionsfeed.sources.deribit.normalize import build_listing, decode_instruments
from optionsfeed.sources.deribit.symbols import instrument_of_ticker_channel
from optionsfeed.sources.feed import FeedBuffer


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
    """The command prints one line per stage."""
    assert main(1, messages=1500) == 0
    out = capsys.readouterr().out
    for stage in ("decode", "Decoder.decode", "ingest", "pipeline"):
        assert stage in out
