"""The exercise style (not published while every row is priced European), and the
`iv_out_of_range` flag."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec
import numpy as np

from optionsfeed.model.contract import Contract
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import Listing, Quotes, SourceBatch, UnderlyingTick

from .test_venue_columns import EXPIRY_US, NOW, records


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


def test_exercise_is_not_claimed_while_rows_are_priced_european() -> None:
    """No record says `american` beside a European IV: the field waits for the model."""
    for style in ("american", "european"):
        recs = _priced(style, 2.0, 2.1)
        assert {r["exercise"] for r in recs.values()} == {msgspec.UNSET}


def test_iv_outside_the_range_is_flagged_and_kept() -> None:
    """A 30-day ATM option at 60 on a spot of 100 has an IV above 5.0: the flag, and the number."""
    recs = _priced("european", 60.0, 60.2)
    for rec in recs.values():
        assert "iv_out_of_range" in rec["flags"]
        assert isinstance(rec["iv"], float)
        assert rec["iv"] > 5.0
