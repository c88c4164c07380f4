"""A batch's mark, bid and ask IVs: one American call for a small batch, the same
figures as the two-call path a large batch takes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from optionsfeed.pricing import iv_and_greeks
from optionsfeed.pricing.american import american_price
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
                        american, guess)  # fmt: skip


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in ("american_iv_and_greeks", "american_implied_vol"):
        real = getattr(qi, name)

        def counted(*a: Any, _real: Any = real, _name: str = name, **k: Any) -> Any:
            calls.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(qi, name, counted)
    return calls


def test_a_small_batch_solves_its_american_quotes_in_one_call_as_two_calls_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _rows(60)
    calls = _count_calls(monkeypatch)
    iv, g, sides = qi.quote_ivs(rows)
    assert calls == ["american_iv_and_greeks"]
    monkeypatch.setattr(qi, "ONE_CALL_ROWS", 0)  # the large-batch path
    iv2, g2, sides2 = qi.quote_ivs(rows)
    assert calls[1:] == ["american_iv_and_greeks", "american_implied_vol"]
    vega = g2.vega * 100.0
    ok = vega >= 0.1  # where the IV is determined to the search's tolerance
    assert ok.mean() > 0.8
    np.testing.assert_allclose(iv[ok], iv2[ok], rtol=0, atol=1e-8)
    for a, b in zip(g, g2, strict=True):
        np.testing.assert_allclose(a[ok], b[ok], rtol=1e-5, atol=1e-7)
    both = np.isfinite(sides2)
    assert np.array_equal(np.isfinite(sides), both)
    assert np.isnan(sides[0, ::7]).all()
    np.testing.assert_allclose(sides[both], sides2[both], rtol=0, atol=1e-6)


def test_european_rows_are_priced_european_in_either_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _rows(40, seed=1)
    eu = np.flatnonzero(~rows.american)
    want, g_want = iv_and_greeks(rows.price[eu], rows.is_call[eu], 100.0, rows.strike[eu],
                                 rows.t[eu], 0.04, 0.01)  # fmt: skip
    for one_call in (qi.ONE_CALL_ROWS, 0):
        monkeypatch.setattr(qi, "ONE_CALL_ROWS", one_call)
        iv, g, _ = qi.quote_ivs(rows)
        np.testing.assert_array_equal(iv[eu], want)
        np.testing.assert_array_equal(g.delta[eu], g_want.delta)
