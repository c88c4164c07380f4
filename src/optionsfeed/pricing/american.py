"""American option prices, implied volatility and greeks, vectorized with NumPy.

The model is Andersen, Lake and Offengeld's ("High-performance American option
pricing", 2016): the put's early-exercise boundary B(tau) solves an integral
equation, which is iterated to its fixed point at a few Chebyshev nodes in sqrt(tau)
(started from the QD+ approximation of Li, 2010), and the price is the European
price plus the early-exercise premium, an integral over that boundary. Calls are
priced as puts by McDonald-Schroder symmetry, C(S, K, r, q) = P(K, S, q, r).

Everything is an array over contracts: the nodes and quadrature points sit at the
same place for every contract in normalized time, so interpolating the boundary is
one matrix product with a constant matrix, and a whole chain costs a few dozen
array operations per boundary iteration.

Where early exercise is never optimal (a put with r <= 0 and r <= q, a call with
q <= 0 and q <= r) the American price is the European one and is computed as such.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.polynomial import chebyshev, legendre
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from . import Greeks, bsm_greeks, bsm_price, implied_vol

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
IV_MIN, IV_MAX = 1e-3, 10.0  # the volatilities the solver searches
_IV_TOL = 1e-7  # volatility tolerance of the solver (the model is accurate to about 1e-5)
_IV_STEPS = 30


class Scheme(NamedTuple):
    """The size of the ALO discretization.

    `nodes` Chebyshev intervals of the boundary, `quad` Gauss-Legendre points of
    each fixed-point integral, `steps` fixed-point iterations (the first a
    Jacobi-Newton step), `price_quad` Gauss-Legendre points of the premium.
    """

    nodes: int
    quad: int
    steps: int
    price_quad: int


# Measured against QuantLib (docs/conventions.md): within 1e-4 of volatility on the test grid.
DEFAULT_SCHEME = Scheme(nodes=8, quad=12, steps=4, price_quad=24)


class _Geometry(NamedTuple):
    z: F64  # Chebyshev nodes in [-1, 1] (n + 1 of them); sqrt(tau / T) = (1 + z) / 2
    frac: F64  # tau_i / T at the nodes i = 1..n
    u: F64  # (n, l) quadrature points u / tau_i in (0, 1) of the fixed-point integrals
    w: F64  # (l,) their weights on [0, 1]
    mq: F64  # (n + 1, n * l): boundary values at the nodes -> at the quadrature points
    zp: F64  # (p,) premium quadrature points as sqrt(t / T) in (0, 1)
    wp: F64  # (p,) their weights on [0, 1]
    mp: F64  # (n + 1, p): boundary values at the nodes -> at T - t of the premium points


_GEOMETRY: dict[Scheme, _Geometry] = {}


def _interp_matrix(z: F64, at: F64) -> F64:
    """M such that values at Chebyshev nodes `z` times M are the interpolant at `at`."""
    n = len(z) - 1
    inv = np.linalg.inv(chebyshev.chebvander(z, n))
    out: F64 = (chebyshev.chebvander(at, n) @ inv).T
    return out


def _geometry(scheme: Scheme) -> _Geometry:
    g = _GEOMETRY.get(scheme)
    if g is not None:
        return g
    n = scheme.nodes
    z = -np.cos(np.arange(n + 1) * math.pi / n)
    frac = ((1.0 + z[1:]) / 2.0) ** 2
    # Both integrals in an angle, u = sin^2(phi) of the interval: it takes away the
    # square-root behaviour of the boundary near expiry and of the integrands at the
    # interval's far end, so Gauss-Legendre converges fast.
    x, w = legendre.leggauss(scheme.quad)
    phi = math.pi / 4.0 * (x + 1.0)
    u = np.broadcast_to(np.sin(phi) ** 2, (n, scheme.quad)).copy()
    w = math.pi / 4.0 * w * np.sin(2.0 * phi)
    # A quadrature point u tau_i sits at sqrt(u tau_i / T) = sqrt(u) (1 + z_i) / 2.
    at = np.sqrt(u) * ((1.0 + z[1:]) / 2.0)[:, None] * 2.0 - 1.0
    mq = _interp_matrix(z, at.ravel())
    xp, wp = legendre.leggauss(scheme.price_quad)
    phip = math.pi / 4.0 * (xp + 1.0)
    zp = np.sin(phip)
    wp = math.pi / 4.0 * wp * np.cos(phip)
    mp = _interp_matrix(z, 2.0 * np.cos(phip) - 1.0)
    g = _Geometry(z, frac, u, w, mq, zp, wp, mp)
    _GEOMETRY[scheme] = g
    return g


def _f64(a: ArrayLike) -> F64:
    return np.asarray(a, dtype=np.float64)


class _Boundary(NamedTuple):
    """A put's exercise boundary: B(tau) = xmax exp(-sqrt(h(tau))), h at the nodes."""

    xmax: F64  # (m,)
    h: F64  # (m, n + 1)


def _qd_plus(k: F64, t: F64, r: F64, q: F64, sig: F64, xmax: F64) -> F64:
    """QD+ boundary at times `t` (m, n): the starting point of the fixed-point iteration.

    Halley steps on Li's equation from `xmax`, clamped to (0, xmax].
    """
    s2 = sig * sig
    v = sig * np.sqrt(t)
    dr, dq = np.exp(-r * t), np.exp(-q * t)
    om = 2.0 * (r - q) / s2
    root = np.sqrt((om - 1.0) ** 2 + 8.0 * r / (s2 * (1.0 - dr)))
    lam = 0.5 * (-(om - 1.0) - root)
    lam_p = 2.0 * r / (s2 * (1.0 - dr) ** 2 * root)
    alpha = 2.0 * dr * r / (s2 * (2.0 * lam + om - 1.0))
    beta = alpha * (1.0 / (1.0 - dr) + lam_p / (2.0 * lam + om - 1.0)) - lam
    a_rdr = alpha / (r * dr)
    lo = 1e-10 * xmax
    x = np.broadcast_to(xmax, t.shape).copy()
    for _ in range(8):  # a starting point only: the fixed-point steps refine it
        dp = np.log(x * dq / (k * dr)) / v + 0.5 * v
        dm = dp - v
        n_dp, n_dm = ndtr(-dp), ndtr(-dm)
        phi = _INV_SQRT_2PI * np.exp(-0.5 * dp * dp)
        npv = dr * k * n_dm - x * dq * n_dp
        theta = r * k * dr * n_dm - q * x * dq * n_dp - s2 * x / (2.0 * v) * dq * phi
        charm = -dq * (phi * ((r - q) / v - dm / (2.0 * t)) + q * n_dp)
        f = (1.0 - dq * n_dp) * x - beta * (k - x - npv) + a_rdr * theta
        f1 = 1.0 - dq * n_dp + dq / v * phi + beta * (1.0 - dq * n_dp) + a_rdr * charm
        gamma = phi * dq / (v * x)
        colour = gamma * (q + (r - q) * dp / v + (1.0 - dp * dm) / (2.0 * t))
        f2 = dq * (phi / (x * v) - phi * dp / (x * v * v)) + beta * gamma + a_rdr * colour
        step = f / f1 / (1.0 - 0.5 * f * f2 / (f1 * f1))
        nxt = np.clip(x - np.where(np.isfinite(step), step, 0.0), lo, xmax)
        done = bool(np.all(np.abs(nxt - x) <= 1e-9 * k))
        x = nxt
        if done:
            break
    return x


def _put_boundary(k: F64, t: F64, r: F64, q: F64, sig: F64, scheme: Scheme) -> _Boundary:
    """The exercise boundary of puts with r > 0 (1-D arrays of one length m)."""
    g = _geometry(scheme)
    n, nq = scheme.nodes, scheme.quad
    xmax = k * np.minimum(1.0, r / np.where(q > 0, q, 1e-300))
    kc, rc, qc, sc, xc = (a[:, None] for a in (k, r, q, sig, xmax))
    tau = t[:, None] * g.frac  # (m, n)
    b = _qd_plus(kc, tau, rc, qc, sc, xc)
    h = np.zeros((len(k), n + 1))
    h[:, 1:] = np.log(b / xc) ** 2
    # Per node and quadrature point: time left tau - u and the discount weights.
    tq = tau[:, :, None]
    left = tq * (1.0 - g.u)  # tau - u
    sq_left = np.sqrt(left)
    u = tq * g.u
    wr = tq * g.w * np.exp(rc[:, :, None] * u)
    wq = tq * g.w * np.exp(qc[:, :, None] * u)
    r3, q3, s3 = rc[:, :, None], qc[:, :, None], sc[:, :, None]
    v3 = s3 * sq_left
    drift3 = (r3 - q3) * left
    vi = sc * np.sqrt(tau)
    ln_xk = np.log(xc / kc)
    alpha = kc * np.exp(-(rc - qc) * tau)
    for step in range(scheme.steps):
        sh = np.sqrt(h[:, 1:])
        shq = np.sqrt(np.maximum(h @ g.mq, 0.0)).reshape(len(k), n, nq)
        dp = (shq - sh[:, :, None] + drift3) / v3 + 0.5 * v3
        ni = np.einsum("mnl,mnl->mn", wr, ndtr(dp - v3))
        di = np.einsum("mnl,mnl->mn", wq, ndtr(dp))
        dpk = (ln_xk - sh + (rc - qc) * tau) / vi + 0.5 * vi
        dmk = dpk - vi
        num = ndtr(dmk) + rc * ni
        den = ndtr(dpk) + qc * di
        fv = alpha * num / den
        bi = xc * np.exp(-sh)
        if step == 0:
            # Jacobi-Newton: the derivative of f in b through the non-integral terms only.
            nd = _INV_SQRT_2PI * np.exp(-0.5 * dmk * dmk) / (bi * vi)
            dd = _INV_SQRT_2PI * np.exp(-0.5 * dpk * dpk) / (bi * vi)
            fd = alpha * (nd / den - dd * num / (den * den))
            fv = bi - (fv - bi) / (fd - 1.0)
        fv = np.clip(np.where(np.isfinite(fv), fv, bi), 1e-10 * xc, xc)
        h[:, 1:] = np.log(fv / xc) ** 2
    return _Boundary(xmax, h)


def _put_from_boundary(
    s: F64, k: F64, t: F64, r: F64, q: F64, sig: F64, bd: _Boundary, scheme: Scheme
) -> F64:
    """European price + early-exercise premium over the boundary `bd`, at least intrinsic."""
    g = _geometry(scheme)
    sqt = np.sqrt(t)[:, None]
    z = sqt * g.zp  # (m, p): sqrt of the time from now
    tt = z * z
    sh = np.sqrt(np.maximum(bd.h @ g.mp, 0.0))
    rc, qc, sc = r[:, None], q[:, None], sig[:, None]
    v = sc * z
    dp = (np.log(s / bd.xmax)[:, None] + sh + (rc - qc) * tt) / v + 0.5 * v
    f = rc * k[:, None] * np.exp(-rc * tt) * ndtr(v - dp) - qc * s[:, None] * np.exp(
        -qc * tt
    ) * ndtr(-dp)
    premium = np.sum(f * (2.0 * z) * sqt * g.wp, axis=1)
    euro = bsm_price(False, s, k, t, r, q, sig)
    out: F64 = np.maximum(np.maximum(euro, 0.0) + np.maximum(premium, 0.0), k - s)
    return out


class _PutForm(NamedTuple):
    """Contracts as puts (calls by symmetry), split into American and European rows."""

    s: F64
    k: F64
    r: F64
    q: F64
    early: B8  # early exercise may be optimal: priced by the boundary


def _as_puts(c: B8, s: F64, k: F64, r: F64, q: F64) -> _PutForm:
    ps, pk = np.where(c, k, s), np.where(c, s, k)
    pr, pq = np.where(c, q, r), np.where(c, r, q)
    # r <= 0 with r <= q: never exercised early. r < 0 with q < r (two boundaries) is
    # outside this model and priced European too.
    return _PutForm(ps, pk, pr, pq, pr > 0)


def american_price(
    is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    sigma: ArrayLike, scheme: Scheme = DEFAULT_SCHEME,
) -> F64:  # fmt: skip
    """American prices; arguments broadcast together.

    At `t <= 0` or `sigma <= 0` the price is the intrinsic value max(S - K, 0) or
    max(K - S, 0); NaN inputs give NaN.
    """
    c, s_, k_, t_, r_, q_, v_ = (
        np.ravel(a)
        for a in np.broadcast_arrays(
            np.asarray(is_call, dtype=bool), _f64(s), _f64(k), _f64(t), _f64(r), _f64(q),
            _f64(sigma),
        )
    )  # fmt: skip
    shape = np.broadcast_shapes(*(np.shape(a) for a in (is_call, s, k, t, r, q, sigma)))
    out = _price(c, s_, k_, t_, r_, q_, v_, scheme)
    return out.reshape(shape)


def _price(c: B8, s: F64, k: F64, t: F64, r: F64, q: F64, sig: F64, scheme: Scheme) -> F64:
    pf = _as_puts(c, s, k, r, q)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        out = bsm_price(c, s, k, t, r, q, sig)
        live = (t > 0) & (sig > 0) & (s > 0) & (k > 0)
        am = np.flatnonzero(pf.early & live)
        if len(am):
            a = (pf.s[am], pf.k[am], t[am], pf.r[am], pf.q[am], sig[am])
            bd = _put_boundary(*a[1:], scheme)
            out[am] = _put_from_boundary(*a, bd, scheme)
        intrinsic = np.maximum(pf.k - pf.s, 0.0)
        out = np.where(live | np.isnan(sig) | np.isnan(t), out, intrinsic)
    return out


def american_implied_vol(
    price: ArrayLike, is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike,
    r: ArrayLike, q: ArrayLike, scheme: Scheme = DEFAULT_SCHEME,
) -> F64:  # fmt: skip
    """Implied volatility of American `price`; arguments broadcast together.

    NaN where no volatility in [IV_MIN, IV_MAX] reproduces the price: at or below
    the intrinsic value, at or above the upper bound (the spot for a call, the
    strike for a put), `t <= 0`, or any input not a positive number.
    """
    arrays = np.broadcast_arrays(
        np.asarray(is_call, dtype=bool), _f64(price), _f64(s), _f64(k), _f64(t), _f64(r), _f64(q)
    )
    shape = arrays[0].shape
    c, p, s_, k_, t_, r_, q_ = (np.ravel(a) for a in arrays)
    return _implied_vol(c, p, s_, k_, t_, r_, q_, scheme).reshape(shape)


def _implied_vol(
    c: B8, p: F64, s: F64, k: F64, t: F64, r: F64, q: F64, scheme: Scheme
) -> F64:  # fmt: skip
    out = np.full(p.shape, np.nan)
    pf = _as_puts(c, s, k, r, q)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        intrinsic = np.maximum(pf.k - pf.s, 0.0)
        ok = (t > 0) & (s > 0) & (k > 0) & (p > intrinsic) & (p < pf.k) & np.isfinite(p)
        ok &= np.isfinite(r) & np.isfinite(q)
        euro = np.flatnonzero(ok & ~pf.early)
        if len(euro):
            out[euro] = implied_vol(p[euro], c[euro], s[euro], k[euro], t[euro], r[euro], q[euro])
        sel = np.flatnonzero(ok & pf.early)
        if len(sel):
            out[sel] = _solve(p[sel], pf.s[sel], pf.k[sel], t[sel], pf.r[sel], pf.q[sel], scheme)
    out[(out < IV_MIN) | (out > IV_MAX)] = np.nan
    return out


def _solve(p: F64, s: F64, k: F64, t: F64, r: F64, q: F64, scheme: Scheme) -> F64:
    """American put IV by a bracketed secant (regula falsi, Illinois-style) search.

    The European IV of the price bounds the American one from above (the American
    price is at least the European); one de-Americanizing step (the European IV of
    the price less the premium found there) lands close below or above it.
    """
    n = len(p)
    out = np.full(n, np.nan)

    def f(idx: NDArray[np.intp], vol: F64) -> F64:
        res: F64 = _price(np.zeros(len(idx), dtype=bool), s[idx], k[idx], t[idx], r[idx],
                          q[idx], vol, scheme) - p[idx]  # fmt: skip
        return res

    idx = np.arange(n)
    x0 = implied_vol(p, False, s, k, t, r, q)
    x0 = np.where(np.isfinite(x0), np.clip(x0, IV_MIN, IV_MAX), 1.0)
    f0 = f(idx, x0)
    # Bracket [lo, hi] with f(lo) < 0 < f(hi), as far as known.
    lo, flo = np.full(n, IV_MIN), np.full(n, np.nan)
    hi, fhi = np.full(n, IV_MAX), np.full(n, np.nan)
    pos = f0 >= 0
    hi, fhi = np.where(pos, x0, hi), np.where(pos, f0, fhi)
    lo, flo = np.where(pos, lo, x0), np.where(pos, flo, f0)
    # De-Americanize: the European IV of the price less the premium at x0.
    premium = f0 + p - bsm_price(False, s, k, t, r, q, x0)
    x1 = implied_vol(p - premium, False, s, k, t, r, q)
    x1 = np.where(np.isfinite(x1) & (x1 > lo) & (x1 < hi), x1, np.nan)
    x1 = np.where(np.isnan(x1), np.where(pos, 0.5 * (lo + hi), np.minimum(2.0 * x0, IV_MAX)), x1)
    prev_x, prev_f = x0, f0
    x = x1
    for _ in range(_IV_STEPS):
        fx = f(idx, x)
        below = fx < 0
        lo, flo = np.where(below, x, lo), np.where(below, fx, flo)
        hi, fhi = np.where(below, hi, x), np.where(below, fhi, fx)
        # Secant through the last two points; inside the bracket, else a bracket step.
        sec = x - fx * (x - prev_x) / (fx - prev_f)
        inside = np.isfinite(sec) & (sec > lo) & (sec < hi)
        both = np.isfinite(flo) & np.isfinite(fhi)
        falsi = lo - flo * (hi - lo) / (fhi - flo)
        bisect = np.where(both, 0.5 * (falsi + 0.5 * (lo + hi)), np.sqrt(lo * hi))
        nxt = np.where(inside, sec, bisect)
        done = (np.abs(nxt - x) <= _IV_TOL) | (fx == 0) | (hi - lo <= _IV_TOL)
        # An unbracketed end (the price beyond what IV_MIN..IV_MAX reaches) fails.
        failed = done & ~(both | (fx == 0) | (np.abs(nxt - x) <= _IV_TOL))
        res = np.where(failed, np.nan, np.where(fx == 0, x, nxt))
        if done.any():
            out[idx[done]] = res[done]
            keep = ~done
            idx, lo, hi, flo, fhi = idx[keep], lo[keep], hi[keep], flo[keep], fhi[keep]
            x, fx, nxt = x[keep], fx[keep], nxt[keep]
            if len(idx) == 0:
                break
        prev_x, prev_f = x, fx
        x = nxt
    return out


def american_greeks(
    is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    sigma: ArrayLike, scheme: Scheme = DEFAULT_SCHEME,
) -> Greeks:  # fmt: skip
    """Greeks of the American price at `sigma`; NaN where `sigma` or `t` is not positive.

    Delta and gamma by central differences in the spot over the boundary held fixed
    (it does not depend on the spot); theta from the Black-Scholes equation
    (theta = rV - (r - q) S delta - sigma^2 S^2 gamma / 2, zero where exercise is
    optimal); vega and rho by central differences of the price in sigma and r.
    """
    arrays = np.broadcast_arrays(
        np.asarray(is_call, dtype=bool), _f64(s), _f64(k), _f64(t), _f64(r), _f64(q), _f64(sigma)
    )
    shape = arrays[0].shape
    c, s_, k_, t_, r_, q_, v_ = (np.ravel(a) for a in arrays)
    g = _greeks(c, s_, k_, t_, r_, q_, v_, scheme)
    return Greeks(*(a.reshape(shape) for a in g))


_H_SPOT = 1e-3  # relative bump of the spot
_H_VOL = 1e-3  # absolute bump of the volatility
_H_RATE = 1e-4  # absolute bump of the rate


def _greeks(
    c: B8, s: F64, k: F64, t: F64, r: F64, q: F64, sig: F64, scheme: Scheme
) -> Greeks:  # fmt: skip
    n = len(s)
    out = [np.full(n, np.nan) for _ in range(5)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        live = (t > 0) & (sig > 0) & (s > 0) & (k > 0) & np.isfinite(r + q)
        early = _as_puts(c, s, k, r, q).early
        eu = np.flatnonzero(live & ~early)
        if len(eu):
            ge = bsm_greeks(c[eu], s[eu], k[eu], t[eu], r[eu], q[eu], sig[eu])
            for col, val in zip(out, ge, strict=True):
                col[eu] = val
        sel = np.flatnonzero(live & early)
        if len(sel) == 0:
            return Greeks(*out)
        c = c[sel]
        s, k, t, r, q, sig = (a[sel] for a in (s, k, t, r, q, sig))
        m = len(sel)
        pf = _as_puts(c, s, k, r, q)
        # Put-space delta and gamma in its spot ps: the boundary depends on pk only.
        h = _H_SPOT * pf.s
        ps3 = np.concatenate([pf.s - h, pf.s, pf.s + h])
        t3, pk3, pr3, pq3, v3 = (np.tile(a, 3) for a in (t, pf.k, pf.r, pf.q, sig))
        bd = _put_boundary(pf.k, t, pf.r, pf.q, sig, scheme)
        bd3 = _Boundary(np.tile(bd.xmax, 3), np.tile(bd.h, (3, 1)))
        vals = _put_from_boundary(ps3, pk3, t3, pr3, pq3, v3, bd3, scheme)
        down, value, up = vals[:m], vals[m:2 * m], vals[2 * m:]  # fmt: skip
        d1 = (up - down) / (2.0 * h)
        d2 = (up - 2.0 * value + down) / (h * h)
        # Back to the call: C(S, K) = P(K, S) is homogeneous of degree one in (S, K).
        delta = np.where(c, (value - k * d1) / s, d1)
        gamma = np.where(c, d2 * (k / s) ** 2, d2)
        exercised = value <= np.maximum(pf.k - pf.s, 0.0)
        theta = np.where(
            exercised, 0.0, r * value - (r - q) * s * delta - 0.5 * sig * sig * s * s * gamma
        )
        # Vega and rho: four repricings in one call.
        cc = np.tile(c, 4)
        bumped = _price(
            cc, np.tile(s, 4), np.tile(k, 4), np.tile(t, 4),
            np.concatenate([r, r, r - _H_RATE, r + _H_RATE]), np.tile(q, 4),
            np.concatenate([sig - _H_VOL, sig + _H_VOL, sig, sig]), scheme,
        )  # fmt: skip
        vega = (bumped[m:2 * m] - bumped[:m]) / (2.0 * _H_VOL)  # fmt: skip
        rho = (bumped[3 * m:] - bumped[2 * m:3 * m]) / (2.0 * _H_RATE)  # fmt: skip
    for col, val in zip(out, (delta, gamma, theta / 365.0, vega / 100.0, rho / 100.0),
                        strict=True):  # fmt: skip
        col[sel] = val
    return Greeks(*out)


def american_iv_and_greeks(
    price: ArrayLike, is_call: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike,
    r: ArrayLike, q: ArrayLike, scheme: Scheme = DEFAULT_SCHEME,
) -> tuple[F64, Greeks]:  # fmt: skip
    """Implied volatility of American `price` and the greeks at it (NaN where the IV is NaN)."""
    iv = american_implied_vol(price, is_call, s, k, t, r, q, scheme)
    return iv, american_greeks(is_call, s, k, t, r, q, iv, scheme)
