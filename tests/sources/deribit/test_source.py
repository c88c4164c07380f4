"""DeribitSource against the local venue: the session, heartbeats, reconnects, refreshes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta

import msgspec
import pytest

from optionsfeed.sources.deribit import normalize as n
from optionsfeed.sources.deribit.symbols import index_channel, ticker_channel, trades_channel

from ...fakes.deribit import DeribitVenue
from .fixtures import (
    Feed,
    chain,
    fast_source,
    instrument,
    notification,
    now_ms,
    ticker,
    until,
    unusable,
)

TODAY = date.today()
BTC = chain("BTC", TODAY, 90_000)
ETH = chain("ETH", TODAY, 3_000)


def channels_of(client: int, venue: DeribitVenue) -> set[str]:
    """Every channel a client asked to subscribe (minus what it unsubscribed)."""
    out: set[str] = set()
    for m in venue.sent("public/subscribe", client):
        out.update(m["params"]["channels"])
    for m in venue.sent("public/unsubscribe", client):
        out.difference_update(m["params"]["channels"])
    return out


def expected_channels(*chains: list[dict[str, object]]) -> set[str]:
    out = set()
    for c in chains:
        out.add(index_channel(str(c[0]["base_currency"])))
        out.add(trades_channel(str(c[0]["base_currency"])))
        out.update(ticker_channel(str(i["instrument_name"])) for i in c)
    return out


async def test_lists_subscribes_in_chunks_and_streams(caplog: pytest.LogCaptureFixture) -> None:
    """A listing per currency (unusable instruments skipped, logged once), every option's
    ticker and the index subscribed in requests of at most 5 channels, then quotes and ticks."""
    caplog.set_level(logging.INFO, "optionsfeed.sources.deribit")
    async with DeribitVenue(BTC + ETH + unusable("BTC", TODAY), min_heartbeat_s=0.1) as venue:
        source = fast_source(["BTC", "ETH"], venue.url, channels_per_request=5)
        assert source.health() is not None
        async with Feed(source) as feed:
            await feed.wait_for(lambda: len(feed.listings()) == 2)
            btc, eth = feed.listings("BTC")[0], feed.listings("ETH")[0]
            keys = [(c.expiry_us, c.strike, c.right) for c in btc.contracts]
            assert keys == sorted(keys)
            assert {c.symbol for c in btc.contracts} == {i["instrument_name"] for i in BTC}
            assert btc.inverse
            assert len(eth.contracts) == len(ETH)
            await until(lambda: source.health() is None, "subscribed")
            subscribes = venue.sent("public/subscribe")
            assert all(len(m["params"]["channels"]) <= 5 for m in subscribes)
            assert channels_of(1, venue) == expected_channels(BTC, ETH)
            assert source.subscribed == expected_channels(BTC, ETH)
            gets = venue.sent("public/get_instruments")
            assert [m["params"] for m in gets] == [
                {"currency": "BTC", "kind": "option", "expired": False},
                {"currency": "ETH", "kind": "option", "expired": False},
            ]

            ts = now_ms()
            assert await venue.push_index("BTC", 90_010.5, ts) == 1
            assert await venue.push_ticker(ticker(BTC[0], ts, 90_100.0)) == 1
            await feed.wait_for(lambda: len(feed.quoted()) == 1)
            assert feed.quoted() == [
                (BTC[0]["instrument_name"], ticker(BTC[0], ts, 90_100.0)["best_bid_price"],
                 90_100.0, ts * 1000),
            ]  # fmt: skip
            await feed.wait_for(lambda: any(b.ticks for b in feed.batches))
            (tick,) = [t for b in feed.batches for t in b.ticks]
            assert (tick.underlying, tick.price, tick.ts) == ("BTC", 90_010.5, ts * 1000)
    skips = [r.getMessage() for r in caplog.records if "skipped instruments" in r.getMessage()]
    assert len(skips) == 1
    assert "1 not inverse (coin-quoted)" in skips[0]
    assert "1 name does not parse" in skips[0]
    assert "1 name disagrees" in skips[0]


async def test_heartbeats_are_answered() -> None:
    """set_heartbeat is sent; every test_request gets public/test, so the venue (which
    cuts a client that does not answer, see test_venue) keeps the one connection."""
    async with DeribitVenue(BTC, min_heartbeat_s=0.1) as venue:
        source = fast_source(["BTC"], venue.url)
        async with Feed(source):
            await venue.wait_for(lambda: len(venue.sent("public/test")) >= 4)
            assert [m["params"] for m in venue.sent("public/set_heartbeat")] == [{"interval": 0.2}]
            assert venue.connections == 1
            assert venue.heartbeat_closes == 0
            assert source.connections == 1


async def test_a_silent_connection_is_replaced(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing received for two heartbeat intervals: reconnect, relist, resubscribe."""
    async with DeribitVenue(BTC, min_heartbeat_s=0.1) as venue:
        source = fast_source(["BTC"], venue.url)
        async with Feed(source) as feed:
            await feed.wait_for(lambda: len(feed.listings()) == 1)
            await until(lambda: source.health() is None, "subscribed")
            venue.silence()
            await feed.wait_for(lambda: len(feed.listings()) == 2)
            await until(lambda: source.health() is None, "subscribed again")
            assert venue.connections == 2
            assert channels_of(2, venue) == expected_channels(BTC)
            ts = now_ms()
            assert await venue.push_ticker(ticker(BTC[1], ts, 90_000.0)) == 1
            await feed.wait_for(lambda: len(feed.quoted()) == 1)
    assert any("nothing received for 0.4 s" in r.getMessage() for r in caplog.records)


async def test_a_dropped_connection_reconnects_with_a_fresh_listing() -> None:
    """While the venue is down health() says so; after, a new Listing and the same channels."""
    async with DeribitVenue(BTC, min_heartbeat_s=0.1) as venue:
        source = fast_source(["BTC"], venue.url)
        async with Feed(source) as feed:
            await feed.wait_for(lambda: len(feed.listings()) == 1)
            await until(lambda: source.health() is None, "subscribed")
            venue.refuse()
            await venue.drop_all()
            await until(lambda: "disconnected" in (source.health() or ""), "reported down")
            health = source.health()
            assert health is not None
            assert health.startswith("deribit: disconnected (")
            assert "retrying in" in health
            # Attempts while down are refused (HTTP 503) and back off.
            await until(lambda: "503" in (source.health() or ""), "a refused attempt")
            venue.refuse(False)
            await feed.wait_for(lambda: len(feed.listings()) == 2)
            await until(lambda: source.health() is None, "subscribed again")
            assert feed.listings()[1].contracts == feed.listings()[0].contracts
            assert channels_of(venue.connections, venue) == expected_channels(BTC)
            assert await venue.push_ticker(ticker(BTC[2], now_ms(), 90_000.0)) == 1
            await feed.wait_for(lambda: len(feed.quoted()) == 1)


async def test_bad_messages_are_dropped_counted_and_logged_sparingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage, wrong types, bad values, unknown instruments and late tickers never reach
    the buffer; each reason is counted, and logged once however often it happens."""
    async with DeribitVenue(BTC, min_heartbeat_s=0.1) as venue:
        source = fast_source(["BTC"], venue.url)
        async with Feed(source) as feed:
            await until(lambda: source.health() is None, "subscribed")
            ts = now_ms()
            first, second = BTC[0], BTC[1]
            for _ in range(3):
                await venue.push_raw("this is not JSON")
            await venue.push_raw(b"\x00\xff".decode("latin-1"))
            await venue.push_ticker(ticker(first, ts, 90_000.0, best_bid_price="0.01"))
            await venue.push_ticker(ticker(first, ts, 90_000.0, best_ask_price=-0.01))
            await venue.push_ticker(ticker(first, ts, 90_000.0, underlying_price=0))
            stranger = instrument("BTC", TODAY + timedelta(days=400), 5_000, "call")
            name = stranger["instrument_name"]
            data = {"instrument_name": name, "timestamp": ts, "state": "open",
                    "mark_price": 0.1, "underlying_price": 90_000}  # fmt: skip
            await venue.push_raw(json.dumps(notification(ticker_channel(name), data)))
            await venue.push_ticker(ticker(first, ts, 90_000.0, best_bid_price=0.0105))
            await venue.push_ticker(ticker(first, ts - 1, 90_000.0, best_bid_price=0.0205))
            await venue.push_ticker(ticker(second, ts + 1, 90_000.0, best_bid_price=0.0305))
            await feed.wait_for(
                lambda: any(s == second["instrument_name"] for s, *_ in feed.quoted())
            )
            bids = {s: b for s, b, _, _ in feed.quoted()}
            assert bids == {first["instrument_name"]: 0.0105, second["instrument_name"]: 0.0305}
            assert source.decoder.dropped == {
                n.MALFORMED: 5,
                n.BAD_VALUE: 2,
                n.UNKNOWN_INSTRUMENT: 1,
                n.OUT_OF_ORDER: 1,
            }
            assert venue.connections == 1  # no reconnect for bad data
    dropped = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert len(dropped) == 4, dropped  # one per reason, not one per message
    assert any("(out_of_order)" in m and str(ts - 1) in m for m in dropped)


async def test_instruments_are_refreshed_as_expiries_roll() -> None:
    """Past the first expiry's 08:00 UTC (by the source's clock) and with a strike added
    on the venue, a refresh relists BTC and (un)subscribes the difference."""
    first_expiry = min(i["expiration_timestamp"] for i in BTC)
    clock = [now_ms() * 1000]
    async with DeribitVenue(BTC, min_heartbeat_s=0.1) as venue:
        source = fast_source(["BTC"], venue.url, refresh_s=0.05, clock=lambda: clock[0])
        async with Feed(source) as feed:
            await feed.wait_for(lambda: len(feed.listings()) == 1)
            await until(lambda: source.health() is None, "subscribed")
            later = max(i["expiration_timestamp"] for i in BTC)
            added = instrument(
                "BTC", datetime.fromtimestamp(later / 1000, UTC).date(), 200_000, "call"
            )
            venue.instruments.append(added)
            clock[0] = first_expiry * 1000  # the first expiry's options have expired
            await feed.wait_for(lambda: len(feed.listings()) == 2)
            names = {c.symbol for c in feed.listings()[1].contracts}
            kept = {i["instrument_name"] for i in BTC if i["expiration_timestamp"] > first_expiry}
            assert names == kept | {added["instrument_name"]}
            gone = {ticker_channel(i["instrument_name"]) for i in BTC} - {
                ticker_channel(s) for s in kept
            }
            await venue.wait_for(
                lambda: ticker_channel(added["instrument_name"]) in channels_of(1, venue)
            )
            assert channels_of(1, venue) == {index_channel("BTC"), trades_channel("BTC")} | {
                ticker_channel(s) for s in names
            }
            unsubscribed = {
                c for m in venue.sent("public/unsubscribe") for c in m["params"]["channels"]
            }
            assert unsubscribed == gone
            assert venue.connections == 1
            # Nothing changes after that: no further listings.
            n_gets = len(venue.sent("public/get_instruments"))
            await venue.wait_for(lambda: len(venue.sent("public/get_instruments")) >= n_gets + 3)
            assert len(feed.listings()) == 2


async def test_venue_errors_and_refusals_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A JSON-RPC error is logged with code and message; a currency without options and
    a channel the venue leaves out of its subscribe result are reported, not fatal."""
    async with DeribitVenue(BTC) as venue:  # Deribit's minimum heartbeat interval: 10 s
        source = fast_source(["BTC", "SOL"], venue.url, heartbeat_s=2.0)
        async with Feed(source) as feed:
            await feed.wait_for(lambda: len(feed.listings()) == 1)
            await until(lambda: source.health() is None, "subscribed")
            assert source.rejected_channels == 2  # SOL: its index and its trades
            assert index_channel("SOL") not in source.subscribed
            assert await venue.push_ticker(ticker(BTC[0], now_ms(), 90_000.0)) == 1
            await feed.wait_for(lambda: len(feed.quoted()) == 1)
    messages = [r.getMessage() for r in caplog.records]
    assert any("public/set_heartbeat: error -32602 Invalid params" in m for m in messages)
    assert any("SOL: no inverse options listed" in m for m in messages)
    assert any("did not subscribe 2 of" in m and "sol_usd" in m for m in messages)


def test_the_next_relisting_comes_just_after_the_nearest_expiry() -> None:
    """Every refresh_s, or 30 s after the nearest expiry instant when that is sooner."""
    first = min(i["expiration_timestamp"] for i in BTC) * 1000  # µs
    clock = [first - 5_000_000]
    source = fast_source(["BTC"], "ws://127.0.0.1:9/", refresh_s=600.0, clock=lambda: clock[0])
    assert source._until_refresh() == 600.0  # nothing listed yet
    raw = [msgspec.Raw(json.dumps(i).encode()) for i in BTC]
    source.listings["BTC"] = n.build_listing("BTC", raw, now_us=clock[0])
    assert source._until_refresh() == pytest.approx(35.0)
    clock[0] = first - 3_600_000_000  # an hour before: the regular refresh comes first
    assert source._until_refresh() == 600.0
