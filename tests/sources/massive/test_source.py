"""End to end: the local venue -> MassiveSource -> ProcessingService -> a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from optionsfeed.aio import cancel_and_wait
from optionsfeed.app import assess
from optionsfeed.broker.redis import RedisBroker
from optionsfeed.config import Settings
from optionsfeed.errors import SourceError
from optionsfeed.processing.service import ProcessingService
from optionsfeed.sources.health import LinkWatch
from optionsfeed.sources.massive import normalize as n
from optionsfeed.sources.massive.source import MassiveSource

from ...fakes.massive import NEW_YORK, Venue, osi


async def until(cond: Callable[[], bool], limit_s: float = 10.0, what: str = "") -> None:
    """Wait for `cond` on state another task owns, with a deadline."""
    async with asyncio.timeout(limit_s):
        # Source counters and health are plain attributes, no events: poll them.
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert cond(), what


def contract_queries(venue: Venue) -> int:
    """Queries of the venue's contracts (first pages: a query may take several)."""
    return sum(p.endswith("/contracts") and "cursor" not in q for p, q, _ in venue.rest_log)


def _no_nan(token: str) -> float:
    raise AssertionError(f"{token} on the wire")


@dataclass
class System:
    venue: Venue
    source: MassiveSource
    service: ProcessingService
    broker: RedisBroker
    task: asyncio.Task[None]

    async def records(self) -> dict[str, dict[str, Any]]:
        """The option records cached in Redis, by symbol (NaN or infinity fails the test)."""
        snap = await self.broker.snapshot("SPY")
        if snap is None:
            return {}
        return {
            k: json.loads(v, parse_constant=_no_nan)
            for k, v in snap.records.items()
            if not k.startswith("__")
        }

    async def wait_records(
        self, cond: Callable[[dict[str, dict[str, Any]]], bool], limit_s: float = 10.0
    ) -> dict[str, dict[str, Any]]:
        """Poll Redis until the records satisfy `cond`; return them."""
        async with asyncio.timeout(limit_s):
            while True:
                recs = await self.records()
                if recs and cond(recs):
                    return recs
                await asyncio.sleep(0.05)

    async def epoch(self) -> str | None:
        meta = await self.broker.meta("SPY")
        return None if meta is None else meta.epoch


@asynccontextmanager
async def system(
    redis_url: str, *, venue: Venue | None = None, stale_after_s: float = 60.0, **kw: Any
) -> AsyncIterator[System]:
    """Venue, source (short timings), processing and a Redis broker, all stopped on exit."""
    async with venue or Venue() as v:
        opts: dict[str, Any] = {
            "api_key": v.api_key, "ws_url": v.ws_url, "rest_url": v.rest_url,
            "max_contracts": 40, "snapshot_interval_s": 0.2, "backoff_min_s": 0.05,
            "backoff_max_s": 0.5, "timeout_s": 5.0, "heartbeat_s": 5.0, "log_interval_s": 0.0,
        }  # fmt: skip
        source = MassiveSource(["SPY"], **{**opts, **kw})
        async with RedisBroker(redis_url) as broker:
            svc = ProcessingService(source, broker, stale_after_us=int(stale_after_s * 1e6))
            task = asyncio.create_task(svc.run())
            try:
                await asyncio.wait_for(svc.ready.wait(), 20)
                yield System(v, source, svc, broker, task)
            finally:
                assert await cancel_and_wait(task)


async def test_quotes_and_trades_reach_redis_with_iv_and_greeks(redis_url: str) -> None:
    """Records keyed by compact OSI; bid/ask from quotes, µs ts, last/volume from trades,
    iv and greeks computed, open interest, seed quotes and volume from the snapshot."""
    async with system(redis_url) as s:
        window = s.source.windows["SPY"]
        assert window is not None
        symbols = {c.symbol for c in window.contracts}
        assert len(symbols) == 40
        await s.venue.until(lambda: len(s.venue.quote_subscriptions()) == 40)
        assert s.venue.quote_subscriptions() == {"O:" + x for x in symbols}
        recs = await s.wait_records(lambda r: len(r) == 40 and all(x["iv"] for x in r.values()
                                                                   if x["strike"] == 650.0))  # fmt: skip
        assert set(recs) == symbols
        atm = recs[next(x for x in symbols if x.endswith("C00650000"))]
        seeded = s.venue.contracts["O:" + atm["symbol"]]
        assert (atm["bid"], atm["ask"]) == (seeded.bid, seeded.ask)
        assert atm["open_interest"] == seeded.open_interest
        # Priced on the expiry's implied forward: the spot-equivalent of it, near the spot.
        assert atm["underlying_price"] == pytest.approx(650.0, rel=1e-3)
        assert atm["forward_source"] in ("implied", "carry")
        assert 0.15 < atm["iv"] < 0.25  # the venue prices at 20 %
        for greek in ("delta", "gamma", "theta", "vega", "rho"):
            assert atm[greek] is not None
        assert atm["root"] == "SPY"
        assert atm["multiplier"] == 100

        t_ms = time.time_ns() // 1_000_000
        vendor = "O:" + atm["symbol"]
        await s.venue.push([s.venue.quote(vendor, bid=12.34, ask=12.5, t_ms=t_ms)])
        await s.venue.push([s.venue.trade(vendor, price=12.4, size=3, t_ms=t_ms + 1),
                            s.venue.trade(vendor, price=12.45, size=2, t_ms=t_ms + 2)])  # fmt: skip
        # The snapshot's day volume (100 at the venue), then the trades.
        recs = await s.wait_records(lambda r: r[atm["symbol"]]["volume"] == 105)
        rec = recs[atm["symbol"]]
        assert (rec["bid"], rec["ask"], rec["mark"]) == (12.34, 12.5, 12.42)
        assert (rec["last"], rec["last_size"]) == (12.45, 2)
        assert rec["ts"] == t_ms * 1000  # the quote's ms, in µs
        assert rec["iv"] is not None
        await until(lambda: s.source.health() is None, what="every subscription acknowledged")
        # The key travelled as a header, never in a URL.
        assert s.venue.rest_log
        assert all(bearer and "apiKey" not in q for _, q, bearer in s.venue.rest_log)


async def test_never_more_than_max_contracts_on_a_chain_past_the_venue_cap(redis_url: str) -> None:
    """1,000 allowed on a 1,560-contract chain: the window stays under it, nothing refused."""
    async with system(redis_url, max_contracts=1000) as s:
        assert len(s.venue.contracts) > 1000
        window = s.source.windows["SPY"]
        assert window is not None
        assert 900 < len(window.contracts) <= 1000
        await until(lambda: s.source.health() is None, what="every subscription acknowledged")
        book = s.source.subscriptions
        assert book is not None
        assert book.refusals == 0
        assert len(s.venue.quote_subscriptions()) == len(window.contracts)
        recs = await s.wait_records(lambda r: len(r) == len(window.contracts))
        assert len(recs) <= 1000


async def test_the_window_moves_when_spot_moves_far(redis_url: str) -> None:
    """Spot 650 -> 700: a new listing (new epoch) around 700, unsubscribe before subscribe."""
    async with system(redis_url) as s:
        first = s.source.windows["SPY"]
        assert first is not None
        epoch = await s.epoch()
        await s.venue.until(lambda: len(s.venue.quote_subscriptions()) == 40)
        s.venue.set_spot("SPY", 700.0)
        await until(lambda: s.source.windows["SPY"] is not first, what="the window moved")
        moved = s.source.windows["SPY"]
        assert moved is not None
        assert moved.center == 700.0
        strikes = {c.strike for c in moved.contracts}
        assert min(strikes) <= 700.0 <= max(strikes)
        assert not strikes & {c.strike for c in first.contracts}
        want = {"O:" + c.symbol for c in moved.contracts}
        await s.venue.until(lambda: s.venue.quote_subscriptions() == want)
        recs = await s.wait_records(lambda r: set(r) == moved.symbols)
        priced = [r for r in recs.values() if r["iv"] is not None]
        assert all(r["underlying_price"] == pytest.approx(700.0, rel=1e-3) for r in priced)
        assert await s.epoch() != epoch
        actions = [m["action"] for _, m in s.venue.sent if isinstance(m, dict)]
        assert actions[:2] == ["auth", "subscribe"]
        assert actions[2:] == ["unsubscribe", "subscribe"]
        assert s.source.listings == 2


async def test_a_rejected_key_ends_the_source_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """WebSocket auth_failed and REST 401 both end batches() with SourceError; no log line,
    message or repr carries the key."""
    caplog.set_level(logging.DEBUG)
    key = "k-WRONG-5d1f8a"
    async with Venue(ws_key="the-right-key") as venue:
        for rest_key in (key, "another-wrong"):
            venue.api_key = rest_key  # first: REST accepts it, the socket does not
            source = MassiveSource(["SPY"], api_key=key, ws_url=venue.ws_url,
                                   rest_url=venue.rest_url, max_contracts=40)  # fmt: skip
            with pytest.raises(SourceError, match="OPTIONSFEED_MASSIVE_API_KEY") as info:
                async for _ in source.batches():
                    pass
            assert "rejected the API key" in str(info.value)
            for text in (str(info.value), repr(info.value), repr(source), source.health() or ""):
                assert key not in text
            assert (source.health() or "").startswith("massive: stopped:")
    assert any("rejected the API key" in r.getMessage() for r in caplog.records)
    for r in caplog.records:
        assert key not in r.getMessage()


async def test_a_dropped_connection_reconnects_resubscribes_and_starts_a_new_epoch(
    redis_url: str,
) -> None:
    """The venue cuts the socket: auth and subscribe again, fresh listing, quotes flow again."""
    async with system(redis_url) as s:
        window = s.source.windows["SPY"]
        assert window is not None
        want = {"O:" + c.symbol for c in window.contracts}
        await s.venue.until(lambda: s.venue.quote_subscriptions() == want)
        epoch = await s.epoch()
        assert s.source.connects == 1
        assert contract_queries(s.venue) == 1
        await s.venue.drop()
        await s.venue.until(lambda: s.venue.connections == 2)
        # The contracts are listed again (docs/sources.md), not taken from before.
        assert contract_queries(s.venue) == 2
        await s.venue.until(lambda: s.venue.quote_subscriptions() == want)
        await until(lambda: s.source.connects == 2 and s.source.health() is None)
        await until(lambda: s.source.listings == 2)
        async with asyncio.timeout(10):
            while await s.epoch() == epoch:  # noqa: ASYNC110 - Redis state, no event
                await asyncio.sleep(0.05)
        by_client: dict[int, list[str]] = {}
        for cid, m in s.venue.sent:
            by_client.setdefault(cid, []).append(m["action"])
        assert by_client[1][:2] == by_client[2][:2] == ["auth", "subscribe"]
        sym = sorted(window.symbols)[0]
        await s.venue.push([s.venue.quote("O:" + sym, bid=1.11, ask=1.22)])
        recs = await s.wait_records(lambda r: r[sym]["bid"] == 1.11)
        assert recs[sym]["ask"] == 1.22


async def test_bad_provider_data_is_counted_and_logged_never_fatal(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage, bad fields, fractional sizes, unknown symbols, old timestamps: dropped,
    counted, logged; no NaN."""
    caplog.set_level(logging.WARNING, logger="optionsfeed.sources.massive")
    async with system(redis_url) as s:
        window = s.source.windows["SPY"]
        assert window is not None
        await s.venue.until(lambda: len(s.venue.quote_subscriptions()) == 40)
        sym = sorted(window.symbols)[0]
        vendor = "O:" + sym
        t = time.time_ns() // 1_000_000
        good = s.venue.quote(vendor, bid=2.0, ask=2.2, t_ms=t)
        await s.venue.push_raw("this is not JSON")
        await s.venue.push_raw('{"ev":"Q"}')
        await s.venue.push_raw(json.dumps([
            {**good, "bp": -1.0},
            {**good, "ap": "2.2"},
            {**good, "t": t * 1000},
            {k: v for k, v in good.items() if k != "as"},
            {**good, "sym": "O:SPY991231C00001000"},
            {**good, "bp": 9.9, "bs": 10.5},
            {"ev": "XQ", "pair": "BTC-USD"},
            good,
            {**good, "bp": 2.1, "t": t - 60_000},
        ]))  # fmt: skip
        await s.venue.push_raw('[{"ev":"Q","sym":"O:SPY251219C00650000","bp":1e999}]')
        recs = await s.wait_records(lambda r: r[sym]["bid"] == 2.0)
        assert recs[sym]["ask"] == 2.2
        dropped = s.source.dropped
        assert dropped[n.R_NOT_JSON] == 1
        assert dropped[n.R_NOT_ARRAY] == 1
        assert dropped[n.R_BAD_PRICE] == 1
        assert dropped[n.R_MALFORMED] == 3
        assert dropped[n.R_BAD_TIME] == 1
        assert dropped[n.R_UNKNOWN_SYMBOL] == 1
        assert dropped[n.R_UNKNOWN_EVENT] == 1
        assert dropped[n.R_OUT_OF_ORDER] == 1
        assert dropped[n.R_FRACTIONAL_SIZE] == 1
        assert not s.task.done()
        logged = "\n".join(r.getMessage() for r in caplog.records)
        for reason in (n.R_NOT_JSON, n.R_BAD_PRICE, n.R_UNKNOWN_SYMBOL, n.R_OUT_OF_ORDER,
                       n.R_FRACTIONAL_SIZE):  # fmt: skip
            assert f"dropped 1 event(s): {reason}" in logged
        await s.wait_records(lambda r: len(r) == 40)  # parse_constant: no NaN anywhere


async def test_a_silent_feed_gets_the_stale_flag(redis_url: str) -> None:
    """No quotes for longer than stale_after: every record is flagged stale; a quote clears it."""
    async with system(redis_url, stale_after_s=0.5) as s:
        s.venue.silent = True
        await s.wait_records(
            lambda r: len(r) == 40 and all("stale" in x["flags"] for x in r.values())
        )
        assert s.source.health() is None  # connected: silence is the market's, not the link's
        s.venue.silent = False
        window = s.source.windows["SPY"]
        assert window is not None
        sym = sorted(window.symbols)[0]
        await s.venue.push([s.venue.quote("O:" + sym, bid=3.0, ask=3.3)])
        await s.wait_records(lambda r: "stale" not in r[sym]["flags"])


async def test_health_says_disconnected_while_the_venue_is_down(redis_url: str) -> None:
    """Down: health names the disconnect and the retry; up again: healthy after resubscribing."""
    async with system(redis_url) as s:
        await until(lambda: s.source.health() is None, what="healthy")
        await s.venue.down()
        await until(lambda: (s.source.health() or "").startswith("massive: disconnected"))
        health = s.source.health()
        assert health is not None
        assert "\n" not in health
        s.venue.up()
        await until(lambda: s.source.health() is None and s.source.connects >= 2, what="back")


async def test_rest_failures_while_streaming_and_at_start_are_retried(redis_url: str) -> None:
    """A failing snapshot poll is logged and skipped (the stream stays up); failures before
    the stream starts are retried with backoff."""
    venue = Venue()
    venue.fail_next(500, times=3)  # the contracts query of the first attempts
    async with system(redis_url, venue=venue) as s:
        assert s.source.connects == 1
        venue.fail_next(503, times=2)
        await until(lambda: not venue.failing, what="the polls met the failures")
        s.venue.set_spot("SPY", 700.0)
        await until(lambda: (w := s.source.windows["SPY"]) is not None and w.center == 700.0)
        assert s.source.connects == 1
        assert s.venue.connections == 1


async def test_two_underlyings_share_the_contract_budget(redis_url: str) -> None:
    """max_contracts is split evenly; both chains stream on one connection."""
    async with Venue(spots={"SPY": 650.0, "QQQ": 500.0}) as venue:
        source = MassiveSource(
            ["SPY", "QQQ"], api_key=venue.api_key, ws_url=venue.ws_url, rest_url=venue.rest_url,
            max_contracts=40, snapshot_interval_s=0.2,
        )  # fmt: skip
        async with RedisBroker(redis_url) as broker:
            svc = ProcessingService(source, broker)
            task = asyncio.create_task(svc.run())
            try:
                await venue.until(lambda: len(venue.quote_subscriptions()) == 40)
                for u in ("SPY", "QQQ"):
                    w = source.windows[u]
                    assert w is not None
                    assert len(w.contracts) == 20
                    assert {c.underlying for c in w.contracts} == {u}
                async with asyncio.timeout(10):
                    while True:
                        snaps = [await broker.snapshot(u) for u in ("SPY", "QQQ")]
                        if all(x is not None and len(x.option_records()) == 20 for x in snaps):
                            break
                        await asyncio.sleep(0.05)
                assert venue.connections == 1
            finally:
                assert await cancel_and_wait(task)


async def test_an_expiry_that_passes_leaves_the_window(redis_url: str) -> None:
    """After the nearest expiry's 16:00, its contracts are unlisted and unsubscribed."""
    offset = [0]

    def clock() -> int:
        return time.time_ns() // 1000 + offset[0]

    async with system(redis_url, clock=clock) as s:
        first = s.source.windows["SPY"]
        assert first is not None
        nearest = first.contracts[0].expiry
        await s.venue.until(lambda: len(s.venue.quote_subscriptions()) == 40)
        offset[0] = first.until_us - time.time_ns() // 1000 + 1_000_000
        await until(lambda: s.source.windows["SPY"] is not first, what="the window changed")
        now = s.source.windows["SPY"]
        assert now is not None
        assert nearest not in {c.expiry for c in now.contracts}
        want = {"O:" + c.symbol for c in now.contracts}
        await s.venue.until(lambda: s.venue.quote_subscriptions() == want)
        assert not any(t[2:].startswith(f"SPY{nearest:%y%m%d}") for t in want)


async def test_a_rate_limited_start_waits_as_long_as_the_venue_asks(redis_url: str) -> None:
    """A 429 with Retry-After: 1 on the first request: the next one comes a second later,
    not after the 50 ms backoff."""
    venue = Venue()
    venue.fail_next(429, retry_after="1")
    async with system(redis_url, venue=venue) as s:
        first, second = s.venue.rest_times[:2]
        assert second - first >= 1.0
        assert s.source.connects == 1


async def test_the_snapshot_seeds_volume_last_trade_and_its_own_times(redis_url: str) -> None:
    """A record starts from the snapshot: the day's volume, the last trade, and the
    snapshot's own time as ts (not the listing's); streamed trades add to that volume
    and a trade of the next New York date starts it again."""
    venue = Venue()
    now_ns = time.time_ns()
    midnight = datetime.now(NEW_YORK).replace(hour=0, minute=0, second=0, microsecond=0)
    # An hour ago, but on today's New York date (the volume is of that date).
    old_ns = max(now_ns - 3600 * 10**9, int(midnight.timestamp()) * 10**9 + 10**6)
    nearest = min(c.expiry for c in venue.contracts.values())
    c = venue.contracts[osi("SPY", nearest, "C", 650.0)]
    c.quote_ns = old_ns
    c.day_volume, c.day_ns = 1834, old_ns
    c.last_price, c.last_size, c.last_ns = 1.25, 3, old_ns - 10**6
    venue.spot_ns["SPY"] = old_ns - 2 * 10**6
    sym = c.ticker[2:]
    async with system(redis_url, venue=venue) as s:
        recs = await s.wait_records(lambda r: sym in r and r[sym]["volume"] == 1834)
        assert (recs[sym]["last"], recs[sym]["last_size"]) == (1.25, 3)
        assert recs[sym]["ts"] == old_ns // 1000
        t_ms = now_ns // 1_000_000
        await s.venue.push([s.venue.trade(c.ticker, price=1.3, size=2, t_ms=t_ms)])
        recs = await s.wait_records(lambda r: r[sym]["volume"] == 1836)
        assert (recs[sym]["last"], recs[sym]["last_size"]) == (1.3, 2)
        next_day = t_ms + 86_400_000
        await s.venue.push([s.venue.trade(c.ticker, price=1.4, size=4, t_ms=next_day)])
        recs = await s.wait_records(lambda r: r[sym]["volume"] == 4)
        assert recs[sym]["last"] == 1.4


async def test_a_venue_down_for_half_a_second_does_not_fail_readiness(redis_url: str) -> None:
    """The venue refuses everything for 0.5 s and the adapter reconnects: every /readyz
    verdict meanwhile is ready (the data is fresh), the disconnect only noted."""
    settings = Settings.load({}, {})
    async with system(redis_url) as s:
        await until(lambda: s.source.health() is None, what="healthy")
        watch = LinkWatch(s.source.health)
        verdicts = [await assess(s.broker, settings, status=s.service.status, link=watch)]
        await s.venue.down()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.5:
            verdicts.append(await assess(s.broker, settings, status=s.service.status, link=watch))
            await asyncio.sleep(0.05)
        s.venue.up()
        await until(lambda: s.source.health() is None and s.source.connects == 2, what="back")
        verdicts.append(await assess(s.broker, settings, status=s.service.status, link=watch))
        assert all(v.ready for v in verdicts), verdicts
        assert any((v.reason or "").startswith("massive: disconnected") for v in verdicts)
        assert verdicts[-1].reason is None
