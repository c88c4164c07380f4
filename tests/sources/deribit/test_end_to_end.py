"""Venue -> DeribitSource -> ProcessingService -> a real Redis: what clients would read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date

import msgspec
import pytest

from optionsfeed.aio import cancel_and_wait
from optionsfeed.app import readiness
from optionsfeed.broker.redis import RedisBroker
from optionsfeed.clock import wall_clock_us
from optionsfeed.config import Settings
from optionsfeed.model.envelope import UNDERLYING_FIELD
from optionsfeed.model.records import OptionRecord, UnderlyingRecord
from optionsfeed.processing.service import ProcessingService
from optionsfeed.sources.deribit import normalize as n
from optionsfeed.sources.deribit.source import DeribitSource
from optionsfeed.sources.deribit.symbols import ticker_channel

from ...fakes.deribit import DeribitVenue
from .fixtures import chain, fast_source, ticker, until

TODAY = date.today()
BTC = chain("BTC", TODAY, 90_000)
ETH = chain("ETH", TODAY, 3_000)
FORWARD = 90_100.0


@dataclass
class System:
    venue: DeribitVenue
    source: DeribitSource
    service: ProcessingService
    broker: RedisBroker

    async def records(self, underlying: str = "BTC") -> dict[str, OptionRecord]:
        snap = await self.broker.snapshot(underlying)
        if snap is None:
            return {}
        return {
            s: msgspec.json.decode(raw, type=OptionRecord)
            for s, raw in snap.records.items()
            if not s.startswith("__")
        }

    async def wait_records(
        self, pred: Callable[[dict[str, OptionRecord]], bool], what: str, limit_s: float = 10.0
    ) -> dict[str, OptionRecord]:
        """Poll the cache until `pred` holds (publishing is another task's business)."""
        async with asyncio.timeout(limit_s):
            while not pred(recs := await self.records()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return recs

    async def epoch(self) -> str | None:
        meta = await self.broker.meta("BTC")
        return None if meta is None else meta.epoch


@contextlib.asynccontextmanager
async def running(
    redis_url: str, *, clock: Callable[[], int] = wall_clock_us, stale_after_us: int = 60_000_000
) -> AsyncIterator[System]:
    """The venue listing BTC and ETH, and a processing service streaming it into Redis."""
    async with (
        DeribitVenue(BTC + ETH, min_heartbeat_s=0.1) as venue,
        RedisBroker(redis_url) as broker,
    ):
        source = fast_source(["BTC", "ETH"], venue.url, clock=clock)
        service = ProcessingService(source, broker, stale_after_us=stale_after_us, clock=clock)
        task = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.ready.wait(), 10)
            await until(lambda: source.health() is None, "subscribed")
            yield System(venue, source, service, broker)
        finally:
            assert await cancel_and_wait(task)


def all_finite(rec: OptionRecord) -> bool:
    values = msgspec.structs.asdict(rec).values()
    return all(math.isfinite(v) for v in values if isinstance(v, float))


async def test_tickers_and_the_index_become_records_in_redis(redis_url: str) -> None:
    """Records carry currency BTC, the venue's symbols, bid/ask in BTC, the venue's mark,
    IV and greeks; the index is the underlying record; heartbeats keep the connection."""
    async with running(redis_url) as sys:
        ts = sys.source.clock() // 1000
        assert await sys.venue.push_index("BTC", 90_010.5, ts) == 1
        sent = {}
        for inst in BTC:
            t = ticker(inst, ts, FORWARD)
            sent[inst["instrument_name"]] = t
            assert await sys.venue.push_ticker(t) == 1
        recs = await sys.wait_records(
            lambda r: len(r) == len(BTC) and all(x.bid is not None for x in r.values()),
            "every BTC contract quoted",
        )
        assert set(recs) == {i["instrument_name"] for i in BTC}
        for name, rec in recs.items():
            t = sent[name]
            assert (rec.currency, rec.underlying, rec.root, rec.multiplier) == (
                "BTC",
                "BTC",
                "BTC",
                1,
            )
            assert rec.bid == pytest.approx(t["best_bid_price"], abs=1e-9)  # in BTC
            assert rec.ask == pytest.approx(t["best_ask_price"], abs=1e-9)
            assert rec.mark == pytest.approx(t["mark_price"], abs=1e-4)
            has_bid = t["best_bid_price"] > 0  # far out of the money: no bid
            assert (rec.bid_size, rec.ask_size) == (
                10 if has_bid else 0,
                12.5,
            )  # fractional contracts stay fractional
            assert rec.open_interest == 42.5
            assert rec.ts == ts * 1000
            assert rec.iv is not None, rec
            # The fixture priced every mark at 50 % vol (to 7 decimals, as Deribit does).
            assert rec.iv == pytest.approx(0.5, abs=0.005), rec
            for greek in (rec.delta, rec.gamma, rec.theta, rec.vega, rec.rho):
                assert greek is not None
            assert all_finite(rec)
            assert rec.flags == ([] if has_bid else ["no_bid"])
        snap = await sys.broker.snapshot("BTC", [UNDERLYING_FIELD])
        assert snap is not None
        und = msgspec.json.decode(snap.records[UNDERLYING_FIELD], type=UnderlyingRecord)
        assert (und.symbol, und.price, und.ts) == ("BTC", 90_010.5, ts * 1000)
        assert (und.rate, und.dividend_yield) == (0.0, 0.0)
        assert len(await sys.records("ETH")) == len(ETH)

        # A trade sets last and its size; the volume stays the ticker's 24 h figure.
        name = BTC[0]["instrument_name"]
        trade = {"instrument_name": name, "timestamp": ts + 1, "price": 0.0123, "amount": 0.7,
                 "trade_id": "1", "trade_seq": 1, "direction": "buy"}  # fmt: skip
        assert await sys.venue.push_trades("BTC", [trade]) == 1
        recs = await sys.wait_records(lambda r: r[name].last_size == 0.7, "the trade")
        assert (recs[name].last, recs[name].volume) == (0.0123, 12.3)

        await sys.venue.wait_for(lambda: len(sys.venue.sent("public/test")) >= 3)
        assert sys.venue.connections == 1
        assert sys.venue.heartbeat_closes == 0


async def test_a_dropped_connection_gives_a_new_epoch_and_readiness_says_why(
    redis_url: str,
) -> None:
    """While the venue is down /readyz reports the source's reason; after reconnecting,
    a new epoch for each underlying, the same channels, and state that carried over."""
    async with running(redis_url) as sys:
        ts = sys.source.clock() // 1000
        first = BTC[0]
        await sys.venue.push_ticker(ticker(first, ts, FORWARD))
        await sys.wait_records(lambda r: r[first["instrument_name"]].bid is not None, "quoted")
        before = await sys.epoch()
        settings = Settings.load({}, {})

        sys.venue.refuse()
        await sys.venue.drop_all()
        await until(lambda: "disconnected" in (sys.source.health() or ""), "reported down")
        # grace_s 0: the source's trouble counts at once (by default only once it lasts).
        why = await readiness(
            sys.broker, settings, status=sys.service.status, source_health=sys.source.health,
            grace_s=0,
        )  # fmt: skip
        assert why is not None
        assert why.startswith("deribit: disconnected (")

        sys.venue.refuse(False)
        await until(lambda: sys.source.health() is None, "streaming again")
        after = await sys.epoch()
        assert after is not None
        assert after != before
        n_conn = sys.venue.connections
        channels = {
            c for m in sys.venue.sent("public/subscribe", n_conn) for c in m["params"]["channels"]
        }
        assert ticker_channel(first["instrument_name"]) in channels
        assert len(channels) == len(BTC) + len(ETH) + 4  # + an index and trades per currency
        # The quote from before the drop carried over into the new epoch's snapshot.
        recs = await sys.records()
        assert recs[first["instrument_name"]].bid == ticker(first, ts, FORWARD)["best_bid_price"]
        second = BTC[1]
        await sys.venue.push_ticker(ticker(second, ts + 10, FORWARD))
        await sys.wait_records(lambda r: r[second["instrument_name"]].bid is not None, "quoted")
        assert await sys.epoch() == after


async def test_bad_data_is_dropped_and_unquoted_contracts_go_stale(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed and out-of-order tickers: a log line, a count, no crash, no NaN, the
    earlier value kept. A contract without a ticker for stale_after gets `stale`."""
    caplog.set_level(logging.WARNING, "optionsfeed.sources.deribit")
    offset = [0]

    def clock() -> int:
        return wall_clock_us() + offset[0]

    async with running(redis_url, clock=clock, stale_after_us=2_000_000) as sys:
        a, b = BTC[0]["instrument_name"], BTC[1]["instrument_name"]
        ts = clock() // 1000
        await sys.venue.push_ticker(ticker(BTC[0], ts, FORWARD, best_bid_price=0.0105))
        await sys.venue.push_ticker(ticker(BTC[1], ts, FORWARD))
        await sys.wait_records(lambda r: r[a].bid is not None and r[b].bid is not None, "quoted")

        await sys.venue.push_raw('{"jsonrpc":"2.0","method":"subscription","params":')
        await sys.venue.push_ticker(ticker(BTC[0], ts, FORWARD, mark_price="high"))
        await sys.venue.push_ticker(ticker(BTC[0], ts - 5, FORWARD, best_bid_price=0.0405))
        await sys.venue.push_index("BTC", 90_020.0, ts + 1)
        await until(lambda: sys.source.decoder.dropped[n.OUT_OF_ORDER] == 1, "late ticker seen")
        assert sys.source.decoder.dropped == {n.MALFORMED: 2, n.OUT_OF_ORDER: 1}
        recs = await sys.records()
        assert recs[a].bid == 0.0105  # the late ticker did not overwrite it
        assert all(all_finite(r) for r in recs.values())
        messages = [r.getMessage() for r in caplog.records]
        assert any("(malformed)" in m for m in messages)
        assert any("(out_of_order)" in m for m in messages)

        # 3 s later (by the processing clock) only `a` is quoted again: `b` goes stale.
        offset[0] += 3_000_000
        await sys.venue.push_ticker(ticker(BTC[0], clock() // 1000, FORWARD, best_bid_price=0.011))
        recs = await sys.wait_records(lambda r: "stale" in r[b].flags, "b flagged stale")
        assert "stale" not in recs[a].flags
        assert recs[a].bid == 0.011
        assert all(all_finite(r) for r in recs.values())
