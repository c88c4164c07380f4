"""The numbers a desk recomputes: wire precision of greeks and prices, the mark, theta
near expiry and the sanity flags (docs/conventions.md)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from optionsfeed.model.contract import Contract
from optionsfeed.model.envelope import decode_envelope
from optionsfeed.model.records import OptionRecord
from optionsfeed.pricing import bsm_price, implied_vol, iv_and_greeks
from optionsfeed.processing.analytics import compute_stats
from optionsfeed.processing.chain import US_PER_YEAR
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import Listing, Quotes, SourceBatch, UnderlyingTick

from .test_venue_columns import records

NOW = 1_796_000_000_000_000  # 2026-11-29 in µs
DAY_US = 86_400_000_000
FWD = 91_000.0  # a BTC forward


def coin_chain(strikes: list[float], expiry_us: int) -> Listing:
    """A Deribit-like BTC listing: coin-quoted, priced on the venue's forward."""
    out = [
        Contract(f"BTC-X-{int(k)}-{r}", "BTC", "BTC", date(2026, 12, 29), expiry_us, k, r, 1, "BTC")
        for k in strikes
        for r in ("C", "P")
    ]
    return Listing("BTC", out, 0.0, 0.0, inverse=True)


def coin_quotes(
    listing: Listing, marks: list[float], forward: float, ts: int, **cols: list[float]
) -> Quotes:
    n = len(listing.contracts)
    arrays = {
        "bid": np.full(n, 0.0001),
        "ask": np.full(n, 0.5),
        **{k: np.array(v, dtype=np.float64) for k, v in cols.items()},
    }
    return Quotes(
        "BTC", [c.symbol for c in listing.contracts], bid_size=np.ones(n), ask_size=np.ones(n),
        ts=np.full(n, ts, dtype=np.int64), mark=np.array(marks), forward=np.full(n, forward),
        **arrays,
    )  # fmt: skip


def priced_coin_chain(
    strikes: list[float], expiry_us: int, vol: float, *, spot: float = FWD
) -> tuple[Processor, Listing, dict[str, OptionRecord], list[float]]:
    """A BTC chain whose venue marks (8 decimals, as Deribit's) are Black-76 at `vol`."""
    listing = coin_chain(strikes, expiry_us)
    proc = Processor()
    proc.apply(
        SourceBatch(listings=[listing], ticks=[UnderlyingTick("BTC", spot, None, None, NOW)]), NOW
    )
    calls = np.array([c.right == "C" for c in listing.contracts])
    ks = np.array([c.strike for c in listing.contracts])
    t = (expiry_us - NOW) / US_PER_YEAR
    marks = np.round(bsm_price(calls, FWD, ks, t, 0.0, 0.0, vol) / FWD, 8).tolist()
    pubs = proc.apply(SourceBatch(quotes=[coin_quotes(listing, marks, FWD, NOW)]), NOW)
    return proc, listing, records(pubs), marks


# -- 1. greeks keep their significant digits --------------------------------------------


def test_greeks_keep_six_significant_digits_on_a_btc_chain() -> None:
    """On BTC (F ~ 91k) gammas are ~1e-5 per USD: none publishes as 0, and every greek
    is within half a unit of its 6th significant digit of the unrounded value."""
    strikes = [float(k) for k in range(40_000, 172_000, 2_000)]
    expiry_us = NOW + 30 * DAY_US
    _, listing, recs, marks = priced_coin_chain(strikes, expiry_us, 0.5)
    calls = np.array([c.right == "C" for c in listing.contracts])
    ks = np.array([c.strike for c in listing.contracts])
    t = (expiry_us - NOW) / US_PER_YEAR
    iv, g = iv_and_greeks(np.array(marks) * FWD, calls, FWD, ks, t, 0.0, 0.0)
    checked = 0
    for i, c in enumerate(listing.contracts):
        r = recs[c.symbol]
        if not np.isfinite(iv[i]):
            continue
        checked += 1
        for name in ("delta", "gamma", "theta", "vega", "rho"):
            exact = float(getattr(g, name)[i])
            got = getattr(r, name)
            assert got is not None, (c.symbol, name)
            assert got != 0.0 or exact == 0.0, (c.symbol, name, exact)
            assert abs(got - exact) <= 5.000001e-6 * abs(exact), (c.symbol, name, got, exact)
    assert checked >= 120


def test_net_gamma_exposure_is_exact_to_the_gammas_precision() -> None:
    """GEX from the published gammas is within 1e-5 of the one from unrounded gammas."""
    strikes = [float(k) for k in range(40_000, 172_000, 2_000)]
    expiry_us = NOW + 30 * DAY_US
    proc, listing, _, marks = priced_coin_chain(strikes, expiry_us, 0.5)
    calls = np.array([c.right == "C" for c in listing.contracts])
    ks = np.array([c.strike for c in listing.contracts])
    _, g = iv_and_greeks(
        np.array(marks) * FWD, calls, FWD, ks, (expiry_us - NOW) / US_PER_YEAR, 0.0, 0.0
    )
    chain = proc.chains["BTC"]
    chain.open_interest[:] = np.where(calls, 100.0, 40.0)
    gex = compute_stats(chain, NOW).net_gamma_exposure
    exact = float(np.nansum(g.gamma * chain.open_interest * np.where(calls, 1.0, -1.0)))
    exact *= FWD**2 * 0.01
    assert gex is not None
    assert gex == pytest.approx(exact, rel=1e-5)


def test_a_change_below_the_relative_precision_is_not_a_change() -> None:
    """A forward that moves by 1e-10 relative changes no visible value: nothing is sent."""
    strikes = [80_000.0, 90_000.0, 100_000.0]
    expiry_us = NOW + 30 * DAY_US
    proc, listing, _, marks = priced_coin_chain(strikes, expiry_us, 0.5)
    pubs = proc.apply(
        SourceBatch(quotes=[coin_quotes(listing, marks, FWD * (1 + 1e-10), NOW + 1000)]),
        NOW + 1000,
    )
    assert all(decode_envelope(p.payload).option_deltas() == [] for p in pubs)


# -- 3. prices keep the venue's digits; the mark is a mark --------------------------------


def test_coin_prices_keep_eight_decimals_so_the_iv_can_be_recomputed() -> None:
    """A venue mark of 1.78e-6 BTC goes out as 1.78e-6, and the record's own numbers
    (mark x underlying_price, strike, time, rate) give back its IV."""
    expiry_us = NOW + 2 * DAY_US
    listing = coin_chain([120_000.0], expiry_us)
    proc = Processor()
    proc.apply(SourceBatch(listings=[listing], ticks=[UnderlyingTick("BTC", FWD, None, None, NOW)]),
               NOW)  # fmt: skip
    marks = [1.78e-6, 0.32967033]
    q = coin_quotes(listing, marks, FWD, NOW, bid=[1e-6, 0.3295], ask=[2.5e-6, 0.32975123])
    recs = records(proc.apply(SourceBatch(quotes=[q]), NOW))
    call, put = (recs[c.symbol] for c in listing.contracts)
    assert (call.mark, put.mark) == (1.78e-6, 0.32967033)
    assert (call.bid, call.ask, put.ask) == (1e-6, 2.5e-6, 0.32975123)
    t = (expiry_us - NOW) / US_PER_YEAR
    for r in (call, put):
        assert r.mark is not None
        assert r.underlying_price is not None
        assert r.iv is not None
        again = implied_vol(r.mark * r.underlying_price, r.right == "C", r.underlying_price,
                            r.strike, t, 0.0, 0.0)  # fmt: skip
        assert float(again) == pytest.approx(r.iv, abs=5e-6)


def _usd_priced(bid: list[float], ask: list[float], *, expiry_us: int = NOW + 30 * DAY_US,
                spot: float = 100.0, rate: float = 0.04) -> dict[str, OptionRecord]:  # fmt: skip
    """The call and put K=110 of a USD listing, quoted `bid` / `ask`, priced on `spot`."""
    contracts = [
        Contract(f"XYZ261229{r}00110000", "XYZ", "XYZ", date(2026, 12, 29), expiry_us, 110.0, r)
        for r in ("C", "P")
    ]
    listing = Listing("XYZ", contracts, rate, 0.0)
    proc = Processor()
    tick = UnderlyingTick("XYZ", spot, None, None, NOW)
    proc.apply(SourceBatch(listings=[listing], ticks=[tick]), NOW)
    syms = [c.symbol for c in listing.contracts]
    q = Quotes("XYZ", syms, np.array(bid), np.array(ask), np.ones(2), np.ones(2),
               np.full(2, NOW, dtype=np.int64))  # fmt: skip
    recs = records(proc.apply(SourceBatch(quotes=[q]), NOW))
    return {"C": recs[syms[0]], "P": recs[syms[1]]}


def test_no_bid_and_no_venue_mark_is_no_mark() -> None:
    """Half the ask is not a mark: with no bid and no venue mark the record has a null
    mark, no IV and the flag no_bid (not iv_failed: there was nothing to fit)."""
    r = _usd_priced([0.0, 0.0], [0.05, 12.0])["C"]
    assert r.mark is None
    assert r.iv is None
    assert r.delta is None
    assert r.flags == ["no_bid"]


def test_no_bid_with_a_venue_mark_prices_the_venues_mark() -> None:
    """With no bid, the venue's mark is the mark (and its IV), not half the ask."""
    expiry_us = NOW + 30 * DAY_US
    listing = coin_chain([91_000.0], expiry_us)
    proc = Processor()
    proc.apply(SourceBatch(listings=[listing], ticks=[UnderlyingTick("BTC", FWD, None, None, NOW)]),
               NOW)  # fmt: skip
    t = (expiry_us - NOW) / US_PER_YEAR
    marks = np.round(bsm_price([True, False], FWD, 91_000.0, t, 0.0, 0.0, 0.5) / FWD, 8).tolist()
    q = coin_quotes(listing, marks, FWD, NOW, bid=[0.0, 0.0], ask=[0.2, 0.2])
    recs = records(proc.apply(SourceBatch(quotes=[q]), NOW))
    for c, mark in zip(listing.contracts, marks, strict=True):
        r = recs[c.symbol]
        assert r.mark == mark
        assert r.iv == pytest.approx(0.5, abs=1e-5)
        assert r.flags == ["no_bid"]


def test_a_venue_mark_of_zero_is_a_mark_with_no_iv() -> None:
    """A mark of exactly 0 is published as 0 with no IV (iv_failed), never ask/2's IV."""
    listing = coin_chain([150_000.0], NOW + 2 * DAY_US)
    proc = Processor()
    proc.apply(SourceBatch(listings=[listing], ticks=[UnderlyingTick("BTC", FWD, None, None, NOW)]),
               NOW)  # fmt: skip
    q = coin_quotes(listing, [0.0, 0.6], FWD, NOW, bid=[0.0, 0.6], ask=[0.0005, 0.7])
    r = records(proc.apply(SourceBatch(quotes=[q]), NOW))[listing.contracts[0].symbol]
    assert r.mark == 0.0
    assert r.iv is None
    assert r.flags == ["no_bid", "iv_failed"]


# -- 4. theta near expiry ---------------------------------------------------------------


def test_theta_two_hours_before_expiry_is_the_value_left_not_the_rate() -> None:
    """An ATM BTC call 2 h from expiry: theta is the value it loses by expiry (about
    -271 USD, as Deribit publishes), not the BSM rate x 1 day (about -1,627)."""
    expiry_us = NOW + 2 * 3_600_000_000
    _, listing, recs, marks = priced_coin_chain([FWD], expiry_us, 0.5)
    for c, mark in zip(listing.contracts, marks, strict=True):
        r = recs[c.symbol]
        assert r.theta is not None
        value = mark * FWD  # ATM: no intrinsic value, all of it goes by expiry
        assert r.theta == pytest.approx(-value, rel=1e-5)
        assert -280 < r.theta < -260


def test_theta_one_second_before_expiry_is_at_most_the_time_value() -> None:
    """A $2.05 call 1 s before expiry, $2 in the money: theta is -0.05 (what is left to
    lose), not -88,540 a day; its IV is far out of range and flagged so."""
    r = _usd_priced([2.04, 2.0], [2.06, 2.1], expiry_us=NOW + 1_000_000, spot=112.0)["C"]
    assert r.mark == 2.05
    assert r.theta == pytest.approx(-0.05, abs=1e-9)
    assert r.iv is not None
    assert "iv_out_of_range" in r.flags


def test_theta_from_a_day_out_is_the_bsm_rate_per_day() -> None:
    """With a day or more left theta is the BSM rate x 1 day (Deribit's convention)."""
    expiry_us = NOW + 36 * 3_600_000_000
    _, listing, recs, marks = priced_coin_chain([FWD], expiry_us, 0.5)
    t = (expiry_us - NOW) / US_PER_YEAR
    _, g = iv_and_greeks(np.array(marks) * FWD, [True, False], FWD, FWD, t, 0.0, 0.0)
    for i, c in enumerate(listing.contracts):
        assert recs[c.symbol].theta == pytest.approx(float(g.theta[i]), rel=5e-6)


# -- 6. sanity flags --------------------------------------------------------------------


def test_a_junk_ask_gives_an_iv_that_is_flagged() -> None:
    """A K=110 put quoted 1 / 200 on a spot of 100: the mid's IV (thousands of %) is
    published with the flag iv_out_of_range."""
    r = _usd_priced([1.0, 1.0], [200.0, 200.0])["P"]
    assert r.iv is not None
    assert r.iv > 5.0
    assert r.flags == ["iv_out_of_range"]


def test_a_price_at_the_upper_bound_has_no_iv_for_calls_and_puts_alike() -> None:
    """At rate 0 a put's upper bound is its strike and a call's the spot: a mark exactly
    there has no IV (iv_failed), however the bound rounds in binary (a put at K used
    to come out as 5,727 %)."""
    recs = _usd_priced([99.99, 109.99], [100.01, 110.01], rate=0.0)
    for r in recs.values():
        assert r.mark in (100.0, 110.0)
        assert r.iv is None
        assert r.flags == ["iv_failed"]


def _mark_with_raw_iv_in(lo: float, hi: float, t: float) -> float:
    """An 8-decimal ATM BTC call mark whose unrounded IV lies in (lo, hi)."""
    target = (lo + hi) / 2
    mark = round(float(bsm_price(True, FWD, FWD, t, 0.0, 0.0, target)) / FWD, 8)
    raw = float(implied_vol(mark * FWD, True, FWD, FWD, t, 0.0, 0.0))
    assert lo < raw < hi, raw
    return mark


@pytest.mark.parametrize(
    ("lo", "hi", "published", "flagged"),
    [
        (5.0, 5.000005, 5.0, False),  # rounds to 5.0: in range, as the record shows
        (5.000005, 5.00001, 5.00001, True),
        (0.0099995, 0.01, 0.01, False),
        (0.009994, 0.009995, 0.00999, True),
    ],
)
def test_the_range_flag_agrees_with_the_published_iv(
    lo: float, hi: float, published: float, flagged: bool
) -> None:
    """iv_out_of_range is decided on the IV as published: a client that sees 5.0 never
    sees the flag beside it, and sees it beside 5.00001."""
    expiry_us = NOW + 30 * DAY_US
    listing = coin_chain([FWD], expiry_us)
    proc = Processor()
    proc.apply(SourceBatch(listings=[listing], ticks=[UnderlyingTick("BTC", FWD, None, None, NOW)]),
               NOW)  # fmt: skip
    mark = _mark_with_raw_iv_in(lo, hi, (expiry_us - NOW) / US_PER_YEAR)
    q = coin_quotes(listing, [mark, mark], FWD, NOW)
    r = records(proc.apply(SourceBatch(quotes=[q]), NOW))[listing.contracts[0].symbol]
    assert r.iv == published
    assert ("iv_out_of_range" in r.flags) is flagged
