"""The exercise style (each row priced by its own, and published), and the
`iv_out_of_range` flag."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pytest

from optionsfeed.model.contract import Contract
from optionsfeed.pricing import implied_vol
from optionsfeed.pricing.american import american_implied_vol
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import Listing, Quotes, SourceBatch, UnderlyingTick

from .test_venue_columns import EXPIRY_US, NOW, T, records


def _listing(exercise: str) -> Listing:
    contracts = [
        Contract(f"SPY260630{r}00100000", "SPY", "SPY", date(2026, 6, 30), EXPIRY_US, 100.0, r,
                 exercise="american" if exercise == "american" else "european")
        for r in ("C", "P")
    ]  # fmt: skip
    return Listing("SPY", contracts, 0.04, 0.01)


def _priced(exercise: str, bid: float, ask: float) -> dict[str, dict[str, Any]]:
    listing = _listing(exercise)
    proc = Processor()
    proc.apply(SourceBatch(listings=[listing]), NOW)
    syms = [c.symbol for c in listing.contracts]
    q = Quotes("SPY", syms, np.full(2, bid), np.full(2, ask), np.ones(2), np.ones(2),
               np.full(2, NOW, dtype=np.int64))  # fmt: skip
    tick = UnderlyingTick("SPY", 100.0, 99.99, 100.01, NOW)
    pubs = proc.apply(SourceBatch(ticks=[tick], quotes=[q]), NOW + 1)
    return {s: {"exercise": r.exercise, "flags": r.flags, "iv": r.iv}
            for s, r in records(pubs).items()}  # fmt: skip


def test_rows_are_priced_and_published_by_their_exercise_style() -> None:
    """An American listing publishes `american` and the American IV (below the European
    one for a put: its price carries the early-exercise premium); a European one
    `european` and the European IV; a call without dividends is the same either way."""
    recs = {style: _priced(style, 5.0, 5.1) for style in ("american", "european")}
    syms = sorted(recs["american"])
    call, put = (s for s in syms if "C" in s[9:]), (s for s in syms if "P" in s[9:])
    c, p = next(call), next(put)
    for style in ("american", "european"):
        assert {r["exercise"] for r in recs[style].values()} == {style}
    am = american_implied_vol(5.05, False, 100.0, 100.0, T, 0.04, 0.01)
    assert recs["american"][p]["iv"] == pytest.approx(float(am), abs=1e-5)
    eu = implied_vol(5.05, False, 100.0, 100.0, T, 0.04, 0.01)
    assert recs["european"][p]["iv"] == pytest.approx(float(eu), abs=1e-5)
    assert recs["american"][p]["iv"] < recs["european"][p]["iv"]
    assert recs["american"][c]["iv"] <= recs["european"][c]["iv"]


def test_iv_outside_the_range_is_flagged_and_kept() -> None:
    """A 30-day ATM option at 60 on a spot of 100 has an IV above 5.0: the flag, and the number."""
    recs = _priced("european", 60.0, 60.2)
    for rec in recs.values():
        assert "iv_out_of_range" in rec["flags"]
        assert isinstance(rec["iv"], float)
        assert rec["iv"] > 5.0
