"""Tests of the chain analytics."""

from __future__ import annotations

from datetime import date

import numpy as np

from optionsfeed.model.calendar import expiry_instant_us
from optionsfeed.model.contract import Contract
from optionsfeed.processing.analytics import atm_iv, compute_max_pain, compute_stats
from optionsfeed.processing.chain import ChainState
from optionsfeed.sources.base import Listing

NOW = 1_764_000_000_000_000
EXP = date(2025, 12, 19)


def chain(strikes: list[float], oi: list[float]) -> ChainState:
    cs = []
    for k in strikes:
        for right in ("C", "P"):
            cs.append(Contract(f"T{right}{k}", "T", "T", EXP, expiry_instant_us(EXP), k, right))
    st = ChainState(Listing("T", cs, 0.0, 0.0, np.array(oi, dtype=float)), listed_us=NOW)
    st.spot = 100.0
    return st


def test_max_pain_is_the_least_payout_strike() -> None:
    """Max pain minimizes the open-interest-weighted intrinsic payout."""
    # Calls 90/100/110 with OI 10, 0, 0; puts with OI 0, 0, 50: payout at 90 = 1000, at 100 = 600, at 110 = 200.
    st = chain([90, 100, 110], [10, 0, 0, 0, 0, 50])
    assert compute_max_pain(st) == {"2025-12-19": 110.0}


def test_atm_iv_interpolates_at_the_forward() -> None:
    """ATM IV interpolates the OTM side's IV linearly in strike at the forward."""
    st = chain([95, 100, 105], [1] * 6)
    # rows: C95 P95 C100 P100 C105 P105; with r = q = 0 the forward is the spot (100 + 2.5).
    st.spot = 102.5
    st.pub["iv"][:] = [0.5, 0.30, 0.5, 0.25, 0.20, 0.5]
    # Below F the put's IV counts: P100 = 0.25; above, the call's: C105 = 0.20 -> 0.225 at 102.5.
    assert abs((atm_iv(st, NOW) or 0) - 0.225) < 1e-12


def test_gamma_exposure_sign_and_ratios() -> None:
    """Calls add gamma exposure and puts subtract it; ratios are puts over calls."""
    st = chain([100], [10, 30])
    st.pub["gamma"][:] = [0.02, 0.02]
    st.pub["underlying_price"][:] = [100.0, 100.0]  # priced on the spot
    st.volume[:] = [4, 6]
    s = compute_stats(st, NOW)
    expected = (0.02 * 10 * 100 - 0.02 * 30 * 100) * 100.0**2 * 0.01
    assert s.net_gamma_exposure == round(expected, 2)
    assert expected < 0
    assert s.put_call_volume_ratio == 1.5
    assert s.put_call_oi_ratio == 3.0
    assert s.total_volume == 10
    assert s.total_open_interest == 40


def test_gamma_exposure_of_forward_priced_rows_uses_the_forward() -> None:
    """A gamma per USD of the forward is scaled by the forward squared, not the spot's:
    each row by the `underlying_price` its greeks were computed on."""
    st = chain([100], [10, 30])
    st.spot = 88_000.0
    st.pub["gamma"][:] = [2e-5, 1e-5]
    st.pub["underlying_price"][:] = [91_000.0, 91_000.0]
    s = compute_stats(st, NOW)
    expected = (2e-5 * 10 * 100 - 1e-5 * 30 * 100) * 91_000.0**2 * 0.01
    assert s.net_gamma_exposure == round(expected, 2)


def test_gamma_exposure_mixes_spot_and_forward_rows() -> None:
    """Rows priced on the spot use the spot; rows without a gamma count for nothing."""
    st = chain([90, 100], [10, 0, 20, 5])
    st.spot = 100.0
    st.pub["gamma"][:] = [0.01, np.nan, 0.02, 0.03]
    st.pub["underlying_price"][:] = [100.0, np.nan, 101.0, 101.0]
    s = compute_stats(st, NOW)
    expected = (0.01 * 10 * 100 * 100.0**2 + (0.02 * 20 - 0.03 * 5) * 100 * 101.0**2) * 0.01
    assert s.net_gamma_exposure == round(expected, 2)


def test_atm_iv_is_null_with_one_priced_strike_far_from_the_money() -> None:
    """One priced strike does not bracket the forward: no ATM IV, not that strike's IV."""
    st = chain([60, 95, 100, 105, 140], [1] * 10)
    st.pub["iv"][:] = np.nan
    st.pub["iv"][0:2] = [0.9, 0.8]  # only K = 60 is priced
    assert atm_iv(st, NOW) is None
    st.pub["iv"][:] = np.nan
    st.pub["iv"][8:10] = [0.7, 0.6]  # only K = 140
    assert atm_iv(st, NOW) is None


def test_atm_iv_needs_priced_strikes_on_both_sides_of_the_forward() -> None:
    """Priced strikes all below the forward give null; one at the forward gives its IV."""
    st = chain([90, 95, 100, 105], [1] * 8)
    st.pub["iv"][:] = [0.3, 0.31, 0.28, 0.29, np.nan, np.nan, np.nan, np.nan]
    assert atm_iv(st, NOW) is None  # F = 100, strikes 90 and 95 priced
    st.pub["iv"][4:6] = [0.25, 0.26]  # K = 100 priced: at the forward (the call's side)
    assert atm_iv(st, NOW) == 0.25
