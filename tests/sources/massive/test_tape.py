"""tape.py: each contract's newest quote and its day's volume (seeded, traded, reset)."""

from __future__ import annotations

import math
from datetime import datetime

from optionsfeed.model.calendar import NEW_YORK
from optionsfeed.sources.massive.tape import Tape


def us(text: str) -> int:
    """New York wall time `text` (ISO) in µs."""
    return int(datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).timestamp()) * 1_000_000


A = "SPY261218C00650000"


def test_the_snapshot_seeds_trades_add_and_a_new_date_starts_again() -> None:
    """1,834 from the snapshot, +2 +3 from trades; the next New York date's first trade
    starts at its size (23:59 and 00:01 New York are two dates, whatever UTC says)."""
    tape = Tape()
    assert tape.seed_volume(A, 1834.0, us("2026-11-27T12:00:00")) == 1834.0
    assert tape.trade(A, 2.0, us("2026-11-27T12:00:01")) == 1836.0
    assert tape.trade(A, 3.0, us("2026-11-27T23:59:00")) == 1839.0
    assert tape.trade(A, 4.0, us("2026-11-28T00:01:00")) == 4.0
    assert tape.trade(A, 5.0, us("2026-11-27T23:59:59")) == 4.0  # a late print of yesterday
    assert tape.volume(A) == 4.0


def test_a_snapshot_again_neither_counts_twice_nor_goes_back() -> None:
    """Same date: the larger figure wins (trades since, or trades missed); an earlier
    date's figure is ignored; none given keeps what is held, or 0 of no known date."""
    tape = Tape()
    tape.seed_volume(A, 100.0, us("2026-11-27T10:00:00"))
    tape.trade(A, 5.0, us("2026-11-27T10:00:01"))
    assert tape.seed_volume(A, 103.0, us("2026-11-27T10:00:02")) == 105.0
    assert tape.seed_volume(A, 130.0, us("2026-11-27T10:05:00")) == 130.0
    assert tape.seed_volume(A, 900.0, us("2026-11-26T15:00:00")) == 130.0
    assert tape.seed_volume(A, math.nan, 0) == 130.0
    b = "SPY261218P00650000"
    assert tape.seed_volume(b, math.nan, 0) == 0.0
    assert tape.trade(b, 7.0, us("2026-11-27T10:00:00")) == 7.0


def test_quotes_unsent_volumes_and_the_bound() -> None:
    """The newest quote is kept; a volume waiting for a quote is taken once; contracts no
    longer listed are forgotten."""
    tape = Tape()
    tape.quote(A, 1.0, 1.1, 3.0, 4.0, 10)
    tape.quote(A, 1.2, 1.3, 5.0, 6.0, 20)
    assert tape.tops[A] == (1.2, 1.3, 5.0, 6.0, 20)
    b = "SPY261218P00650000"
    tape.trade(b, 7.0, us("2026-11-27T10:00:00"))
    tape.unsent.add(b)
    assert tape.take_unsent(b) == 7.0
    assert math.isnan(tape.take_unsent(b))
    tape.unsent.add(b)
    tape.retain({A})
    assert set(tape.tops) == {A}
    assert math.isnan(tape.volume(b))
    assert tape.unsent == set()
