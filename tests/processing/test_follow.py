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


def test_deferred_following_runs_in_slices_after_the_fresh_quotes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With `defer`, a batch publishes its own events only; `periodic` then sweeps the
    rows that follow the spot, FOLLOW_ROWS_PER_SLICE at a time, and a quote that comes
    in the middle of the sweep is priced and published at once, ahead of the rest."""
    monkeypatch.setattr(processor, "FOLLOW_ROWS_PER_SLICE", 1)
    proc, listing = _started()
    call, put = (c.symbol for c in listing.contracts)
    now = NOW + 2 * SECOND
    moved = proc.apply(SourceBatch(ticks=[_tick(101.0, now)]), now, defer=True)
    assert _options(moved) == {}  # the tick itself is published, no row follows yet
    assert decode_envelope(moved[0].payload).underlying is not None
    assert proc.periodic_pending(now)
    first = proc.periodic(now)
    assert set(_options(first)) == {call}
    q = Quotes("SPY", [put], np.array([4.0]), np.array([4.1]), np.ones(1), np.ones(1),
               np.array([now], dtype=np.int64))  # fmt: skip
    fresh = proc.apply(SourceBatch(quotes=[q]), now + 1, defer=True)
    assert _options(fresh)[put]["bid"] == 4.0
    assert _options(fresh)[put]["underlying_price"] == 101.0  # priced at the spot of now
    # The put's turn in the sweep (and the forwards its quote made due) finds it at
    # that spot already: nothing more to send, and then nothing more to do.
    rest = [proc.periodic(now + 2) for _ in range(3)]
    assert _options([p for pubs in rest for p in pubs]) == {}
    assert not proc.periodic_pending(now + 2)
    assert [p.seq for p in (*moved, *first, *fresh)] == [3, 4, 5]


def test_deferred_forwards_wait_for_a_periodic_slice() -> None:
    """With `defer`, a batch does not imply forwards; `periodic` does, when due."""
    proc, _ = _started()
    chain = proc.chains["SPY"]
    now = NOW + 2 * SECOND
    chain.expiry_dirty[:] = True
    proc.apply(SourceBatch(), now, defer=True)
    assert chain.forwards_due(now)
    assert proc.periodic_pending(now)
    assert proc.periodic(now) == []  # forwards move later prices; nothing to publish
    assert not chain.forwards_due(now)
