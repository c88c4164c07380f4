"""A batch's mark, bid and ask IVs: one American call, each search started from where
that price's last one ended."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import optionsfeed.pricing.american as american
from optionsfeed.pricing import iv_and_greeks
from optionsfeed.pricing.american import american_iv_and_greeks, american_price
from optionsfeed.processing import quote_ivs as qi


def _rows(n: int, seed: int = 0) -> qi.QuoteRows:
    rng = np.random.default_rng(seed)
    c, k = rng.random(n) < 0.5, rng.uniform(80, 125, n)
    t, vol = rng.uniform(3 / 365, 1.0, n), rng.uniform(0.15, 0.5, n)
    american = rng.random(n) < 0.8
    mark = american_price(c, 100.0, k, t, 0.04, 0.01, vol)
    sides = np.stack([mark * 0.97, mark * 1.03])
    sides[0, ::7] = np.nan  # no bid on some rows
    guess = np.where(rng.random(n) < 0.7, vol * rng.uniform(0.99, 1.01, n), np.nan)
    full = np.full(n, 1.0)
    return qi.QuoteRows(mark, sides, c, 100.0 * full, k, t, 0.04 * full, 0.01 * full,
                        american, np.tile(guess, (3, 1)), qi.no_warm_rows(n))  # fmt: skip


def _count_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Contracts per premium pass of the American searches, appended as they run."""
    sizes: list[int] = []
    real = american._premium

    def counted(*a: Any, **k: Any) -> Any:
        sizes.append(len(a[1]))
        return real(*a, **k)

    monkeypatch.setattr(american, "_premium", counted)
    return sizes


def test_american_marks_and_sides_are_solved_as_alone() -> None:
    rows = _rows(60)
    iv, g, sides, _ = qi.quote_ivs(rows)
    am = np.flatnonzero(rows.american)
    args = (rows.is_call[am], 100.0, rows.strike[am], rows.t[am], 0.04, 0.01)
    want, g_want = american_iv_and_greeks(rows.price[am], *args, guess=rows.guess[0, am])
    ok = g_want.vega * 100.0 >= 0.1  # where the IV is determined to the search's tolerance
    assert ok.mean() > 0.8
    np.testing.assert_allclose(iv[am][ok], want[ok], rtol=0, atol=1e-8)
    for a, b in zip(g, g_want, strict=True):
        np.testing.assert_allclose(a[am][ok], b[ok], rtol=1e-5, atol=1e-7)
    for side in range(2):
        alone = american_iv_and_greeks(rows.sides[side, am], *args, guess=rows.guess[0, am])[0]
        assert np.array_equal(np.isfinite(sides[side, am]), np.isfinite(alone))
        both = np.isfinite(alone)
        np.testing.assert_allclose(sides[side, am][both], alone[both], rtol=0, atol=1e-6)
    assert np.isnan(sides[0, ::7]).all()


def test_european_rows_are_priced_european() -> None:
    rows = _rows(40, seed=1)
    eu = np.flatnonzero(~rows.american)
    want, g_want = iv_and_greeks(rows.price[eu], rows.is_call[eu], 100.0, rows.strike[eu],
                                 rows.t[eu], 0.04, 0.01)  # fmt: skip
    iv, g, _, warm = qi.quote_ivs(rows)
    np.testing.assert_array_equal(iv[eu], want)
    np.testing.assert_array_equal(g.delta[eu], g_want.delta)
    assert np.isnan(warm.sigma[:, eu]).all()


def test_the_warm_state_a_batch_leaves_starts_the_next_close_to_its_ivs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Quotes a moment later (spot up 0.05 %, each vol moved by up to 0.5 %), once from
    the rows' last IVs and once also from the warm state the first batch left: the
    same IVs, bids and asks, and the state's searches take far fewer premium passes."""
    rows = _rows(300, seed=2)
    iv, _, sides, warm = qi.quote_ivs(rows)
    am = np.flatnonzero(rows.american)
    # Rows whose premium is negligible take no search, and leave no state.
    assert np.isfinite(warm.sigma[0, am]).mean() > 0.5
    assert warm.sigma.shape == (3, 300)
    rng = np.random.default_rng(5)
    vol = iv * (1.0 + rng.uniform(-0.005, 0.005, len(iv)))
    c, k, t = rows.is_call, rows.strike, rows.t
    mark = np.where(np.isfinite(vol), american_price(c, 100.05, k, t, 0.04, 0.01, vol), rows.price)
    later = rows._replace(price=mark, sides=np.stack([mark * 0.97, mark * 1.03]),
                          spot=rows.spot + 0.05, guess=np.vstack([iv, sides]))  # fmt: skip
    passes = _count_passes(monkeypatch)
    iv_guess, g_guess, sides_guess, _ = qi.quote_ivs(later)
    from_guess = sum(passes)
    passes.clear()
    iv_warm, g_warm, sides_warm, _ = qi.quote_ivs(later._replace(warm=warm))
    from_warm = sum(passes)
    ok = g_guess.vega * 100.0 >= 0.1
    np.testing.assert_allclose(iv_warm[ok], iv_guess[ok], rtol=0, atol=1e-8)
    np.testing.assert_allclose(g_warm.delta[ok], g_guess.delta[ok], rtol=0, atol=1e-5)
    both = np.isfinite(sides_guess)
    assert np.array_equal(np.isfinite(sides_warm), both)
    np.testing.assert_allclose(sides_warm[both], sides_guess[both], rtol=0, atol=1e-6)
    assert from_warm < 0.7 * from_guess, (from_warm, from_guess)
