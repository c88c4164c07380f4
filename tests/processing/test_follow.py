"""Greeks that follow the underlying: sticky strike at a bounded cadence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from optionsfeed.model.envelope import Publication, decode_envelope
from optionsfeed.pricing import bsm_greeks
from optionsfeed.pricing.american import american_greeks
from optionsfeed.processing import processor
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import Listing, Quotes, SourceBatch, UnderlyingTick

from .test_exercise import _listing
from .test_venue_columns import NOW, T

SECOND = 1_000_000


def _started(follow_us: int = SECOND, exercise: str = "european") -> tuple[Processor, Listing]:
    listing = _listing(exercise)
    proc = Processor(follow_interval_us=follow_us)
    proc.apply(SourceBatch(listings=[listing]), NOW)
    syms = [c.symbol for c in listing.contracts]
    q = Quotes("SPY", syms, np.full(2, 5.0), np.full(2, 5.1), np.ones(2), np.ones(2),
               np.full(2, NOW, dtype=np.int64))  # fmt: skip
    proc.apply(SourceBatch(ticks=[_tick(100.0, NOW)], quotes=[q]), NOW + 1)
    return proc, listing


def _tick(price: float, ts: int) -> UnderlyingTick:
    return UnderlyingTick("SPY", price, price - 0.01, price + 0.01, ts)


def _options(pubs: list[Publication]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in pubs:
        for d in decode_envelope(p.payload).option_deltas():
            out.setdefault(d["symbol"], {}).update(d)
    return out


@pytest.mark.parametrize("exercise", ["european", "american"])
def test_a_spot_move_moves_the_greeks_not_the_iv(exercise: str) -> None:
    """Spot 100 -> 101 with no option quote: the records' delta and underlying_price
    follow at once (nothing followed in the last second), their IV stays, and the new
    delta is the model's (the row's exercise style's) at the held IV and the new spot."""
    proc, listing = _started(exercise=exercise)
    chain = proc.chains["SPY"]
    iv_before = chain.pub["iv"].copy()
    now = NOW + 2 * SECOND
    opts = _options(proc.apply(SourceBatch(ticks=[_tick(101.0, now)]), now))
    call = listing.contracts[0].symbol
    assert set(opts) == {c.symbol for c in listing.contracts}
    assert "iv" not in opts[call]
    assert np.array_equal(chain.pub["iv"], iv_before)
    assert opts[call]["underlying_price"] == 101.0
    t = (listing.contracts[0].expiry_us - now) / (365 * 86_400e6)
    model = american_greeks if exercise == "american" else bsm_greeks
    want = model(True, 101.0, 100.0, t, 0.04, 0.01, iv_before[0]).delta
    assert opts[call]["delta"] == pytest.approx(float(want), rel=1e-5)
    assert t == pytest.approx(T, abs=1e-4)


def test_the_greeks_follow_at_most_once_per_interval() -> None:
    """Two moves within a second: the second waits; the first batch after the
    interval carries it, though no tick comes with that batch."""
    proc, _ = _started()
    now = NOW + 2 * SECOND
    assert _options(proc.apply(SourceBatch(ticks=[_tick(101.0, now)]), now))
    later = now + SECOND // 2
    second = _options(proc.apply(SourceBatch(ticks=[_tick(102.0, later)]), later))
    assert second == {}
    due = now + SECOND
    third = _options(proc.apply(SourceBatch(), due))
    assert {d["underlying_price"] for d in third.values()} == {102.0}


def test_no_spot_move_sends_nothing_extra() -> None:
    """A tick with the same price (only the quote's size changed), or no tick at all:
    no option update, whatever the cadence."""
    proc, _ = _started()
    follows = proc.follows
    for i in range(1, 4):
        now = NOW + i * 2 * SECOND
        same = UnderlyingTick("SPY", 100.0, 99.98, 100.02, now)
        assert _options(proc.apply(SourceBatch(ticks=[same]), now)) == {}
    assert proc.follows == follows


def test_following_can_be_turned_off() -> None:
    """With an interval of 0 a spot move leaves the records as they are."""
    proc, _ = _started(follow_us=0)
    now = NOW + 2 * SECOND
    assert _options(proc.apply(SourceBatch(ticks=[_tick(101.0, now)]), now)) == {}


def test_a_sweep_goes_on_over_the_next_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most FOLLOW_ROWS_PER_BATCH rows follow per batch; the rest in the batches after."""
    monkeypatch.setattr(processor, "FOLLOW_ROWS_PER_BATCH", 1)
    proc, listing = _started()
    now = NOW + 2 * SECOND
    first = _options(proc.apply(SourceBatch(ticks=[_tick(101.0, now)]), now))
    second = _options(proc.apply(SourceBatch(), now + 1))
    assert len(first) == len(second) == 1
    assert set(first) | set(second) == {c.symbol for c in listing.contracts}
    assert _options(proc.apply(SourceBatch(), now + 2)) == {}


def test_a_spot_move_no_greek_shows_sends_nothing() -> None:
    """Spot 100 -> 100.001: every greek moves in its 6th digit, none by what a desk
    would see (delta by 0.001, the others by 0.5 %), so no row is resent; 100 -> 101
    moves them all."""
    proc, _ = _started()
    now = NOW + 2 * SECOND
    assert _options(proc.apply(SourceBatch(ticks=[_tick(100.001, now)]), now)) == {}
    now += 2 * SECOND
    assert len(_options(proc.apply(SourceBatch(ticks=[_tick(101.0, now)]), now))) == 2
