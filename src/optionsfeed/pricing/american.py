"""American option prices, implied volatility and greeks, vectorized with NumPy.

The model is Andersen, Lake and Offengeld's ("High-performance American option
pricing", 2016): the price is the European price plus the early-exercise premium,
an integral over the put's exercise boundary (`pricing.alo` solves the boundary,
`pricing.boundary_table` shares it between contracts). Calls are priced as puts by
McDonald-Schroder symmetry, C(S, K, r, q) = P(K, S, q, r).

One pass over the premium's quadrature points gives the premium and, from the same
normal CDFs, its derivatives in the spot (delta, gamma), the volatility (with the
boundary's own dependence, from the table) and the rate. The implied volatility is
a safeguarded Newton iteration on the American price with that American vega,
started at the European IV of the price (an upper bound), or close to the IV from
where the contract's last search ended (`Warm`); its last pass gives the greeks.

The premium is left out (the price is the European one) where early exercise is
never optimal (a put with r <= 0, a call with q <= 0), and where a bound on it is
below `NEGLIGIBLE` of volatility times the vega: the boundary lies below
xmax = K min(1, r/q), so the premium is at most r K T N(-d) with d the distance of
the spot from xmax in standard deviations (deep out-of-the-money options).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.polynomial import legendre
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from . import Greeks, bsm_greeks, bsm_price, implied_vol
from .alo import exercise_cap
from .boundary_table import (
    DEGREE,
    SIGMA_MAX,
    SIGMA_MIN,
    TABLES,
    bucket_of,
    bucket_years,
    group_index,
    h_weights,
    stencil_weights,
)

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]
INTP = NDArray[np.intp]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
IV_MIN, IV_MAX = 1e-3, 10.0  # the volatilities the solver searches
NEGLIGIBLE = 1e-7  # of volatility: a premium bounded below this times the vega is left out
_IV_TOL = 1e-8  # a bracketing step this small ends the search
# A Newton step this small ends it too: the point after it is then within about
# (f'' / 2f') 1e-10 of the root, so it is taken without another pass.
_NEWTON_TOL = 1e-5
_PRICE_TOL = 1e-13  # of the (put form) strike: the price is matched to rounding
# Deep in the money, below the volatility at which the boundary reaches the spot,
# the model's price wobbles around the intrinsic value by up to about 1e-7 of the
# strike: a price within _WOBBLE of it determines no volatility (a range reproduces
# it), and its search ends once the price is matched to _WOBBLE_TOL, where a search
# to rounding would bounce between the wobble's roots for a dozen passes.
_WOBBLE, _WOBBLE_TOL = 1e-6, 1e-7  # of the (put form) strike
_IV_STEPS = 30
_H_RATE = 1e-4  # the rate step of rho's boundary term (tables at r +- h)
PREMIUM_POINTS = 16
# The tangent step (`_tangent_step`): its European iterations, and where it is taken
# (ln(S / B) above this; right above the boundary the premium bends too fast).
_TANGENT_STEPS = 1  # 2 or 3 gave the same passes (docs/benchmarks.md)
_TANGENT_LN_SB = 0.05
# From a warm state (`Warm`), the IV may have moved by more than a step's worth: a
# second European iteration costs little beside a pass.
_WARM_STEPS = 2


def _premium_quadrature(p: int) -> tuple[F64, F64, F64]:
    """(sqrt(t / T) of the points, their weights on [0, 1] in t / T, sqrt((T - t) / T)).

    The integral over time from now t is taken in an angle, t = T sin^4(phi), by
    Gauss-Legendre: near t = T (the boundary's square-root behaviour at expiry) the
    time left goes as cos^2(phi), and near t = 0, where the integrand of a contract
    close to its boundary rises steeply, the points crowd as phi^4. Against sin^2,
    the same accuracy takes 16 points instead of 24 (docs/benchmarks.md).
    """
    x, w = legendre.leggauss(p)
    phi = math.pi / 4.0 * (x + 1.0)
    sin, cos = np.sin(phi), np.cos(phi)
    u = sin**4
    wt = math.pi / 4.0 * w * 4.0 * sin**3 * cos  # dt / T = 4 sin^3 cos dphi
    return np.sqrt(u), wt, np.sqrt(1.0 - u)


_ZP, _WT, _LEFT = _premium_quadrature(PREMIUM_POINTS)
_ZP2 = _ZP * _ZP
_WTT = _WT * _ZP2  # the weights of integrals weighted by t / T
# w^k at the points per unit of sqrt(T / T_bucket): a contract's boundary there is
# (its coefficients x its powers of sqrt(T / T_bucket)) @ _POWERS.
_POWERS = _LEFT[None, :] ** np.arange(DEGREE + 1)[:, None]
# Contracts per block of a pass: its (contracts x points) arrays stay in the core's
# cache, and its matrix products stay below OpenBLAS's threading threshold (on a
# shared machine, BLAS threads spinning beside the event loop cost more than they give).
_BLOCK = 512


def _f64(a: ArrayLike) -> F64:
    return np.asarray(a, dtype=np.float64)


class _PutForm(NamedTuple):
    """Contracts as puts (calls by symmetry)."""

    s: F64
    k: F64
    r: F64
    q: F64
    early: B8  # early exercise may be optimal


def _as_puts(c: B8, s: F64, k: F64, r: F64, q: F64) -> _PutForm:
    ps, pk = np.where(c, k, s), np.where(c, s, k)
    pr, pq = np.where(c, q, r), np.where(c, r, q)
    # r <= 0 with r <= q: never exercised early. r < 0 with q < r (two boundaries) is
    # outside this model and priced European too.
    return _PutForm(ps, pk, pr, pq, pr > 0)


def _negligible(pf: _PutForm, t: F64, sig: F64, vega: F64) -> B8:
    """Where the premium is bounded below NEGLIGIBLE x vega (vega per unit of vol).

    With the boundary at xmax or below, the premium is at most
    r K integral_0^T N(-d2(S, xmax, t)) dt <= r K T N(-(L + min(mu, 0) T) / (sigma sqrt T)),
    L = ln(S / xmax), mu = r - q - sigma^2 / 2; the bound grows with sigma.
    """
    cap = pf.k * exercise_cap(pf.r, pf.q)
    mu = np.minimum(pf.r - pf.q - 0.5 * sig * sig, 0.0)
    d = (np.log(pf.s / cap) + mu * t) / (sig * np.sqrt(t))
    out: B8 = pf.r * pf.k * t * ndtr(-d) < NEGLIGIBLE * vega
    return out


class _Contracts(NamedTuple):
    """Contracts priced with a premium, in put form, with what that needs besides sigma."""

    s: F64
    k: F64
    t: F64
    r: F64
    q: F64
    gid: INTP  # boundary table group
    alpha_pow: F64  # (m, degree + 1): powers of sqrt(T / T_bucket)
    ln_sx: F64  # ln(S / xmax): the log distance to the boundary at expiry
    qx: F64  # q xmax


def _contracts(s: F64, k: F64, t: F64, r: F64, q: F64) -> _Contracts:
    b = bucket_of(t)
    alpha = np.sqrt(t / bucket_years(b))
    alpha_pow = np.cumprod(np.repeat(alpha[:, None], DEGREE + 1, axis=1), axis=1) / alpha[:, None]
    xmax = k * exercise_cap(r, q)
    gid = TABLES.group_ids(r, q, b)
    return _Contracts(s, k, t, r, q, gid, alpha_pow, np.log(s / xmax), q * xmax)


def _take(ct: _Contracts, rows: INTP) -> _Contracts:
    return _Contracts._make(a[rows] for a in ct)


class _Premium(NamedTuple):
    """The premium of puts and its derivatives."""

    value: F64
    d_sig: F64  # with the boundary's dependence on sigma
    d_s: F64  # in the put's spot (the boundary does not depend on it)
    d_ss: F64
    d_r: F64  # in the put's rate, boundary held fixed
    d_q: F64  # in the put's dividend yield, boundary held fixed
    ln_sb: F64  # ln(S / B(T)): at or below 0 exercise is optimal now
    d_ln_sb: F64  # its derivative in sigma
    f_l: F64  # (m, points): d f / d ln(S / B) at each point, for rho's boundary part
    sh: F64  # (m, points): ln(xmax / B) at each point


def _empty_premium(n: int) -> _Premium:
    return _Premium(*(np.full(n, np.nan) for _ in range(8)),
                    *(np.full((n, PREMIUM_POINTS), np.nan) for _ in range(2)))  # fmt: skip


def _unset_premium(n: int) -> _Premium:
    """`_empty_premium` with its columns unset (np.empty): for a pass that fills them."""
    return _Premium(*(np.empty(n) for _ in range(8)),
                    *(np.empty((n, PREMIUM_POINTS)) for _ in range(2)))  # fmt: skip


def _premium(ct: _Contracts, sig: F64, greeks: bool = True) -> _Premium:
    """The early-exercise premium of puts `ct` at `sig` (within the tables' range).

    Without `greeks`, only the value, d_sig and ln_sb (the rest NaN).
    """
    n = len(sig)
    out = _unset_premium(n) if greeks else _empty_premium(n)
    first, weights = h_weights(np.log(sig))
    for start in range(0, n, _BLOCK):
        part = slice(start, start + _BLOCK)
        # Per block, so that the table rows gathered for its contracts stay in cache.
        both = TABLES.combine(ct.gid[part], (first[part], weights[part]))
        both *= ct.alpha_pow[part, None, :]
        # The boundary now, at tau = T: w = sqrt(T / T_bucket), where ch sums to h.
        sh = np.sqrt(np.maximum(both[:, 0].sum(axis=1), 0.0))
        out.ln_sb[part] = ct.ln_sx[part] + sh
        out.d_ln_sb[part] = both[:, 1].sum(axis=1) / (2.0 * sh * sig[part])
        h, dh = np.matmul(both.transpose(1, 0, 2), _POWERS)
        _premium_block(_take_slice(ct, part), sig[part], h, dh, out, part, greeks)
    return out


def _premium_value(ct: _Contracts, sig: F64) -> F64:
    """The premium alone (`_premium(ct, sig).value` at a third of the work)."""
    n = len(sig)
    out = np.empty(n)
    ln_sig = np.log(sig)
    ch = TABLES.h_coefficients(ct.gid, ln_sig, stencil_weights(ln_sig))
    ch *= ct.alpha_pow
    for start in range(0, n, _BLOCK):
        part = slice(start, start + _BLOCK)
        t, s, k, r, q = (a[part] for a in (ct.t, ct.s, ct.k, ct.r, ct.q))
        sh = np.sqrt(np.maximum(ch[part] @ _POWERS, 0.0))
        v = (sig[part] * np.sqrt(t))[:, None] * _ZP
        tt = t[:, None] * _ZP2
        dp = (r - q)[:, None] * tt
        dp += ct.ln_sx[part, None]
        dp += sh
        dp /= v
        dp += 0.5 * v
        dm = dp - v
        np.negative(dm, out=dm)
        nm = ndtr(dm, out=dm)
        nm *= np.exp(-r[:, None] * tt)
        np.negative(dp, out=dp)
        nd = ndtr(dp, out=dp)
        nd *= np.exp(-q[:, None] * tt)
        out[part] = t * (r * k * (nm @ _WT) - q * s * (nd @ _WT))
    return out


def _take_slice(ct: _Contracts, part: slice) -> _Contracts:
    return _Contracts._make(a[part] for a in ct)


def _premium_block(
    ct: _Contracts, sig: F64, h: F64, dh: F64, out: _Premium, part: slice, greeks: bool
) -> None:  # fmt: skip
    """One block of `_premium`: h = ln(B / xmax)^2 and dh / d ln sigma at the points.

    With dm, dp the d's of the put struck at the boundary B(T - t) at time t from
    now, the premium is the integral of f = r K e^{-rt} N(-dm) - q S e^{-qt} N(-dp);
    its derivatives use S e^{-qt} phi(dp) = B e^{-rt} phi(dm). The weights of the
    points are t x _WT, so every integral is a product with a constant vector:
    the integrands go into one buffer and one matrix product sums them all.
    """
    m = len(sig)
    np.maximum(h, 0.0, out=h)
    sh = np.sqrt(h)
    # d sqrt(h) / d sigma (h and sqrt(h) vanish together at expiry).
    dsh = np.divide(dh, sh, out=dh, where=sh > 0)
    dsh[sh <= 0] = 0.0
    dsh *= (0.5 / sig)[:, None]
    t, s, k, r, q = ct.t, ct.s, ct.k, ct.r, ct.q
    v = (sig * np.sqrt(t))[:, None] * _ZP
    tt = t[:, None] * _ZP2
    qb = np.exp(-sh)
    qb *= ct.qx[:, None]  # q B(T - t)
    dp = (r - q)[:, None] * tt
    dp += ct.ln_sx[:, None]
    dp += sh  # ln(S / B) + (r - q) t
    dp /= v
    dp += 0.5 * v
    dm = dp - v
    er = np.exp(-r[:, None] * tt)
    # The integrands, weighted by _WT below: e^{-rt} N(-dm), e^{-qt} N(-dp), f_l =
    # d f / d ln(S / B), phi(dm) e^{-rt} (r K dp - q B dm), f_l dsh; with the greeks,
    # phi(dm) e^{-rt} q B / v and f_l dm / v too.
    rows = 7 if greeks else 5
    buf = np.empty((rows, m, PREMIUM_POINTS))
    er_nm, eq_nd, f_l, sig_part, f_dsh = buf[:5]
    np.negative(dm, out=er_nm)
    ndtr(er_nm, out=er_nm)
    er_nm *= er
    np.negative(dp, out=eq_nd)
    ndtr(eq_nd, out=eq_nd)
    eq_nd *= np.exp(-q[:, None] * tt)
    a = np.square(dm)
    a *= -0.5
    np.exp(a, out=a)
    a *= er
    a *= _INV_SQRT_2PI  # e^{-rt} phi(dm)
    rk = (r * k)[:, None]
    np.subtract(qb, rk, out=f_l)
    f_l *= a
    f_l /= v
    np.multiply(rk, dp, out=sig_part)
    sig_part -= qb * dm
    sig_part *= a
    np.multiply(f_l, dsh, out=f_dsh)
    if greeks:
        ss_a, ss_b = buf[5:]
        np.multiply(qb, a, out=ss_a)
        ss_a /= v
        np.divide(dm, v, out=ss_b)
        ss_b *= f_l
    sums = (buf.reshape(rows * m, PREMIUM_POINTS) @ _WT).reshape(rows, m) * t
    s_er, s_eq, s_l, s_sig, s_dsh = sums[:5]
    out.value[part] = r * k * s_er - q * s * s_eq
    out.d_sig[part] = s_sig / sig + s_dsh
    if not greeks:
        return
    s_ssa, s_ssb = sums[5:]
    # The rate and dividend derivatives also need the integrals weighted by t.
    t_er, t_eq, t_l = (buf[:3].reshape(3 * m, PREMIUM_POINTS) @ _WTT).reshape(3, m) * (t * t)
    out.d_s[part] = s_l / s - q * s_eq
    out.d_ss[part] = (s_ssa - s_l - s_ssb) / (s * s)
    out.d_r[part] = k * (s_er - r * t_er) + t_l
    out.d_q[part] = -s * (s_eq - q * t_eq) - t_l
    out.f_l[part] = f_l
    out.sh[part] = sh


def _european(c: B8, s: F64, k: F64, t: F64, r: F64, q: F64, sig: F64) -> tuple[F64, F64]:
    """European price and vega (per unit of volatility), t > 0 and sigma > 0."""
    sd = sig * np.sqrt(t)
    d1 = (np.log(s / k) + (r - q) * t) / sd + 0.5 * sd
    d2 = d1 - sd
    sign = np.where(c, 1.0, -1.0)
    fs, fk = s * np.exp(-q * t), k * np.exp(-r * t)
    price = sign * (fs * ndtr(sign * d1) - fk * ndtr(sign * d2))
    vega = fs * _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1) * np.sqrt(t)
    return price, vega


class _Inputs(NamedTuple):
    """Flattened, broadcast inputs: calls, spot, strike, time, rate, dividend, last column."""

    c: B8
    s: F64
    k: F64
    t: F64
    r: F64
    q: F64
    x: F64  # sigma, or the price
    shape: tuple[int, ...]


def _inputs(is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike,
            q: ArrayLike, x: ArrayLike) -> _Inputs:  # fmt: skip
    arrays = np.broadcast_arrays(
        np.asarray(is_call, dtype=bool), _f64(s), _f64(k), _f64(t), _f64(r), _f64(q), _f64(x)
    )
    c, s_, k_, t_, r_, q_, x_ = (np.ravel(a) for a in arrays)
    return _Inputs(c, s_, k_, t_, r_, q_, x_, arrays[0].shape)


def _parts(inp: _Inputs) -> list[INTP] | None:
    """The rows of `inp` in parts of at most an eighth of the tables' capacity in
    (rate, dividend, time bucket) groups each, or None where they fit one call (the
    usual case).

    A call's own groups and rho's four shifted ones per group must fit the tables
    together: past that, a call would start the tables again halfway or not fit.
    """
    most = TABLES.capacity // 8
    live = inp.t > 0
    b = np.where(live, bucket_of(np.where(live, inp.t, 1.0)), 0)
    # In put form (a call's r and q swapped), as the tables hold them.
    uniq, inverse = group_index(np.where(inp.c, inp.q, inp.r), np.where(inp.c, inp.r, inp.q), b)
    if len(uniq) <= most:
        return None
    part = inverse // most
    return [np.flatnonzero(part == j) for j in range(int(part.max()) + 1)]


def _in_parts(
    inp: _Inputs, start: F64, solve: Callable[[_Inputs, F64], list[F64]]
) -> list[F64]:  # fmt: skip
    """`solve(inp, start)`, called once per part of `_parts` and put back together."""
    parts = _parts(inp)
    if parts is None:
        return solve(inp, start)
    out: list[F64] = []
    c, s, k, t, r, q, x, _ = inp
    for rows in parts:
        sub = _Inputs(c[rows], s[rows], k[rows], t[rows], r[rows], q[rows], x[rows], (len(rows),))
        got = solve(sub, start[rows])
        out = out or [np.full(len(inp.x), np.nan) for _ in got]
        for col, val in zip(out, got, strict=True):
            col[rows] = val
    return out


def _start(guess: ArrayLike | None, shape: tuple[int, ...]) -> F64:
    """Where each search starts (NaN: no guess), flat."""
    return np.ravel(np.broadcast_to(_f64(np.nan if guess is None else guess), shape)).copy()


def american_price(
    is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    sigma: ArrayLike,
) -> F64:  # fmt: skip
    """American prices; arguments broadcast together.

    At `t <= 0` or `sigma <= 0` the price is the intrinsic value max(S - K, 0) or
    max(K - S, 0); NaN inputs give NaN, and so does a volatility above SIGMA_MAX
    (100) or below SIGMA_MIN (1e-4) where early exercise matters.
    """
    inp = _inputs(is_call, s, k, t, r, q, sigma)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        (out,) = _in_parts(inp, inp.x, lambda part, _: [_price(part)])
    return out.reshape(inp.shape)


def _price(inp: _Inputs) -> F64:
    c, s_, k_, t_, r_, q_, v_, _ = inp
    pf = _as_puts(c, s_, k_, r_, q_)
    out = bsm_price(c, s_, k_, t_, r_, q_, v_)
    live = (t_ > 0) & (v_ > 0) & (s_ > 0) & (k_ > 0)
    am, bad = _american_rows(pf, t_, v_, live)
    out[bad] = np.nan
    if len(am):
        ct = _contracts(pf.s[am], pf.k[am], t_[am], pf.r[am], pf.q[am])
        prem = _premium_value(ct, v_[am])
        out[am] = np.maximum(np.maximum(out[am], 0.0) + np.maximum(prem, 0.0), ct.k - ct.s)
    intrinsic = np.maximum(pf.k - pf.s, 0.0)
    out = np.where(live | np.isnan(v_) | np.isnan(t_), out, intrinsic)
    return out


def _american_rows(pf: _PutForm, t: F64, sig: F64, live: B8) -> tuple[INTP, INTP]:
    """(rows priced with a premium, rows with a volatility outside the tables)."""
    rows = np.flatnonzero(live & pf.early)
    inside = (sig[rows] >= SIGMA_MIN) & (sig[rows] <= SIGMA_MAX)
    bad, rows = rows[~inside], rows[inside]
    sub = _PutForm._make(a[rows] for a in pf)
    vega = _european(np.zeros(len(rows), dtype=np.bool_), sub.s, sub.k, t[rows], sub.r,
                     sub.q, sig[rows])[1]  # fmt: skip
    return rows[~_negligible(sub, t[rows], sig[rows], vega)], bad


def american_greeks(
    is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    sigma: ArrayLike,
) -> Greeks:  # fmt: skip
    """Greeks of the American price at `sigma`; NaN where `sigma` or `t` is not positive.

    European greeks plus the premium's: delta and gamma in the spot over the
    boundary (which does not depend on the spot), vega and rho with the boundary's
    own dependence on sigma and r; theta from the Black-Scholes equation
    (theta = rV - (r - q) S delta - sigma^2 S^2 gamma / 2); where exercise is
    optimal, those of the intrinsic value. Units as `bsm_greeks`.
    """
    inp = _inputs(is_call, s, k, t, r, q, sigma)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        g = _in_parts(inp, inp.x, lambda part, _: _greeks(part))
    return Greeks(*(a.reshape(inp.shape) for a in g))


def _greeks(inp: _Inputs) -> list[F64]:
    c, s_, k_, t_, r_, q_, v_, _ = inp
    pf = _as_puts(c, s_, k_, r_, q_)
    live = (t_ > 0) & (v_ > 0) & (s_ > 0) & (k_ > 0) & np.isfinite(r_ + q_)
    am, bad = _american_rows(pf, t_, v_, live)
    ct = _contracts(pf.s[am], pf.k[am], t_[am], pf.r[am], pf.q[am])
    prem = _premium(ct, v_[am])
    g = _assemble(inp, pf, v_, am, ct, prem)
    for col in g:
        col[bad] = np.nan
    return g


def greeks_by_exercise(
    is_call: NDArray[np.bool_], s: F64, k: F64, t: F64, r: F64, q: F64, sigma: F64,
    american: NDArray[np.bool_],
) -> Greeks:  # fmt: skip
    """Greeks at `sigma` of each row by its exercise style: `american_greeks` for the
    American rows (European greeks plus the premium's), `bsm_greeks` for the others.
    One-dimensional arrays of one length."""
    args = (is_call, s, k, t, r, q, sigma)
    return Greeks(*_by_exercise(american_greeks, bsm_greeks, american, args, outputs=5))


def price_by_exercise(
    is_call: NDArray[np.bool_], s: F64, k: F64, t: F64, r: F64, q: F64, sigma: F64,
    american: NDArray[np.bool_],
) -> F64:  # fmt: skip
    """Prices at `sigma` of each row by its exercise style (`american_price`,
    `bsm_price`), one call per style. One-dimensional arrays of one length."""
    args = (is_call, s, k, t, r, q, sigma)
    (out,) = _by_exercise(lambda *a: (american_price(*a),), lambda *a: (bsm_price(*a),),
                          american, args, outputs=1)  # fmt: skip
    return out


def _by_exercise(
    am: Callable[..., tuple[F64, ...]], eu: Callable[..., tuple[F64, ...]], american: B8,
    args: tuple[B8, F64, F64, F64, F64, F64, F64], outputs: int,
) -> list[F64]:  # fmt: skip
    """`am(*args)` on the American rows and `eu(*args)` on the others, put together
    (`outputs` arrays; NaN where neither gave a value)."""
    out = [np.full(len(american), np.nan) for _ in range(outputs)]
    for rows, model in ((np.flatnonzero(american), am), (np.flatnonzero(~american), eu)):
        if len(rows):
            for col, val in zip(out, model(*(a[rows] for a in args)), strict=True):
                col[rows] = val
    return out


def american_implied_vol(
    price: ArrayLike, is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike,
    r: ArrayLike, q: ArrayLike, guess: ArrayLike | None = None, warm: Warm | None = None,
) -> F64:  # fmt: skip
    """Implied volatility of American `price`; arguments broadcast together.

    NaN where no volatility in [IV_MIN, IV_MAX] reproduces the price: at or below
    the intrinsic value, at or above the upper bound (the spot for a call, the
    strike for a put), `t <= 0`, or any input not a positive number. `guess` and
    `warm` as in `american_iv_greeks_warm`; no greeks are computed.
    """
    inp = _inputs(is_call, s, k, t, r, q, price)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        (iv,) = _in_parts(inp, _warm_start(inp, _start(guess, inp.shape), warm),
                          lambda part, start: [_american_iv(part, start, greeks=False)[0]])  # fmt: skip
    return iv.reshape(inp.shape)


def american_iv_and_greeks(
    price: ArrayLike, is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike,
    r: ArrayLike, q: ArrayLike, guess: ArrayLike | None = None, warm: Warm | None = None,
) -> tuple[F64, Greeks]:  # fmt: skip
    """Implied volatility of American `price` and the greeks at it (NaN where the IV is NaN).

    `american_iv_greeks_warm` without the state it leaves.
    """
    iv, g, _ = american_iv_greeks_warm(price, is_call, s, k, t, r, q, guess, warm)
    return iv, g


def american_iv_greeks_warm(
    price: ArrayLike, is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike,
    r: ArrayLike, q: ArrayLike, guess: ArrayLike | None = None, warm: Warm | None = None,
) -> tuple[F64, Greeks, Warm]:  # fmt: skip
    """(IV, greeks at it, where each search ended) of American `price`.

    As `american_implied_vol` and `american_greeks`, in one call: the greeks come
    from the solver's last pass. Where each search starts changes how fast the IV
    is found, not which: `guess` (NaN for none), e.g. the IV found for the same
    contract a moment ago, where it lies inside the search's bracket; better,
    `warm`, the state a call for the same contracts left (flat, in the order of the
    broadcast inputs), from which one step lands close enough that a single pass
    usually ends the search (`Warm`).
    """
    inp = _inputs(is_call, s, k, t, r, q, price)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        start = _warm_start(inp, _start(guess, inp.shape), warm)
        iv, *rest = _in_parts(inp, start, _iv_and_greeks)
    g = Greeks(*(a.reshape(inp.shape) for a in rest[:5]))
    return iv.reshape(inp.shape), g, Warm(*rest[5:])


class Warm(NamedTuple):
    """Where the American searches of contracts ended: the start of their next ones.

    Per contract (flat; NaN where no search ran): the volatility of the search's
    last pass, the spot then, and the early-exercise premium there with its
    derivatives in the volatility and the spot (the contract's own, not the put
    form's). The next search moves the premium to the spot of now (second order in
    the spot) and takes two European Newton steps on the European price plus the
    premium's tangent: where the quote moved by the usual tick, that lands within
    Newton's tolerance of the IV, so the first pass ends the search (a cold search
    needs two at least).
    A state from other inputs is a worse start, never a wrong answer.
    """

    sigma: F64
    spot: F64
    premium: F64
    d_sigma: F64
    d_s: F64
    d_ss: F64


def no_warm(n: int) -> Warm:
    """A `Warm` of `n` contracts with no state (each search starts as without one)."""
    return Warm(*(np.full(n, np.nan) for _ in range(6)))


def _warm_start(inp: _Inputs, start: F64, warm: Warm | None) -> F64:
    """`start`, with the step from `warm` where a contract has a state (flat)."""
    if warm is None:
        return start
    w = Warm(*(np.ravel(np.broadcast_to(_f64(a), inp.x.shape)) for a in warm))
    rows = np.flatnonzero(np.isfinite(w.sigma) & np.isfinite(w.premium))
    if len(rows) == 0:
        return start
    c = inp.c[rows]
    s, k, t, r, q, p = (a[rows] for a in (inp.s, inp.k, inp.t, inp.r, inp.q, inp.x))
    sig, spot, prem, d_sig, d_s, d_ss = (a[rows] for a in w)
    ds = s - spot
    prem = np.maximum(prem + ds * (d_s + 0.5 * ds * d_ss), 0.0)
    p_otm = p - np.maximum(np.where(c, s - k, k - s), 0.0)
    y = _tangent_step((c, s, k, t, r, q), p, p_otm, sig, sig, prem, d_sig, _WARM_STEPS)
    out = start.copy()
    out[rows] = np.where(np.isfinite(y), y, start[rows])
    return out


def _iv_and_greeks(inp: _Inputs, start: F64) -> list[F64]:
    """[IV, delta, gamma, theta, vega, rho, *Warm] of flat `inp` (prices), searches
    from `start`."""
    iv, pf, sel, ct, prem, last = _american_iv(inp, start, greeks=True)
    # The premium's parts come from the solver's last pass, at `last` (within
    # _NEWTON_TOL of the IV); the European ones are taken at the IV itself.
    found = np.flatnonzero(np.isfinite(iv[sel]))
    ct, prem, rows = _take(ct, found), _Premium._make(a[found] for a in prem), sel[found]
    g = _assemble(inp, pf, iv, rows, ct, prem)
    warm = no_warm(len(iv))
    d_s, d_ss = _own_spot_terms(ct, prem, inp.c[rows])
    for col, val in zip(warm, (last[found], inp.s[rows], prem.value, prem.d_sig, d_s, d_ss),
                        strict=True):  # fmt: skip
        col[rows] = val
    return [iv, *g, *warm]


def _american_iv(
    inp: _Inputs, start: F64, greeks: bool
) -> tuple[F64, _PutForm, INTP, _Contracts, _Premium, F64]:  # fmt: skip
    """(IV, put form, rows searched, their contracts, their premium at the last pass,
    the volatility of that pass).

    The searches start at `start` (flat; NaN: no guess). The premium's parts for
    the greeks only with `greeks` (else NaN).
    """
    c, s_, k_, t_, r_, q_, p, _ = inp
    iv = np.full(p.shape, np.nan)
    pf = _as_puts(c, s_, k_, r_, q_)
    intrinsic = np.maximum(pf.k - pf.s, 0.0)
    ok = (t_ > 0) & (s_ > 0) & (k_ > 0) & (p > intrinsic) & (p < pf.k) & np.isfinite(p)
    ok &= np.isfinite(r_) & np.isfinite(q_)
    iv[ok] = implied_vol(p[ok], c[ok], s_[ok], k_[ok], t_[ok], r_[ok], q_[ok])
    # The European IV bounds the American one from above; where the premium is
    # negligible even there, it is the American IV.
    sel = np.flatnonzero(ok & pf.early)
    sub = _PutForm._make(a[sel] for a in pf)
    top = np.clip(np.where(np.isfinite(iv[sel]), iv[sel], 1.0), IV_MIN, IV_MAX)
    vega = _european(c[sel], s_[sel], k_[sel], t_[sel], r_[sel], q_[sel], top)[1]
    negligible = np.isfinite(iv[sel]) & _negligible(sub, t_[sel], top, vega)
    # A price below the European one at IV_MIN (the discounted forward's
    # intrinsic value, for one) is below the American price at every volatility
    # searched: no IV, and no search walking down to IV_MIN pass after pass.
    low = np.flatnonzero(~(iv[sel] >= IV_MIN))  # few: priced at the floor only there
    rows = sel[low]
    floor = _european(c[rows], s_[rows], k_[rows], t_[rows], r_[rows], q_[rows],
                      np.full(len(rows), IV_MIN))[0]  # fmt: skip
    below = np.zeros(len(sel), dtype=np.bool_)
    below[low] = p[rows] < floor
    sel = sel[~negligible & ~below]
    ct = _contracts(pf.s[sel], pf.k[sel], t_[sel], pf.r[sel], pf.q[sel])
    iv[sel], last, prem = _solve(p[sel], c[sel], s_[sel], k_[sel], ct, iv[sel], start[sel], greeks)
    iv[(iv < IV_MIN) | (iv > IV_MAX)] = np.nan
    return iv, pf, sel, ct, prem, last


def _solve(
    p: F64, c: B8, s: F64, k: F64, ct: _Contracts, euro_iv: F64, guess: F64, greeks: bool
) -> tuple[F64, F64, _Premium]:  # fmt: skip
    """American IV by Newton's method with the American vega, bracketed.

    Returns the IV, the volatility of the last pass and the premium found there.
    The European IV `euro_iv` of the price bounds the American one from above (the
    American price A is at least the European), so Newton starts there, or at
    `guess` where that lies below it. The
    equation is sqrt(A - I) = sqrt(p - I), I the intrinsic value: near the money
    that is Newton on A, and deep in the money, where A - I grows like (sigma -
    sigma_b)^2 from the sigma_b below which exercise is optimal, it keeps Newton's
    speed; from a point where exercise is optimal (g is flat there) the step is
    Newton's on A, and back above the boundary it is on g again (staying with A
    there converged only linearly, as on a double root). Away from the boundary the
    step is `_tangent_step`'s. A step that would leave the bracket [lo, hi] known so
    far is a regula falsi step (Illinois), or a bisection in ln(sigma) while one end
    is unknown.
    """
    n = len(p)
    t, r, q = ct.t, np.where(c, ct.q, ct.r), np.where(c, ct.r, ct.q)
    out, last = np.full(n, np.nan), np.full(n, np.nan)
    found = _empty_premium(n)
    known = np.isfinite(euro_iv) & (euro_iv <= IV_MAX)
    hi = np.where(known, euro_iv, IV_MAX)
    lo = np.full(n, IV_MIN)
    # g = sqrt(A - I) - sqrt(p - I) at the ends, NaN while unknown (the upper end is
    # known to price at or above p when it is the European IV, by an amount not
    # known yet), or where exercise is optimal (g is flat there).
    g_lo, g_hi = np.full(n, np.nan), np.full(n, np.nan)
    x = np.where(known, hi, 0.5)
    x = np.where((guess > lo) & (guess < hi), guess, x)
    p_otm = p - np.maximum(ct.k - ct.s, 0.0)  # the price above the intrinsic value
    root_otm = np.sqrt(p_otm)
    moved = np.zeros(n, dtype=np.int8)  # the end moved last: -1 lo, +1 hi
    idx = np.arange(n)
    for _ in range(_IV_STEPS):
        if len(idx) == 0:
            break
        sub = _take(ct, idx)
        prem = _premium(sub, x, greeks)
        euro, vega = _european(c[idx], s[idx], k[idx], t[idx], r[idx], q[idx], x)
        fx = euro + np.maximum(prem.value, 0.0) - p[idx]
        above_i = np.sqrt(np.maximum(fx + p_otm[idx], 0.0))
        gx = above_i - root_otm[idx]
        above = fx > 0
        # Illinois: an end kept twice in a row has its g halved.
        g_lo = np.where(above & (moved == 1), 0.5 * g_lo, g_lo)
        g_hi = np.where(~above & (moved == -1), 0.5 * g_hi, g_hi)
        hi, g_hi = np.where(above, x, hi), np.where(above, gx, g_hi)
        lo = np.where(above, lo, x)
        g_lo = np.where(above, g_lo, np.where(above_i > 0, gx, np.nan))
        moved = np.where(above, 1, -1).astype(np.int8)
        flat = ~(above_i > 0)
        nxt = x - np.where(flat, fx, gx * 2.0 * above_i) / (vega + prem.d_sig)
        # Away from the boundary, the step that solves with the premium's tangent.
        tan = np.flatnonzero(~flat & (prem.ln_sb > _TANGENT_LN_SB))
        if len(tan):  # often none in the last passes, near the boundary
            rows = idx[tan]
            y = _tangent_step(
                (c[rows], s[rows], k[rows], t[rows], r[rows], q[rows]), p[rows], p_otm[rows],
                x[tan], nxt[tan], np.maximum(prem.value[tan], 0.0), prem.d_sig[tan],
            )  # fmt: skip
            nxt[tan] = np.where(np.isfinite(y), y, nxt[tan])
        nxt = _below_the_kink(x, nxt, fx, p_otm[idx], flat, prem)
        inside = np.isfinite(nxt) & (nxt > lo) & (nxt < hi)
        falsi = lo - g_lo * (hi - lo) / (g_hi - g_lo)
        use_falsi = ~inside & np.isfinite(falsi) & (falsi > lo) & (falsi < hi)
        nxt = np.where(inside, nxt, np.where(use_falsi, falsi, np.sqrt(lo * hi)))
        step = np.abs(nxt - x)
        # Ended: a small Newton step (near sigma_b, where convergence is only linear,
        # a very small one), a small bracketing step or bracket, or the price
        # matched to rounding.
        hit = np.abs(fx) <= np.where(p_otm[idx] < _WOBBLE * sub.k, _WOBBLE_TOL, _PRICE_TOL) * sub.k
        newton = inside & (step <= np.where(flat, _IV_TOL, _NEWTON_TOL))
        done = newton | hit | (step <= _IV_TOL) | (hi - lo <= _IV_TOL)
        # A root only where the price was matched, Newton converged, or the bracket
        # closed with both of its ends known.
        real = hit | newton | (step <= _IV_TOL) & use_falsi
        real |= (moved == -1) & np.isfinite(g_hi) | (moved == 1) & (lo > IV_MIN)
        d = np.flatnonzero(done)
        out[idx[d]] = np.where(real[d], np.where(hit[d], x[d], nxt[d]), np.nan)
        last[idx[d]] = x[d]
        if greeks:
            for col, val in zip(found, prem, strict=True):
                col[idx[d]] = val[d]
        keep = ~done
        idx, lo, hi, g_lo, g_hi, moved, x = (a[keep] for a in (idx, lo, hi, g_lo, g_hi, moved, nxt))
    return out, last, found


def _below_the_kink(x: F64, nxt: F64, fx: F64, p_otm: F64, flat: B8, prem: _Premium) -> F64:
    """`nxt`, or where a step from above the price would land where exercise is
    optimal, the root of a model of the price's kink.

    Deep in the money the price above the intrinsic value, A - I, is 0 below the
    volatility sigma_b at which the boundary reaches the spot and grows like
    c (sigma - sigma_b)^2 above it. From well above, a step on sqrt(A - I) crosses
    sigma_b and lands on the flat part, which tells little (searches that did so
    took up to 19 passes). sigma_b is estimated from ln(S / B) and its derivative
    in sigma, and the step goes to sigma_b + (x - sigma_b) sqrt((p - I) / (A - I)),
    the root of that model through the current point (between sigma_b and x).
    """
    sig_b = x - prem.ln_sb / prem.d_ln_sb
    kink = (fx > 0) & ~flat & (prem.ln_sb > 0) & (prem.d_ln_sb > 0) & (sig_b < x) & (nxt < sig_b)
    root = sig_b + (x - sig_b) * np.sqrt(p_otm / np.maximum(fx + p_otm, 1e-300))
    out: F64 = np.where(kink, root, nxt)
    return out


def _tangent_step(
    contracts: tuple[B8, F64, F64, F64, F64, F64], p: F64, p_otm: F64, x: F64, y: F64,
    prem: F64, d_prem: F64, steps: int = _TANGENT_STEPS,
) -> F64:  # fmt: skip
    """The volatility where the European price plus the premium's tangent at `x`
    (value `prem`, slope `d_prem`) is `p`, by Newton steps from `y` (Newton's point).

    Where the premium bends less than the European price does in sigma (most
    contracts, away from the boundary), this lands much closer to the American IV
    than Newton's step on the whole price (about half as many contracts need a third
    premium pass from the European IV); the European price is cheap to iterate on
    (no table, no quadrature). On sqrt(price - intrinsic), as the search is.
    """
    c, s, k, t, r, q = contracts
    root = np.sqrt(p_otm)
    for _ in range(steps):
        euro, vega = _european(c, s, k, t, r, q, np.clip(y, IV_MIN, IV_MAX))
        above = np.sqrt(np.maximum(euro + prem + d_prem * (y - x) - p + p_otm, 0.0))
        y = y - (above - root) * 2.0 * above / (vega + d_prem)
    return y


def _assemble(
    inp: _Inputs, pf: _PutForm, sig: F64, rows: INTP, ct: _Contracts, prem: _Premium
) -> list[F64]:  # fmt: skip
    """Greeks: European at `sig` everywhere, plus the premium's `prem` at `rows`."""
    c, s, k, t, r, q = inp.c, inp.s, inp.k, inp.t, inp.r, inp.q
    out = list(bsm_greeks(c, s, k, t, r, q, sig))
    if len(rows) == 0:
        return out
    cs = c[rows]
    ss, ks, ts, rs, qs, vs = (a[rows] for a in (s, k, t, r, q, sig))
    value = bsm_price(cs, ss, ks, ts, rs, qs, vs) + np.maximum(prem.value, 0.0)
    exercised = prem.ln_sb <= 0.0
    value = np.maximum(value, ct.k - ct.s)
    d_s, d_ss = _own_spot_terms(ct, prem, cs)
    delta = out[0][rows] + d_s
    gamma = out[1][rows] + d_ss
    theta = rs * value - (rs - qs) * ss * delta - 0.5 * vs * vs * ss * ss * gamma
    vega = out[3][rows] + prem.d_sig / 100.0
    rho = out[4][rows] + _premium_rho(ct, vs, prem, cs) / 100.0
    # Where exercise is optimal, the intrinsic value's: delta +-1, the rest 0.
    out[0][rows] = np.where(exercised, np.where(cs, 1.0, -1.0), delta)
    for col, val in zip(out[1:], (gamma, theta / 365.0, vega, rho), strict=True):
        col[rows] = np.where(exercised, 0.0, val)
    return out


def _own_spot_terms(ct: _Contracts, prem: _Premium, c: B8) -> tuple[F64, F64]:
    """The premium's first and second derivatives in the contract's own spot.

    From the put form's: a call's spot is its put form's strike, and by homogeneity
    (P(K, S) is of degree one in (S, K)) dP/dK = (P - S dP/dS) / K.
    """
    d_s = np.where(c, (prem.value - ct.s * prem.d_s) / ct.k, prem.d_s)
    d_ss = np.where(c, prem.d_ss * (ct.s / ct.k) ** 2, prem.d_ss)
    return d_s, d_ss


def _premium_rho(ct: _Contracts, sig: F64, prem: _Premium, c: B8) -> F64:
    """d premium / d r of the contract (a call's r is its put form's q), per unit of rate.

    The boundary's part is a central difference of the tables at the rate moved by
    +-_H_RATE (forward from the premium's own boundary where the put form's rate is
    too small to step down), from one lookup of the two tables' difference.
    """
    up_r = np.where(c, ct.r, ct.r + _H_RATE)
    up_q = np.where(c, ct.q + _H_RATE, ct.q)
    central = c | (ct.r > 2.0 * _H_RATE)
    down_r = np.where(c | ~central, ct.r, ct.r - _H_RATE)
    down_q = np.where(c, ct.q - _H_RATE, ct.q)
    ln_sig = np.log(sig)
    up, down = _shifted_groups(ct.gid, c)
    d_ln_cap = np.log(exercise_cap(up_r, up_q)) - np.log(exercise_cap(down_r, down_q))
    stencil = stencil_weights(ln_sig)
    dh = np.empty((len(sig), PREMIUM_POINTS))
    for start in range(0, len(sig), _BLOCK):
        # Per block, so that the gathered table rows stay in cache.
        part = slice(start, start + _BLOCK)
        dc = TABLES.h_difference(up[part], down[part], ln_sig[part],
                                 (stencil[0][part], stencil[1][part]))  # fmt: skip
        dc *= ct.alpha_pow[part]
        np.matmul(dc, _POWERS, out=dh[part])
    # sqrt(h_up) - sqrt(h_down) = dh / (sqrt(h_up) + sqrt(h_down)); the sum is
    # 2 sqrt(h) to O(step^2) where the difference is central, and
    # sqrt(h + dh) + sqrt(h) where it steps forward from the premium's own h.
    den = 2.0 * prem.sh
    fwd = np.flatnonzero(~central)
    sh = prem.sh[fwd]
    den[fwd] = np.sqrt(np.maximum(sh * sh + dh[fwd], 0.0)) + sh
    d_ln_b = np.divide(dh, den, out=dh, where=den > 0)
    d_ln_b[den <= 0] = 0.0
    np.subtract(d_ln_cap[:, None], d_ln_b, out=d_ln_b)
    # d premium / d ln B(point) = -weight x f_l
    d_ln_b *= prem.f_l
    d_ln_b_sum = d_ln_b @ _WT
    width = np.where(central, 2.0 * _H_RATE, _H_RATE)
    out: F64 = np.where(c, prem.d_q, prem.d_r) - d_ln_b_sum * ct.t / width
    return out


def _shifted_groups(gid: INTP, c: B8) -> tuple[INTP, INTP]:
    """The table groups of rho's differences, per contract: the rate moved up, down.

    The put form's rate moves for puts, its dividend for calls; a put whose rate is
    too small to step down keeps its own group (`_premium_rho` steps forward there).
    Found per distinct group (a handful), not per contract, and kept per group
    while the tables' ids last.
    """
    present = np.flatnonzero(np.bincount(gid))
    keys, memo = present.tolist(), TABLES.memo
    if all(g in memo for g in keys):
        table = np.array([memo[g] for g in keys], dtype=np.intp).reshape(-1, 4)
    else:
        r, q, b = TABLES.keys(present)
        # Rows: call up, call down, put up, put down, per present group. All of them
        # in one call: one that starts the tables again leaves no stale ids.
        central = r > 2.0 * _H_RATE
        rr = np.concatenate([r, r, r + _H_RATE, np.where(central, r - _H_RATE, r)])
        qq = np.concatenate([q + _H_RATE, q - _H_RATE, q, q])
        table = TABLES.group_ids(rr, qq, np.tile(b, 4)).reshape(4, len(present)).T
        if TABLES.memo is memo:  # else `present` are ids of tables since cleared
            memo.update(zip(keys, map(tuple, table.tolist()), strict=True))
    at = np.searchsorted(present, gid)
    up = np.where(c, table[at, 0], table[at, 2])
    down = np.where(c, table[at, 1], table[at, 3])
    return up, down
