"""The early-exercise boundary of American puts, by Andersen, Lake and Offengeld (2016).

The put's boundary B(tau) solves an integral equation; it is iterated to its fixed
point ("form B") at Chebyshev nodes in sqrt(tau), started from the QD+ approximation
of Li (2010). Everything is an array over contracts: the nodes and quadrature
points sit at the same place for every contract in normalized time, so
interpolating the boundary is one matrix product with a constant matrix.

`pricing.boundary_table` solves this once per (rate, dividend, volatility, time
bucket) and shares the result between contracts; `pricing.american` prices from it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.polynomial import chebyshev, legendre
from numpy.typing import NDArray
from scipy.special import ndtr

F64 = NDArray[np.float64]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Scheme(NamedTuple):
    """The size of the ALO discretization of the boundary.

    `nodes` Chebyshev intervals of the boundary, `quad` Gauss-Legendre points of
    each fixed-point integral, `steps` fixed-point iterations (the first a
    Jacobi-Newton step).
    """

    nodes: int
    quad: int
    steps: int


class _Geometry(NamedTuple):
    z: F64  # Chebyshev nodes in [-1, 1] (n + 1 of them); sqrt(tau / T) = (1 + z) / 2
    frac: F64  # tau_i / T at the nodes i = 1..n
    u: F64  # (n, l) quadrature points u / tau_i in (0, 1) of the fixed-point integrals
    w: F64  # (l,) their weights on [0, 1]
    mq: F64  # (n + 1, n * l): boundary values at the nodes -> at the quadrature points


_GEOMETRY: dict[Scheme, _Geometry] = {}


def interp_matrix(z: F64, at: F64) -> F64:
    """M such that values at Chebyshev nodes `z` times M are the interpolant at `at`."""
    n = len(z) - 1
    inv = np.linalg.inv(chebyshev.chebvander(z, n))
    out: F64 = (chebyshev.chebvander(at, n) @ inv).T
    return out


def chebyshev_nodes(scheme: Scheme) -> F64:
    """The boundary's nodes in [-1, 1]: sqrt(tau / T) = (1 + z) / 2."""
    return _geometry(scheme).z


def _geometry(scheme: Scheme) -> _Geometry:
    g = _GEOMETRY.get(scheme)
    if g is not None:
        return g
    n = scheme.nodes
    z = -np.cos(np.arange(n + 1) * math.pi / n)
    frac = ((1.0 + z[1:]) / 2.0) ** 2
    # The integrals in an angle, u = sin^2(phi) of the interval: it takes away the
    # square-root behaviour of the boundary near expiry and of the integrands at the
    # interval's far end, so Gauss-Legendre converges fast.
    x, w = legendre.leggauss(scheme.quad)
    phi = math.pi / 4.0 * (x + 1.0)
    u = np.broadcast_to(np.sin(phi) ** 2, (n, scheme.quad)).copy()
    w = math.pi / 4.0 * w * np.sin(2.0 * phi)
    # A quadrature point u tau_i sits at sqrt(u tau_i / T) = sqrt(u) (1 + z_i) / 2.
    at = np.sqrt(u) * ((1.0 + z[1:]) / 2.0)[:, None] * 2.0 - 1.0
    mq = interp_matrix(z, at.ravel())
    g = _Geometry(z, frac, u, w, mq)
    _GEOMETRY[scheme] = g
    return g


def exercise_cap(r: F64, q: F64) -> F64:
    """The put's boundary at expiry per unit strike: min(1, r / q)."""
    out: F64 = np.minimum(1.0, r / np.where(q > 0, q, 1e-300))
    return out


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


def put_boundary(k: F64, t: F64, r: F64, q: F64, sig: F64, scheme: Scheme) -> F64:
    """The exercise boundary of puts with r > 0, as h = ln(B / xmax)^2 at the nodes.

    1-D arrays of one length m in, (m, nodes + 1) out: B(tau) = xmax exp(-sqrt(h))
    with xmax = k min(1, r / q), at sqrt(tau / t) = (1 + z) / 2 for the nodes z of
    `chebyshev_nodes(scheme)` (h = 0 at tau = 0).
    """
    g = _geometry(scheme)
    n, nq = scheme.nodes, scheme.quad
    xmax = k * exercise_cap(r, q)
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
    return h
