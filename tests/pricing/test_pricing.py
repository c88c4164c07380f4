"""IV and greeks against vollib (Jaeckel's Let's Be Rational) on a grid, plus boundaries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vollib.black_scholes_merton import black_scholes_merton as vl_price
from vollib.black_scholes_merton.greeks import analytical as vl
from vollib.black_scholes_merton.implied_volatility import implied_volatility as vl_iv

from optionsfeed.pricing import bsm_greeks, bsm_price, implied_vol, iv_and_greeks

SPOT, RATE, DIV = 100.0, 0.045, 0.015
MONEYNESS = [0.5, 0.7, 0.85, 0.95, 1.0, 1.05, 1.2, 1.5, 2.0]
TIMES = [1 / 365, 7 / 365, 30 / 365, 0.25, 0.5, 1.0, 2.0]
VOLS = [0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3.0]
GRID = list(itertools.product(["c", "p"], MONEYNESS, TIMES, VOLS))


def _grid_arrays() -> tuple[np.ndarray, ...]:
    flag = np.array([g[0] == "c" for g in GRID])
    strike = np.array([SPOT * g[1] for g in GRID])
    t = np.array([g[2] for g in GRID])
    vol = np.array([g[3] for g in GRID])
    return flag, strike, t, vol


def test_price_matches_vollib() -> None:
    """bsm_price agrees with vollib's BSM price to 1e-10 relative (or 1e-12 absolute)."""
    flag, strike, t, vol = _grid_arrays()
    ours = bsm_price(flag, SPOT, strike, t, RATE, DIV, vol)
    ref = np.array([vl_price(f, SPOT, k, tt, RATE, v, DIV) for f, k, tt, v in zip(
        ["c" if c else "p" for c in flag], strike, t, vol, strict=True)])  # fmt: skip
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_iv_matches_vollib_where_vega_matters() -> None:
    """Wherever vega > 1e-4 per vol point, IV is within 1e-6 of vollib's and of the truth."""
    flag, strike, t, vol = _grid_arrays()
    price = bsm_price(flag, SPOT, strike, t, RATE, DIV, vol)
    vega = bsm_greeks(flag, SPOT, strike, t, RATE, DIV, vol).vega
    ours = implied_vol(price, flag, SPOT, strike, t, RATE, DIV)
    checked = 0
    for i, g in enumerate(GRID):
        if vega[i] <= 1e-4:
            continue
        ref = vl_iv(float(price[i]), SPOT, float(strike[i]), g[2], RATE, DIV, g[0])
        assert abs(ours[i] - ref) < 1e-6, (g, ours[i], ref)
        assert abs(ours[i] - g[3]) < 1e-6, (g, ours[i])
        checked += 1
    assert checked > len(GRID) * 0.6


def test_greeks_match_vollib() -> None:
    """Delta, gamma, theta/day, vega and rho per point agree with vollib to 1e-6 relative."""
    flag, strike, t, vol = _grid_arrays()
    g = bsm_greeks(flag, SPOT, strike, t, RATE, DIV, vol)
    ours = {"delta": g.delta, "gamma": g.gamma, "theta": g.theta, "vega": g.vega, "rho": g.rho}
    funcs = {
        "delta": vl.delta,
        "gamma": vl.gamma,
        "theta": vl.theta,
        "vega": vl.vega,
        "rho": vl.rho,
    }
    for name, fn in funcs.items():
        ref = np.array([fn(c, SPOT, float(k), tt, RATE, v, DIV) for c, k, tt, v in zip(
            ["c" if c else "p" for c in flag], strike, t, vol, strict=True)])  # fmt: skip
        np.testing.assert_allclose(ours[name], ref, rtol=1e-6, atol=1e-12, err_msg=name)


def test_iv_and_greeks_recover_the_input_vol() -> None:
    """Greeks at the solved IV are the greeks at the true vol."""
    flag, strike, t, vol = _grid_arrays()
    price = bsm_price(flag, SPOT, strike, t, RATE, DIV, vol)
    true = bsm_greeks(flag, SPOT, strike, t, RATE, DIV, vol)
    iv, g = iv_and_greeks(price, flag, SPOT, strike, t, RATE, DIV)
    mask = true.vega > 1e-4
    np.testing.assert_allclose(iv[mask], vol[mask], atol=1e-6)
    np.testing.assert_allclose(g.delta[mask], true.delta[mask], atol=1e-6)


@pytest.mark.parametrize(
    ("price", "is_call", "strike", "t"),
    [
        (0.5, True, 80.0, 0.5),  # below intrinsic (~20)
        (19.0, True, 80.0, 0.5),  # still below the discounted intrinsic
        (100.0, True, 80.0, 0.5),  # at or above the upper bound (spot, discounted)
        (150.0, False, 100.0, 0.5),  # a put above the strike
        (5.0, True, 100.0, 0.0),  # expiry now
        (5.0, True, 100.0, -0.01),  # past expiry
        (0.0, False, 100.0, 0.5),  # zero price
        (-1.0, True, 100.0, 0.5),  # negative price
        (float("nan"), True, 100.0, 0.5),
        (float("inf"), True, 100.0, 0.5),
    ],
)
def test_no_solution_gives_nan_never_garbage(
    price: float, is_call: bool, strike: float, t: float
) -> None:
    """Prices no volatility fits give NaN IV and NaN greeks (the wire's null + iv_failed)."""
    iv, g = iv_and_greeks(np.array([price]), np.array([is_call]), SPOT, strike, t, RATE, DIV)
    assert math.isnan(iv[0])
    assert all(math.isnan(v[0]) for v in g)


def test_a_price_on_the_upper_bound_has_no_iv_by_any_rounding() -> None:
    """The bound as a caller computes it (S e^{-qT}, K e^{-rT}) gives NaN for every
    contract, not a finite IV for the ones whose bound rounded down; just below it
    (1e-9 relative) every one solves."""
    rng = np.random.default_rng(1)
    n = 20_000
    s = rng.uniform(10, 100_000, n)
    k = s * rng.uniform(0.5, 2, n)
    t = rng.uniform(1e-4, 2, n)
    r, q = rng.choice([0.0, 0.04], n), rng.choice([0.0, 0.01], n)
    call = rng.random(n) < 0.5
    bound = np.where(call, s * np.exp(-q * t), k * np.exp(-r * t))
    assert np.isnan(implied_vol(bound, call, s, k, t, r, q)).all()
    assert np.isfinite(implied_vol(bound * (1 - 1e-9), call, s, k, t, r, q)).all()


def test_scalar_and_broadcast_inputs() -> None:
    """Scalars broadcast against arrays; the result has the broadcast shape."""
    iv = implied_vol(np.array([10.0, 12.0]), True, SPOT, 100.0, 1.0, RATE, DIV)
    assert iv.shape == (2,)
    assert iv[0] < iv[1]


def test_tiny_and_huge_prices_converge() -> None:
    """Deep out of the money at low vol and near the upper bound at huge vol both solve.

    Out-of-the-money sides only: an in-the-money price that is intrinsic value to the
    last bit carries no information about volatility.
    """
    cases = [(0.2, 0.05, 1.6), (3.0, 2.0, 1.0), (0.05, 1 / 365, 1.08), (5.0, 2.0, 0.5)]
    for vol, t, m in cases:
        for call in [m >= 1.0] if m != 1.0 else [True, False]:
            p = bsm_price(call, SPOT, SPOT * m, t, RATE, DIV, vol)
            iv = implied_vol(p, call, SPOT, SPOT * m, t, RATE, DIV)
            assert abs(float(iv) - vol) < 1e-6 * max(1.0, vol), (vol, t, m, call, iv)


@settings(max_examples=300, deadline=None)
@given(
    vol=st.floats(0.03, 4.0),
    t=st.floats(1 / 365, 3.0),
    m=st.floats(0.4, 2.5),
    call=st.booleans(),
    r=st.floats(-0.01, 0.1),
    q=st.floats(0.0, 0.08),
)
def test_round_trip(vol: float, t: float, m: float, call: bool, r: float, q: float) -> None:
    """price(vol) -> IV gives vol back wherever the price carries information about it."""
    strike = SPOT * m
    p = bsm_price(call, SPOT, strike, t, r, q, vol)
    vega = bsm_greeks(call, SPOT, strike, t, r, q, vol).vega
    iv = implied_vol(p, call, SPOT, strike, t, r, q)
    if float(vega) > 1e-4:
        assert abs(float(iv) - vol) < 1e-6
    else:
        assert math.isnan(float(iv)) or float(iv) > 0
