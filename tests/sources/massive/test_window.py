"""window.py: which contracts to stream, and when the window moves."""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, timedelta

import pytest

from optionsfeed.model.calendar import expiry_instant_us
from optionsfeed.model.contract import Contract, Right
from optionsfeed.model.osi import OptionSymbol
from optionsfeed.sources.massive.window import choose_window

TODAY = date(2026, 11, 30)
NOW = expiry_instant_us(TODAY) - 6 * 3600 * 1_000_000  # 10:00 New York
RIGHTS: tuple[Right, Right] = ("C", "P")


def chain(
    expiries: int = 10, lo: float = 500.0, hi: float = 800.0, step: float = 5.0, root: str = "SPY"
) -> list[Contract]:
    out = []
    for i in range(expiries):
        e = TODAY + timedelta(days=i)
        k = lo
        while k <= hi:
            for right in RIGHTS:
                sym = OptionSymbol(root, e, right, round(k * 1000))
                out.append(Contract(sym.compact(), "SPY", root, e, expiry_instant_us(e), k, right))
            k += step
    return out


def strikes_by_expiry(contracts: tuple[Contract, ...]) -> dict[date, list[float]]:
    out: dict[date, list[float]] = {}
    for c in contracts:
        if c.right == "C":
            out.setdefault(c.expiry, []).append(c.strike)
    return out


def test_the_window_holds_the_nearest_expiries_and_strikes_within_the_budget() -> None:
    """Up to max_expiries expiries, nearest first; the same strikes around spot in each."""
    w = choose_window(chain(), 651.0, NOW, max_contracts=160, max_expiries=8)
    assert len(w.contracts) == 160  # 8 expiries x 10 strikes x call and put
    by = strikes_by_expiry(w.contracts)
    assert sorted(by) == [TODAY + timedelta(days=i) for i in range(8)]
    for strikes in by.values():
        assert strikes == [630.0 + 5 * i for i in range(10)]  # the 10 nearest 651
    assert Counter(c.right for c in w.contracts) == {"C": 80, "P": 80}
    keys = [(c.expiry_us, c.strike, c.right) for c in w.contracts]
    assert keys == sorted(keys)


def test_never_more_than_max_contracts_both_rights_counting() -> None:
    """Odd and small budgets are respected exactly or from below."""
    for max_contracts in (1, 2, 3, 7, 11, 99, 1000, 5000):
        w = choose_window(chain(), 650.0, NOW, max_contracts=max_contracts)
        assert 0 < len(w.contracts) <= max_contracts
    w = choose_window(chain(), 650.0, NOW, max_contracts=1000, max_expiries=8)
    assert len(w.contracts) == 8 * 2 * 61  # all 61 strikes 500-800 of 8 expiries fit
    assert len({c.symbol for c in w.contracts}) == len(w.contracts)


def test_a_small_budget_takes_fewer_expiries_to_keep_a_smile() -> None:
    """With 40 contracts and 8 expiries allowed, 5 strikes per expiry leave 4 expiries."""
    w = choose_window(chain(), 650.0, NOW, max_contracts=40, max_expiries=8, min_strikes=5)
    by = strikes_by_expiry(w.contracts)
    assert len(by) == 4
    assert all(len(s) == 5 for s in by.values())


def test_expired_expiries_are_never_chosen() -> None:
    """Today's expiry after 16:00 New York is gone; the next ones are taken."""
    after_close = expiry_instant_us(TODAY) + 1
    w = choose_window(chain(), 650.0, after_close, max_contracts=100, max_expiries=2)
    assert {c.expiry for c in w.contracts} == {TODAY + timedelta(days=1), TODAY + timedelta(days=2)}
    assert w.until_us == expiry_instant_us(TODAY + timedelta(days=1))
    assert not w.needs_move(650.0, after_close)
    assert w.needs_move(650.0, w.until_us)


def test_extra_contracts_at_a_strike_count_against_the_budget() -> None:
    """A second root at the same strikes (SPXW beside SPX) never breaks the cap."""
    both = chain(expiries=2) + chain(expiries=2, root="SPYW")
    w = choose_window(both, 650.0, NOW, max_contracts=40, max_expiries=2, min_strikes=2)
    assert len(w.contracts) == 40
    by = strikes_by_expiry(w.contracts)
    assert all(len(set(s)) == 5 for s in by.values())  # 5 strikes x 4 contracts x 2 expiries


def test_the_window_moves_past_half_the_distance_to_its_edge_with_hysteresis() -> None:
    """10 strikes 630-675 around 651: moves above 663, below 640.5; the next is centred anew."""
    w = choose_window(chain(), 651.0, NOW, max_contracts=20, max_expiries=1)
    assert w.center == 651.0
    assert w.move_above == pytest.approx(651 + (675 - 651) / 2)
    assert w.move_below == pytest.approx(651 - (651 - 630) / 2)
    assert not w.needs_move(662.9, NOW)
    assert w.needs_move(663.1, NOW)
    assert w.needs_move(640.0, NOW)
    assert not w.needs_move(math.nan, NOW)
    moved = choose_window(chain(), 663.1, NOW, max_contracts=20, max_expiries=1)
    assert moved.symbols != w.symbols
    # Spot wavering back just below the old trigger does not move it back.
    assert not moved.needs_move(662.0, NOW)
    assert not moved.needs_move(655.0, NOW)


def test_an_edge_at_the_last_listed_strike_never_triggers() -> None:
    """Spot far above every strike: the top side has nothing more to show."""
    w = choose_window(chain(hi=700.0), 900.0, NOW, max_contracts=20, max_expiries=1)
    assert w.move_above == math.inf
    assert max(c.strike for c in w.contracts) == 700.0
    assert not w.needs_move(2000.0, NOW)
    assert w.needs_move(600.0, NOW)


def test_no_spot_centres_on_the_middle_strike_and_empty_listings_give_an_empty_window() -> None:
    """NaN spot: the nearest expiry's middle strike; nothing listed: nothing to stream."""
    w = choose_window(chain(), math.nan, NOW, max_contracts=20, max_expiries=1)
    assert w.center == 650.0
    empty = choose_window([], 650.0, NOW, max_contracts=20)
    assert empty.contracts == ()
    assert not empty.needs_move(1e9, NOW)
    with pytest.raises(ValueError, match="at least 1"):
        choose_window(chain(), 650.0, NOW, max_contracts=0)
