"""Strike grids: increments by band, coverage around spot, coarser far out."""

from __future__ import annotations

import itertools

import pytest

from optionsfeed.sources.sim.strikes import profiles_for, strike_grid


def _diffs(grid: list[int]) -> set[int]:
    return {b - a for a, b in itertools.pairwise(grid)}


@pytest.mark.parametrize(
    ("underlying", "spot"), [("SPY", 680.0), ("AAPL", 275.0), ("NVDA", 180.0), ("ZZZ", 35.0)]
)
def test_grid_is_sorted_positive_and_on_increments(underlying: str, spot: float) -> None:
    """Strikes are sorted, unique, positive and multiples of the fine increment."""
    _, profile = profiles_for(underlying, spot)
    for dte in (0.2, 3.0, 30.0, 120.0, 700.0):
        grid = strike_grid(spot, dte, profile)
        assert grid == sorted(set(grid))
        assert grid[0] > 0
        assert all(k % round(profile.fine * 1000) == 0 for k in grid)
        assert grid[0] < spot * 1000 < grid[-1]


def test_spy_lists_dollar_strikes_near_the_money() -> None:
    """SPY 0DTE has $1 strikes around spot and $5 strikes in the wings."""
    _, profile = profiles_for("SPY", 680.0)
    grid = strike_grid(680.0, 0.2, profile)
    near = [k for k in grid if 660_000 <= k <= 700_000]
    assert _diffs(near) == {1000}
    wing = [k for k in grid if k < 640_000]
    assert wing
    assert _diffs(wing) == {5000}


def test_far_expiries_are_coarser_and_wider() -> None:
    """LEAPS list fewer strikes per dollar and reach further from spot than 0DTE."""
    _, profile = profiles_for("SPY", 680.0)
    short, leaps = strike_grid(680.0, 0.5, profile), strike_grid(680.0, 700.0, profile)
    assert min(_diffs(leaps)) > min(_diffs(short))
    assert leaps[0] < short[0]
    assert leaps[-1] > short[-1]
    assert leaps[0] <= 680_000 * 0.5


def test_stock_increments_follow_price() -> None:
    """Dearer stocks get wider increments ($1 at $150, $2.50 at $275, $5 at $900)."""
    assert profiles_for("ZZZ", 150.0)[1].fine == 1.0
    assert profiles_for("ZZZ", 275.0)[1].fine == 2.5
    assert profiles_for("ZZZ", 900.0)[1].fine == 5.0


def test_index_etfs_list_dailies_and_stocks_weeklies() -> None:
    """SPY and QQQ list dailies and quarterlies; a stock lists weeklies and no dailies."""
    spy, _ = profiles_for("SPY", 680.0)
    aapl, _ = profiles_for("AAPL", 275.0)
    assert spy.dailies
    assert spy.quarterlies > 0
    assert not aapl.dailies
    assert aapl.weeklies > 0
