"""The numbers a desk recomputes: wire precision of greeks and prices, the mark, theta
near expiry and the sanity flags (docs/conventions.md)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from optionsfeed.model.contract import Contract
from optionsfeed.model.envelope import decode_envelope
from optionsfeed.model.records import OptionRecord
from optionsfeed.pricing import bsm_price, iv_and_greeks
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
