"""Black-Scholes-Merton prices, implied volatility and greeks, vectorized with NumPy.

Conventions (they are the protocol's): continuous rate `r` and dividend yield `q`,
time `t` in years (ACT/365) to the expiry instant; theta per calendar day, vega per
volatility point (0.01), rho per rate point (0.01).

The implied-volatility solver works on the normalized Black price, as Jaeckel's
"Let's Be Rational" does: with forward F, x = ln(F/K) and s = sigma * sqrt(t),

    b(x, s) = exp(x/2) N(x/s + s/2) - exp(-x/2) N(x/s - s/2)       (a call, per sqrt(F K))

An in-the-money option is turned into the out-of-the-money one by put-call parity,
so the solver only meets x <= 0, where 0 < b < exp(x/2). b(s) has one inflection at
s_c = sqrt(-2x): below it b is convex and tiny prices need the objective ln b (near
linear there), above it b is concave and b itself is the objective. Each branch
starts from an asymptotic guess and takes safeguarded Halley steps inside the
branch's bracket, so every element converges (usually in 3-5 steps) or is reported
as NaN. Prices with no solution (at or below intrinsic value, at or above the upper
bound, or at expiry) give NaN, which the caller turns into null + `iv_failed`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr, ndtri

F64 = NDArray[np.float64]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_MAX_STEPS = 40
_REL_TOL = 1e-12  # a step this small (relative) means the next is at rounding level
# A price within this (relative) of the no-arbitrage upper bound is at the bound: the
# bound itself is computed with rounding (K e^{-rT} in binary), and a price on it would
# otherwise solve to a volatility of thousands of % or not at all, by the last bit.
_BOUND_TOL = 1e-12


class Greeks(NamedTuple):
    """Per-contract sensitivities: delta, gamma, theta/day, vega/vol point, rho/rate point."""

    delta: F64
    gamma: F64
    theta: F64
    vega: F64
    rho: F64


def _f64(a: ArrayLike) -> F64:
    return np.asarray(a, dtype=np.float64)


def _d1_d2(s: F64, k: F64, t: F64, r: F64, q: F64, sigma: F64) -> tuple[F64, F64, F64]:
    sd = sigma * np.sqrt(t)
    d1 = (np.log(s / k) + (r - q + 0.5 * sigma * sigma) * t) / sd
    return d1, d1 - sd, sd


def bsm_price(
    is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    sigma: ArrayLike,
) -> F64:  # fmt: skip
    """Discounted BSM prices; arguments broadcast together.

    At `t <= 0` or `sigma <= 0` the price is the (forward) intrinsic value; NaN
    inputs give NaN.
    """
    c, s_, k_, t_, r_, q_, v_ = np.broadcast_arrays(
        np.asarray(is_call, dtype=bool), _f64(s), _f64(k), _f64(t), _f64(r), _f64(q), _f64(sigma)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        tt = np.maximum(t_, 0.0)
        df_s, df_k = s_ * np.exp(-q_ * tt), k_ * np.exp(-r_ * tt)
        d1, d2, _ = _d1_d2(s_, k_, tt, r_, q_, v_)
        call = df_s * ndtr(d1) - df_k * ndtr(d2)
        put = df_k * ndtr(-d2) - df_s * ndtr(-d1)
        price = np.where(c, call, put)
        intrinsic = np.maximum(np.where(c, df_s - df_k, df_k - df_s), 0.0)
        degenerate = (tt <= 0) | (v_ <= 0)
    out: F64 = np.where(degenerate & ~np.isnan(v_), intrinsic, price)
    return out


def bsm_greeks(
    is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    sigma: ArrayLike,
) -> Greeks:  # fmt: skip
    """Analytic BSM greeks at volatility `sigma`; NaN where `sigma` or `t` is not positive."""
    c, s_, k_, t_, r_, q_, v_ = np.broadcast_arrays(
        np.asarray(is_call, dtype=bool), _f64(s), _f64(k), _f64(t), _f64(r), _f64(q), _f64(sigma)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        bad = ~((t_ > 0) & (v_ > 0))
        t_ = np.where(bad, np.nan, t_)
        sqrt_t = np.sqrt(t_)
        d1, d2, sd = _d1_d2(s_, k_, t_, r_, q_, v_)
        eq, er = np.exp(-q_ * t_), np.exp(-r_ * t_)
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
        # theta = +1 for a call, -1 for a put: N(theta d) is the probability term each
        # needs, computed directly so the far tail keeps its precision.
        sign = np.where(c, 1.0, -1.0)
        n1, n2 = ndtr(sign * d1), ndtr(sign * d2)
        decay = -s_ * eq * pdf * v_ / (2.0 * sqrt_t)
        delta = sign * eq * n1
        gamma = eq * pdf / (s_ * sd)
        theta = decay - sign * (r_ * k_ * er * n2 - q_ * s_ * eq * n1)
        vega = s_ * eq * pdf * sqrt_t
        rho = sign * k_ * t_ * er * n2
    return Greeks(delta, gamma, theta / 365.0, vega / 100.0, rho / 100.0)


# -- normalized Black ---------------------------------------------------------------


def _b(x: F64, s: F64) -> F64:
    """Normalized out-of-the-money call price for x <= 0, s > 0."""
    h = 0.5 * x
    xs = x / s
    out: F64 = np.exp(h) * ndtr(xs + 0.5 * s) - np.exp(-h) * ndtr(xs - 0.5 * s)
    return out


def _b_prime(x: F64, s: F64) -> F64:
    """db/ds: the normalized vega, exact in closed form."""
    xs = x / s
    out: F64 = _INV_SQRT_2PI * np.exp(-0.5 * (xs * xs + 0.25 * s * s))
    return out


def normalized_implied_s(beta: F64, x: F64) -> F64:
    """Solve b(x, s) = beta for s = sigma sqrt(t), elementwise, for x <= 0.

    Requires 0 < beta < exp(x/2) (the caller filters); returns NaN where an element
    does not converge within the step budget.
    """
    n = len(beta)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        s_c = np.sqrt(-2.0 * x)
        b_c = np.where(s_c > 0, _b(x, np.where(s_c > 0, s_c, 1.0)), 0.0)
        lower = beta < b_c
        # Lower branch guess: ln b ~ A - x^2 / (2 s^2), matched at s_c.
        a = np.log(np.where(lower, b_c, 1.0)) - 0.5 * x
        guess_lo = -x / np.sqrt(2.0 * np.maximum(a - np.log(beta), 1e-300))
        # Upper branch guess: b_max - b ~ (e^{x/2} + e^{-x/2}) N(-s/2), exact at the money.
        tail = (np.exp(0.5 * x) - beta) / (np.exp(0.5 * x) + np.exp(-0.5 * x))
        guess_hi = -2.0 * ndtri(np.clip(tail, 1e-300, 0.5))
        s = np.where(lower, np.minimum(guess_lo, s_c), np.maximum(guess_hi, s_c))
        lo = np.where(lower, 0.0, s_c)
        hi = np.where(lower, s_c, np.inf)
        out = np.full(n, np.nan)
        idx = np.arange(n)
        log_beta = np.log(beta)
        for _ in range(_MAX_STEPS):
            b = _b(x, s)
            bp = _b_prime(x, s)
            bpp = bp * (x * x / (s * s * s) - 0.25 * s)
            # ln-objective for the convex branch, plain for the concave one.
            f = np.where(lower, np.log(b) - log_beta, b - beta)
            f1 = np.where(lower, bp / b, bp)
            f2 = np.where(lower, bpp / b - f1 * f1, bpp)
            lo = np.where(f < 0, np.maximum(lo, s), lo)
            hi = np.where(f > 0, np.minimum(hi, s), hi)
            newton = f / f1
            halley = newton / (1.0 - 0.5 * newton * f2 / f1)
            step = np.where(np.isfinite(halley), halley, newton)
            nxt = s - step
            # Outside the bracket (or not a number): bisect, or grow when unbounded above.
            bad = ~((nxt > lo) & (nxt < hi))
            fallback = np.where(np.isfinite(hi), 0.5 * (lo + hi), 2.0 * np.maximum(s, lo))
            nxt = np.where(bad, fallback, nxt)
            done = (np.abs(nxt - s) <= _REL_TOL * nxt) | (f == 0)
            if done.any():
                out[idx[done]] = nxt[done]
                keep = ~done
                idx, x, beta, log_beta = idx[keep], x[keep], beta[keep], log_beta[keep]
                lower, lo, hi, nxt = lower[keep], lo[keep], hi[keep], nxt[keep]
                if len(idx) == 0:
                    break
            s = nxt
    return out


def implied_vol(
    price: ArrayLike, is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike,
    r: ArrayLike, q: ArrayLike,
) -> F64:  # fmt: skip
    """BSM implied volatility of discounted `price`; arguments broadcast together.

    NaN where no volatility reproduces the price: at or below intrinsic value, at or
    above the no-arbitrage upper bound (within 1e-12 of it counts as at it: the bound
    is itself rounded), `t <= 0`, or any input not a positive number.
    """
    c, p_, s_, k_, t_, r_, q_ = np.broadcast_arrays(
        np.asarray(is_call, dtype=bool), _f64(price), _f64(s), _f64(k), _f64(t), _f64(r), _f64(q)
    )
    shape = p_.shape
    c, p_, s_, k_, t_, r_, q_ = (np.ravel(a) for a in (c, p_, s_, k_, t_, r_, q_))
    out = np.full(p_.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        fwd = s_ * np.exp((r_ - q_) * t_)
        root = np.sqrt(fwd * k_)
        beta = p_ * np.exp(r_ * t_) / root
        x = np.log(fwd / k_)
        theta = np.where(c, 1.0, -1.0)
        intrinsic = np.maximum(theta * (np.exp(0.5 * x) - np.exp(-0.5 * x)), 0.0)
        beta_otm = beta - intrinsic
        x_otm = -np.abs(x)
        # The tolerance is relative to the option's own bound (before the parity step).
        upper = np.exp(0.5 * x_otm) - _BOUND_TOL * np.exp(0.5 * theta * x)
        ok = (t_ > 0) & (s_ > 0) & (k_ > 0) & (beta_otm > 0) & (beta_otm < upper)
        ok &= np.isfinite(beta) & np.isfinite(x)
    sel = np.flatnonzero(ok)
    if len(sel):
        s_norm = normalized_implied_s(beta_otm[sel], x_otm[sel])
        out[sel] = s_norm / np.sqrt(t_[sel])
    result: F64 = out.reshape(shape)
    return result


def iv_and_greeks(
    price: ArrayLike, is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike,
    r: ArrayLike, q: ArrayLike,
) -> tuple[F64, Greeks]:  # fmt: skip
    """Implied volatility of `price` and the greeks at it (NaN where the IV is NaN)."""
    iv = implied_vol(price, is_call, s, k, t, r, q)
    return iv, bsm_greeks(is_call, s, k, t, r, q, iv)
