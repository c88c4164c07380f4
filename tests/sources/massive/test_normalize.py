"""normalize.py: Massive's frames and pages into checked values; bad data into reasons."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

import pytest

from optionsfeed.model.calendar import NEW_YORK, expiry_instant_us
from optionsfeed.model.contract import Contract
from optionsfeed.sources.massive import normalize as n

T = 1_764_513_000_000  # a plausible Unix ms (2025-11-30)
SYM = "O:SPY251219C00650000"


def q(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"ev": "Q", "sym": SYM, "bx": 302, "ax": 302, "bp": 9.71,
                            "ap": 9.81, "bs": 17, "as": 24, "t": T, "q": 844090872}  # fmt: skip
    return {**base, **kw}


def tr(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"ev": "T", "sym": SYM, "x": 65, "p": 1.5, "s": 3, "c": [227],
                            "t": T, "q": 1}  # fmt: skip
    return {**base, **kw}


def frame(*events: Any) -> str:
    return json.dumps(list(events))


def test_the_documented_messages_decode() -> None:
    """Quotes, trades and statuses of one frame, unknown fields ignored."""
    f = n.decode_frame(frame(
        {"ev": "status", "status": "auth_success", "message": "authenticated"},
        q(extra={"new": "field"}), tr(),
    ))  # fmt: skip
    assert f.rejects == []
    assert [s.status for s in f.statuses] == ["auth_success"]
    (quote,) = f.quotes
    assert (quote.sym, quote.bp, quote.ap, quote.bs, quote.as_, quote.t) == (
        SYM,
        9.71,
        9.81,
        17,
        24,
        T,
    )
    (trade,) = f.trades
    assert (trade.p, trade.s, trade.t) == (1.5, 3, T)
    assert n.decode_frame(b"[]").rejects == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("not json{", n.R_NOT_JSON),
        ('{"ev":"Q"}', n.R_NOT_ARRAY),
        ("[1e999]", n.R_MALFORMED),
        (frame({"ev": "AM", "sym": "O:X"}), n.R_UNKNOWN_EVENT),
        (frame({"sym": SYM}), n.R_MALFORMED),
        (frame(42), n.R_MALFORMED),
        (frame({k: v for k, v in q().items() if k != "bp"}), n.R_MALFORMED),
        (frame(q(bp="9.71")), n.R_MALFORMED),
        (frame({k: v for k, v in tr().items() if k != "t"}), n.R_MALFORMED),
        (frame(q(bs=True)), n.R_MALFORMED),
        (frame(q(t=1.5e12)), n.R_MALFORMED),
        (frame(q(bp=-0.01)), n.R_BAD_PRICE),
        (
            '[{"ev":"Q","sym":"O:X","bp":1e999,"ap":1,"bs":1,"as":1,"t":1764513000000}]',
            n.R_MALFORMED,
        ),
        (frame(q(**{"as": -1})), n.R_BAD_SIZE),
        (frame(q(t=T // 1000)), n.R_BAD_TIME),
        (frame(q(t=T * 1000)), n.R_BAD_TIME),
        (frame(tr(p=0)), n.R_BAD_PRICE),
        (frame(tr(s=0)), n.R_BAD_SIZE),
        (frame(q(bs=10.5)), n.R_FRACTIONAL_SIZE),
        (frame(q(**{"as": 0.5})), n.R_FRACTIONAL_SIZE),
        (frame(tr(s=10.5)), n.R_FRACTIONAL_SIZE),
        (frame(tr(t=0)), n.R_BAD_TIME),
    ],
)
def test_bad_events_are_dropped_with_a_reason(data: str, reason: str) -> None:
    """Each kind of bad input gives its reason and nothing else."""
    f = n.decode_frame(data)
    assert f.rejects == [reason]
    assert f.quotes == []
    assert f.trades == []
    assert f.statuses == []


def test_one_bad_event_does_not_spoil_its_frame() -> None:
    """The good events of a frame stay when one is bad."""
    f = n.decode_frame(frame(q(), q(ap=-1), tr()))
    assert len(f.quotes) == 1
    assert len(f.trades) == 1
    assert f.rejects == [n.R_BAD_PRICE]


def contract(sym: str = "SPY251219C00650000") -> Contract:
    e = date(2025, 12, 19)
    return Contract(sym, "SPY", "SPY", e, expiry_instant_us(e), 650.0, "C")


def test_the_filter_keeps_listed_symbols_in_time_order() -> None:
    """Unknown symbols and older events of a contract are dropped; equal times are kept."""
    flt = n.EventFilter()
    flt.relist("SPY", [contract()])
    decode = n.decode_frame
    assert flt.quote(decode(frame(q())).quotes[0]) == ("SPY", "SPY251219C00650000")
    assert flt.quote(decode(frame(q())).quotes[0]) == ("SPY", "SPY251219C00650000")
    assert flt.quote(decode(frame(q(t=T - 1))).quotes[0]) == n.R_OUT_OF_ORDER
    assert flt.quote(decode(frame(q(sym="O:SPY251219P00650000"))).quotes[0]) == n.R_UNKNOWN_SYMBOL
    # Trades keep their own order: an older trade than the newest quote is fine.
    assert flt.trade(decode(frame(tr(t=T - 5))).trades[0]) == ("SPY", "SPY251219C00650000")
    # A snapshot seed counts only when newer than the stream, and then orders it.
    assert not flt.seed("SPY251219C00650000", T * 1000)
    assert flt.seed("SPY251219C00650000", (T + 10) * 1000)
    assert flt.quote(decode(frame(q(t=T + 5))).quotes[0]) == n.R_OUT_OF_ORDER
    # Relisting without it forgets it and its times.
    flt.relist("SPY", [])
    assert flt.quote(decode(frame(q())).quotes[0]) == n.R_UNKNOWN_SYMBOL
    assert flt.listed == {}


def test_vendor_symbols() -> None:
    """The O: form becomes compact OSI; anything else is not an option ticker."""
    assert n.vendor_to_osi("O:SPY251219C00650000") == "SPY251219C00650000"
    assert n.vendor_to_osi("O:SPY1251219C00650000") == "SPY1251219C00650000"
    assert n.vendor_to_osi("SPY251219C00650000") is None
    assert n.vendor_to_osi("O:SPY251319C00650000") is None
    assert n.vendor_to_osi("X:BTCUSD") is None


def rest_contract(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"cfi": "OCASPS", "contract_type": "call", "exercise_style": "american",
                            "expiration_date": "2025-12-19", "primary_exchange": "BATO",
                            "shares_per_contract": 100, "strike_price": 650,
                            "ticker": SYM, "underlying_ticker": "SPY"}  # fmt: skip
    return {**base, **kw}


def test_contracts_pages_become_contracts() -> None:
    """A documented row becomes our Contract; next_url is passed on."""
    body = json.dumps({"results": [rest_contract(), rest_contract(
        ticker="O:SPY1251219P00650500", contract_type="put", strike_price=650.5,
        shares_per_contract=150, underlying_ticker="SPY")],
        "status": "OK", "next_url": "https://api.massive.com/v3/x?cursor=abc"}).encode()  # fmt: skip
    page = n.parse_contracts_page(body, "SPY")
    assert page.rejects == []
    assert page.next_url == "https://api.massive.com/v3/x?cursor=abc"
    c, adj = page.contracts
    assert c == Contract(
        "SPY251219C00650000", "SPY", "SPY", date(2025, 12, 19),
        expiry_instant_us(date(2025, 12, 19)), 650.0, "C", 100, None, "american",
    )  # fmt: skip
    assert (adj.root, adj.right, adj.strike, adj.multiplier) == ("SPY1", "P", 650.5, 150)
    assert n.parse_contracts_page(b'{"status":"OK"}', "SPY").contracts == []


@pytest.mark.parametrize(
    ("ticker", "style", "exercise"),
    [
        ("O:SPX251219C06500000", "european", "european"),
        ("O:SPXW251219C06500000", None, "european"),  # an index root without the field
        ("O:SPY251219C00650000", None, "american"),
        ("O:SPY251219C00650000", "american", "american"),
    ],
)
def test_exercise_is_the_venues_or_the_roots(ticker: str, style: str | None, exercise: str) -> None:
    """Index options (cash-settled) are European; the venue's `exercise_style` decides
    when it is given."""
    u = "SPX" if "SPX" in ticker else "SPY"
    row = rest_contract(ticker=ticker, exercise_style=style, underlying_ticker=u,
                        strike_price=6500 if u == "SPX" else 650)  # fmt: skip
    (c,) = n.parse_contracts_page(json.dumps({"results": [row]}).encode(), u).contracts
    assert c.exercise == exercise


def test_a_contract_expiring_on_an_early_close_expires_at_13_00() -> None:
    """Massive's contracts take their expiry instant from the exchange's close."""
    row = rest_contract(ticker="O:SPY261127C00650000", expiration_date="2026-11-27")
    (c,) = n.parse_contracts_page(json.dumps({"results": [row]}).encode(), "SPY").contracts
    at = datetime.fromtimestamp(c.expiry_us / 1e6, NEW_YORK)
    assert (at.date(), at.hour, at.minute) == (date(2026, 11, 27), 13, 0)


@pytest.mark.parametrize(
    "row",
    [
        rest_contract(ticker="SPY251219C00650000"),
        rest_contract(ticker="O:garbage"),
        rest_contract(expiration_date="2025-12-20"),
        rest_contract(contract_type="put"),
        rest_contract(strike_price=655),
        rest_contract(underlying_ticker="QQQ"),
        rest_contract(shares_per_contract=0),
        rest_contract(shares_per_contract=10.5),
        {"ticker": SYM},
    ],
)
def test_inconsistent_contract_rows_are_rejected(row: dict[str, Any]) -> None:
    """A row whose fields disagree with its ticker (or are missing) is dropped."""
    page = n.parse_contracts_page(json.dumps({"results": [row]}).encode(), "SPY")
    assert page.contracts == []
    assert page.rejects == [n.R_BAD_CONTRACT]


def test_pages_that_are_not_pages_raise() -> None:
    """Not JSON, or not an object with results: BadPage."""
    for body in (b"<html>", b"[]", b'{"results": 3}'):
        with pytest.raises(n.BadPage):
            n.parse_contracts_page(body, "SPY")
        with pytest.raises(n.BadPage):
            n.parse_snapshot_page(body)


def snap_row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "break_even_price": 151.2,
        "details": {"contract_type": "call", "expiration_date": "2025-12-19",
                    "shares_per_contract": 100, "strike_price": 650, "ticker": SYM},
        "greeks": {"delta": 0.5}, "implied_volatility": 0.2,
        "last_quote": {"ask": 120.3, "ask_size": 4, "bid": 120.28, "bid_size": 8,
                       "last_updated": T * 1_000_000 + 123_456, "midpoint": 120.29,
                       "timeframe": "REAL-TIME"},
        "open_interest": 1543,
        "underlying_asset": {"change_to_break_even": 4.2, "last_updated": T * 1_000_000,
                             "price": 647.5, "ticker": "SPY", "timeframe": "DELAYED"},
    }  # fmt: skip
    return {**base, **kw}


def test_snapshot_pages_give_open_interest_quotes_and_the_underlying_price() -> None:
    """Nanosecond times become microseconds; a row's bad parts are dropped, not the row."""
    rows = [
        snap_row(),
        snap_row(details={"ticker": "O:SPY251219P00650000"}, open_interest=-3, last_quote=None,
                 underlying_asset={"price": 648.0, "last_updated": T * 1_000_000 + 5000}),
        snap_row(details={"ticker": "O:SPY251219C00655000"}, open_interest=None,
                 last_quote={"bid": 1.0, "ask": 1.1}),
        snap_row(details={"ticker": "bad"}),
        {"no": "details"},
    ]  # fmt: skip
    page = n.parse_snapshot_page(json.dumps({"results": rows}).encode())
    a, b, c = page.rows
    assert a == n.SnapshotRow(
        "SPY251219C00650000", 1543.0, n.SeedQuote(120.28, 120.3, 8.0, 4.0, T * 1000 + 123)
    )
    assert b.symbol == "SPY251219P00650000"
    assert math.isnan(b.open_interest)
    assert b.quote is None
    assert math.isnan(c.open_interest)
    assert c.quote is None
    assert (page.spot, page.spot_us) == (648.0, T * 1000 + 5)  # the newest
    assert sorted(page.rejects) == sorted(
        [n.R_BAD_SIZE, n.R_MALFORMED, n.R_BAD_CONTRACT, n.R_MALFORMED]
    )
    no_price = n.parse_snapshot_page(json.dumps({"results": [snap_row(
        underlying_asset={"ticker": "SPY"})]}).encode())  # fmt: skip
    assert no_price.spot is None
    bad_price = n.parse_snapshot_page(json.dumps({"results": [snap_row(
        underlying_asset={"price": -1})]}).encode())  # fmt: skip
    assert bad_price.spot is None
    assert bad_price.rejects == [n.R_BAD_PRICE]


def test_snapshot_rows_give_the_days_volume_and_the_last_trade() -> None:
    """`day.volume` as of `day.last_updated`, `last_trade` with its SIP time (ns -> µs);
    fractional sizes and volumes are bad data, left out and counted."""
    day = {"close": 1.2, "volume": 1834, "last_updated": T * 1_000_000 + 7_000}
    last = {"conditions": [209], "exchange": 316, "price": 1.25, "size": 3,
            "sip_timestamp": T * 1_000_000 + 9_000, "timeframe": "REAL-TIME"}  # fmt: skip
    rows = [
        snap_row(day=day, last_trade=last),
        snap_row(day={}, last_trade=None),
        snap_row(day={**day, "volume": 10.5}, last_trade={**last, "size": 10.5}),
        snap_row(day={"volume": 7}, last_trade={**last, "price": -1}),
    ]
    page = n.parse_snapshot_page(json.dumps({"results": rows}).encode())
    a, b, c, d = page.rows
    assert a.last == n.SeedTrade(1.25, 3.0, T * 1000 + 9)
    assert (a.volume, a.volume_us) == (1834.0, T * 1000 + 7)
    assert b.last is None
    assert math.isnan(b.volume)
    assert c.last is None
    assert math.isnan(c.volume)
    assert d.last is None
    assert math.isnan(d.volume)
    assert sorted(page.rejects) == sorted(
        [n.R_FRACTIONAL_SIZE, n.R_FRACTIONAL_SIZE, n.R_MALFORMED, n.R_BAD_PRICE]
    )
    frac = n.parse_snapshot_page(json.dumps({"results": [snap_row(
        last_quote={"bid": 1.0, "ask": 1.1, "bid_size": 2.5, "ask_size": 3,
                    "last_updated": T * 1_000_000})]}).encode())  # fmt: skip
    assert frac.rows[0].quote is None
    assert frac.rejects == [n.R_FRACTIONAL_SIZE]
