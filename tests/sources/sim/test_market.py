"""Tests of the simulated market: determinism, quote rules, message mix."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from optionsfeed.sources.base import SourceBatch
from optionsfeed.sources.sim.market import SimMarket
from optionsfeed.sources.sim.universe import DEFAULT_UNDERLYINGS, spec_for

START = int(datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("America/New_York")).timestamp() * 1e6)


def market(seed: int = 1, names: tuple[str, ...] = DEFAULT_UNDERLYINGS) -> SimMarket:
    return SimMarket([spec_for(n) for n in names], seed=seed, start_us=START)


def run(m: SimMarket, steps: int, per_step: int) -> list[SourceBatch]:
    return [m.step(START + (i + 1) * 10_000, per_step) for i in range(steps)]


def fingerprint(batches: list[SourceBatch]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for b in batches:
        for q in b.quotes:
            out.append(
                (
                    q.underlying,
                    tuple(q.symbols),
                    q.bid.tobytes(),
                    q.ask.tobytes(),
                    q.bid_size.tobytes(),
                )
            )
        for t in b.trades:
            out.append((t.underlying, tuple(t.symbols), t.price.tobytes(), t.size.tobytes()))
        for k in b.ticks:
            out.append((k.underlying, k.price, k.ts))
    return out


def test_same_seed_same_stream() -> None:
    """Same seed, start and step times give identical batches; another seed does not."""
    a, b, c = market(5), market(5), market(6)
    assert fingerprint(run(a, 50, 200)) == fingerprint(run(b, 50, 200))
    assert fingerprint(run(market(5), 50, 200)) != fingerprint(run(c, 50, 200))


def test_listing_sizes() -> None:
    """Every default underlying lists >= 1,000 contracts and SPY >= 4,000, with open interest."""
    listings = {li.underlying: li for li in market().listings()}
    assert set(listings) == set(DEFAULT_UNDERLYINGS)
    for name, li in listings.items():
        assert len(li.contracts) >= (4000 if name == "SPY" else 1000), name
        assert li.open_interest is not None
        assert (li.open_interest >= 0).all()


def test_quotes_follow_tick_rules_and_bid_le_ask() -> None:
    """bid <= ask, prices on their tick grid, sizes positive where quoted."""
    m = market()
    for b in run(m, 100, 500):
        for q in b.quotes:
            penny_all = spec_for(q.underlying).penny_all
            assert (q.bid <= q.ask).all()
            assert (q.ask >= 0.01).all()
            assert (q.bid >= 0).all()
            cents = np.round(np.concatenate([q.bid, q.ask]) * 100).astype(int)
            assert np.allclose(np.concatenate([q.bid, q.ask]) * 100, cents, atol=1e-6)
            if not penny_all:
                high = cents[cents >= 300]
                assert (high % 5 == 0).all(), q.underlying
            assert (q.bid_size[q.bid > 0] >= 1).all()
            assert (q.ask_size >= 1).all()


def test_rate_is_met_and_ticks_move_the_underlying() -> None:
    """A step of N updates yields about N updates; the underlyings tick."""
    m = market()
    batches = run(m, 200, 1000)
    counts = [b.event_count() - sum(len(t.symbols) for t in b.trades) for b in batches]
    assert all(c == 1000 for c in counts)
    ticks = {k.underlying for b in batches for k in b.ticks}
    assert ticks == set(DEFAULT_UNDERLYINGS)
    trades = sum(len(t.symbols) for b in batches for t in b.trades)
    assert 0.04 * 200_000 < trades < 0.12 * 200_000


def test_message_mix_favours_near_money_and_short_expiries() -> None:
    """Most quotes are within 5% of spot and in expiries under 30 days."""
    m = market(names=("SPY",))
    (listing,) = m.listings()
    by_symbol = {c.symbol: c for c in listing.contracts}
    spot = spec_for("SPY").spot
    near = short = total = 0
    for b in run(m, 100, 500):
        for q in b.quotes:
            for s in q.symbols:
                c = by_symbol[s]
                total += 1
                near += abs(c.strike / spot - 1) < 0.05
                short += (c.expiry_us - START) < 30 * 86_400e6
    assert near / total > 0.5
    assert short / total > 0.5


def test_select_simulates_only_the_selected_and_lists_a_returning_one_again() -> None:
    """After select, batches carry only the selected underlyings, at their share of the
    activity; one selected again comes with a new listing."""
    m = market(names=("SPY", "QQQ", "AAPL"))
    m.listings()
    m.select({"QQQ"})
    assert 0.0 < m.share() < 1.0
    batches = run(m, 20, 200)
    seen = {q.underlying for b in batches for q in b.quotes} | {
        k.underlying for b in batches for k in b.ticks
    }
    assert seen == {"QQQ"}
    assert all(not b.listings for b in batches)
    m.select({"QQQ", "SPY"})
    (again,) = m.listings()
    assert again.underlying == "SPY"
    assert {q.underlying for b in run(m, 20, 200) for q in b.quotes} == {"QQQ", "SPY"}
    m.select({"SPY", "QQQ", "AAPL"})
    assert abs(m.share() - 1.0) < 1e-9
