"""Chain analytics of one underlying (`stats.{U}`), computed from the chain state.

Conventions (docs/conventions.md says the same for users):
- `atm_iv`: implied volatility at the forward of the nearest expiry at least one
  day out (the venue's forward where it publishes one, else the expiry's forward the
  rows are priced on: implied, or F = S e^{(r-q)T}), linearly interpolated in strike between the two listed
  strikes around F; at each strike the out-of-the-money side's IV is used (the put
  below F, the call at or above it), the other side when that one has none. Null
  unless priced strikes bracket F (one on F will do).
- `put_call_volume_ratio` / `put_call_oi_ratio`: puts over calls (null when calls are 0).
- `max_pain` per expiry: the listed strike where the options' total intrinsic payout
  to holders, weighted by open interest, is least.
- `net_gamma_exposure`: sum over contracts of gamma x open interest x multiplier x P^2
  x 0.01, P the price the row's gamma is per (its `underlying_price`: the venue's
  forward where the row is priced on one, else the spot), calls counted positive and
  puts negative (the common convention that dealers are long the calls and short the
  puts customers trade): US dollars of delta change per 1% move of the underlying.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..model.records import StatsRecord
from .chain import US_PER_YEAR, ChainState

F64 = NDArray[np.float64]
ONE_DAY_US = 86_400 * 1_000_000


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def atm_iv(chain: ChainState, now_us: int) -> float | None:
    """IV at the forward of the nearest expiry at least one day out.

    None unless priced strikes of that expiry bracket the forward (or one is on it).
    """
    if not np.isfinite(chain.spot):
        return None
    future = np.unique(chain.expiry_us[chain.expiry_us - now_us >= ONE_DAY_US])
    if len(future) == 0:
        return None
    exp_us = int(future[0])
    t = (exp_us - now_us) / US_PER_YEAR
    rows = np.flatnonzero(chain.expiry_us == exp_us)
    venue_fwd = chain.forward[rows]
    venue_fwd = venue_fwd[np.isfinite(venue_fwd)]
    # Else the expiry's own forward: implied from its quotes, or the carry's.
    carry = chain.expiry_carry[np.searchsorted(chain.pairs.expiry_us, exp_us)]
    fwd = (
        float(np.median(venue_fwd))
        if len(venue_fwd)
        else chain.spot * np.exp((chain.rate - carry) * t)
    )
    iv = chain.pub["iv"][rows]
    strikes = chain.strike[rows]
    calls = chain.is_call[rows]
    uniq = np.unique(strikes)
    ivs = np.full(len(uniq), np.nan)
    pos = np.searchsorted(uniq, strikes)
    call_iv, put_iv = np.full(len(uniq), np.nan), np.full(len(uniq), np.nan)
    call_iv[pos[calls]] = iv[calls]
    put_iv[pos[~calls]] = iv[~calls]
    otm_first = np.where(uniq >= fwd, call_iv, put_iv)
    other = np.where(uniq >= fwd, put_iv, call_iv)
    ivs = np.where(np.isfinite(otm_first), otm_first, other)
    ok = np.isfinite(ivs)
    k, v = uniq[ok], ivs[ok]
    # Only priced strikes that bracket the forward (one of them may sit on it) give an
    # honest value; a lone strike far from the money is not the at-the-money IV.
    if len(k) == 0 or not k[0] <= fwd <= k[-1]:
        return None
    return _finite_or_none(float(np.interp(fwd, k, v)))


def compute_max_pain(chain: ChainState) -> dict[str, float]:
    """Max-pain strike per expiry (YYYY-MM-DD); expiries without open interest are left out."""
    out: dict[str, float] = {}
    oi = np.nan_to_num(chain.open_interest, nan=0.0) * chain.multiplier
    for exp_us in np.unique(chain.expiry_us).tolist():
        rows = np.flatnonzero(chain.expiry_us == exp_us)
        w = oi[rows]
        if not w.any():
            continue
        k = chain.strike[rows]
        calls = chain.is_call[rows]
        cand = np.unique(k)
        # payout[c] = sum_calls w max(c - K, 0) + sum_puts w max(K - c, 0)
        diff = cand[:, None] - k[None, :]
        payout = np.where(calls[None, :], np.maximum(diff, 0.0), np.maximum(-diff, 0.0)) @ w
        out[chain.expiry_str[int(rows[0])]] = float(cand[int(np.argmin(payout))])
    return out


def _ratio(puts: float, calls: float) -> float | None:
    return round(puts / calls, 4) if calls > 0 else None


def compute_stats(
    chain: ChainState, now_us: int, *, max_pain: dict[str, float] | None = None
) -> StatsRecord:
    """The full `stats.{U}` record of `chain` at `now_us`.

    `max_pain`, when given, is reused instead of recomputed (it only depends on
    open interest and strikes).
    """
    calls = chain.is_call
    vol = chain.volume
    oi = np.nan_to_num(chain.open_interest, nan=0.0)
    call_vol, put_vol = float(vol[calls].sum()), float(vol[~calls].sum())
    call_oi, put_oi = float(oi[calls].sum()), float(oi[~calls].sum())
    # Each gamma is per unit of the price its row was priced on (the published
    # `underlying_price`: the venue's forward, or the spot), so it is scaled by that
    # price squared: gamma_F F^2 = gamma_S S^2, the same dollar gamma either way.
    gamma, under = chain.pub["gamma"], chain.pub["underlying_price"]
    ok = np.isfinite(gamma) & np.isfinite(under)
    gex: float | None = None
    if ok.any():
        sign = np.where(calls[ok], 1.0, -1.0)
        dollar_gamma = gamma[ok] * under[ok] ** 2 * 0.01
        gex = round(float((dollar_gamma * oi[ok] * chain.multiplier[ok] * sign).sum()), 2)
    return StatsRecord(
        underlying=chain.underlying,
        ts=now_us,
        spot=_finite_or_none(chain.spot),
        atm_iv=None if (a := atm_iv(chain, now_us)) is None else round(a, 5),
        put_call_volume_ratio=_ratio(put_vol, call_vol),
        put_call_oi_ratio=_ratio(put_oi, call_oi),
        total_volume=int(call_vol + put_vol),
        total_open_interest=int(call_oi + put_oi),
        max_pain=compute_max_pain(chain) if max_pain is None else max_pain,
        net_gamma_exposure=gex,
    )
