"""Exercise boundaries shared between contracts: tables per (rate, dividend, time bucket).

A put's boundary per unit of strike, B(tau) / K, depends on the rate r, the dividend
yield q, the volatility and the time left tau; not on the spot, the strike, or which
contract asks. So it is solved (`pricing.alo`) once per table row and every contract
with that (r, q) interpolates it:

- time: contracts are grouped in buckets by time to expiry, bucket b holding
  T in (BASE 2^(b-1), BASE 2^b]; a row is the boundary over tau in [0, T_b], as a
  polynomial in w = sqrt(tau / T_b) (ALO's Chebyshev interpolant, held as monomial
  coefficients so that a contract's own points w = sqrt(T / T_b) x fixed fractions
  are one matrix product for all contracts);
- volatility: rows sit on a grid of ln(sigma) with step `LN_STEP`; a contract's
  boundary is the 6-point Lagrange interpolant of g = h / sigma^2 (h = ln(B/xmax)^2,
  nearly proportional to sigma^2, so g is smooth in sigma) between the rows around
  its sigma.

Rows are solved on first use and kept; a table row costs about one boundary solve
of one contract at a fine scheme, so a chain priced again and again (the data path)
pays for its rows once. Bounded: at most `capacity` (r, q, bucket) groups of
`ROWS` rows each (about 20 KB a group: 80 MB for the default 4,096); a call that
needs a new group when all are taken starts the cache again, and its rows are
solved anew (`resets` counts it). A processor holds about 100 groups per American
underlying with a yield of its own over about ten expiry buckets (calls and puts,
and rho's tables at the rate moved up and down), so about 40 such underlyings fill
it: more than that belong on more processors. Not thread-safe (one per process,
used from one thread).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.polynomial import chebyshev
from numpy.polynomial import polynomial as poly
from numpy.typing import NDArray

from .alo import Scheme, chebyshev_nodes, put_boundary

F64 = NDArray[np.float64]
INTP = NDArray[np.intp]

BASE_YEARS = 1.0 / 365.0  # bucket 0 holds T in (1/2 day, 1 day]
LN_STEP = 0.1  # the grid of ln(sigma)
SIGMA_MIN, SIGMA_MAX = 1e-4, 100.0  # volatilities the tables cover
# Fine enough that the tables are not what limits accuracy (docs/conventions.md).
TABLE_SCHEME = Scheme(nodes=16, quad=24, steps=10)
DEGREE = TABLE_SCHEME.nodes

_OFFSETS = np.arange(-2, 4)  # the stencil: rows j0 - 2 .. j0 + 3 around sigma's cell
_J_LO = math.floor(math.log(SIGMA_MIN) / LN_STEP) + int(_OFFSETS[0])
_J_HI = math.ceil(math.log(SIGMA_MAX) / LN_STEP) + int(_OFFSETS[-1])
ROWS = _J_HI - _J_LO + 1


def _cheb_to_monomial() -> F64:
    """Values at the Chebyshev nodes -> monomial coefficients in w = (1 + z) / 2."""
    n = DEGREE
    inv = np.linalg.inv(chebyshev.chebvander(chebyshev_nodes(TABLE_SCHEME), n))
    conv = np.zeros((n + 1, n + 1))
    for k in range(n + 1):
        in_z = poly.Polynomial(chebyshev.cheb2poly(np.eye(n + 1)[k]))
        coef = in_z(poly.Polynomial([-1.0, 2.0])).coef  # substitute z = 2w - 1
        conv[: len(coef), k] = coef
    out: F64 = conv @ inv
    return out


_TO_MONOMIAL = _cheb_to_monomial()


def bucket_of(t: F64) -> NDArray[np.int64]:
    """The time bucket of each time to expiry `t` > 0 (years)."""
    b = np.ceil(np.log2(t / BASE_YEARS) - 1e-12)
    return b.astype(np.int64)


def bucket_years(b: NDArray[np.int64]) -> F64:
    """The longest time to expiry of each bucket."""
    out: F64 = BASE_YEARS * np.exp2(b.astype(np.float64))
    return out


def _stencil_matrix() -> F64:
    """C with the Lagrange weights of the stencil = [1, u, .., u^5] @ C (u in [0, 1))."""
    nodes = _OFFSETS.astype(np.float64)
    vander = np.vander(nodes, len(nodes), increasing=True)  # value of u^k at each node
    out: F64 = np.linalg.inv(vander).astype(np.float64)
    return out


_STENCIL = _stencil_matrix()
_STENCIL_D = np.arange(1, len(_OFFSETS))[:, None] * _STENCIL[1:]  # d/du of the weights
# Rows: powers of u; columns: the weights, then those of d / d ln sigma.
_BOTH = np.hstack([_STENCIL, np.vstack([_STENCIL_D / LN_STEP, np.zeros(len(_OFFSETS))])])


def stencil_weights(ln_sig: F64) -> tuple[INTP, F64]:
    """(first row j0 - 2, weights) of the 6-point stencils around each ln sigma.

    The weights are (m, 2, 6): [:, 0] those of the value, [:, 1] those of
    d / d ln sigma.
    """
    x = ln_sig / LN_STEP
    j0 = np.floor(x)
    u = (x - j0)[:, None]
    # Horner in u over (m, 12) arrays (both sets of weights at once), not a matrix
    # product: small products stay off BLAS's threads, and few calls keep a pass
    # over a handful of contracts cheap.
    out = np.broadcast_to(_BOTH[-1], (len(x), _BOTH.shape[1])).copy()
    for row in _BOTH[-2::-1]:
        out *= u
        out += row
    first = j0.astype(np.intp) + int(_OFFSETS[0])
    weights: F64 = out.reshape(len(x), 2, len(_OFFSETS))
    return first, weights


def h_weights(ln_sig: F64) -> tuple[INTP, F64]:
    """`stencil_weights` that give h and dh / d ln sigma from the tables' rows of g.

    h = sigma^2 g: dh / d ln sigma = sigma^2 (2 g + dg / d ln sigma); both scalings
    go into the 12 weights rather than the 34 coefficients.
    """
    first, weights = stencil_weights(ln_sig)
    weights[:, 1] += 2.0 * weights[:, 0]
    weights *= np.exp(2.0 * ln_sig)[:, None, None]
    return first, weights


def _unique(a: F64) -> tuple[F64, INTP]:
    """np.unique with the inverse, quick for the usual case of one value."""
    if len(a) and (a == a[0]).all():
        return a[:1], np.zeros(len(a), dtype=np.intp)
    u, inverse = np.unique(a, return_inverse=True)
    return u, inverse


def _unique_ints(a: NDArray[np.int64]) -> tuple[NDArray[np.int64], INTP]:
    """np.unique with the inverse of small-ranged integers, by counting (no sort)."""
    if len(a) == 0:
        return a, np.zeros(0, dtype=np.intp)
    lo = int(a.min())
    span = int(a.max()) - lo + 1
    if span > 4 * len(a) + 64:
        u, inverse = np.unique(a, return_inverse=True)
        return u, inverse
    present = np.bincount(a - lo, minlength=span) > 0
    rank = np.cumsum(present) - 1
    out: INTP = rank[a - lo]
    return np.flatnonzero(present) + lo, out


def group_index(r: F64, q: F64, bucket: NDArray[np.int64]) -> tuple[F64, INTP]:
    """The distinct (r, q, bucket) triples, as rows of (n, 3), and each contract's
    index among them; by the ranks of each column (sorting floats, not rows)."""
    ur, ir = _unique(r)
    uq, iq = _unique(q)
    ub, ib = _unique_ints(bucket)
    code = (ir.astype(np.int64) * len(uq) + iq) * len(ub) + ib
    codes, inverse = _unique_ints(code)
    ci, bi = np.divmod(codes, len(ub))
    uniq = np.stack([ur[ci // len(uq)], uq[ci % len(uq)], ub[bi].astype(np.float64)], axis=1)
    return uniq, inverse


class BoundaryTables:
    """The cache of boundary tables; see the module's docstring."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self.resets = 0  # times the cache started again (full): its rows are solved anew
        self._clear()

    def _clear(self) -> None:
        # What callers derive from a group id and keep while the ids last.
        self.memo: dict[int, tuple[int, ...]] = {}
        self._groups: dict[tuple[float, float, int], int] = {}
        self._keys: list[tuple[float, float, int]] = []
        self._set_arrays(np.zeros((0, DEGREE + 1)), np.zeros(0, dtype=np.bool_))

    def _set_arrays(self, coef: F64, have: NDArray[np.bool_]) -> None:
        self._coef, self._have = coef, have
        # Views of the windows of the stencil's rows, made once per array (a strided
        # view costs more to build than a lookup of a few contracts).
        k = len(_OFFSETS)
        rows = len(have) >= k
        self._coef_win = self._windows(coef, k) if rows else np.zeros((0, k, DEGREE + 1))
        self._have_win = self._windows(have, k) if rows else np.zeros((0, k), dtype=np.bool_)

    @property
    def groups(self) -> int:
        """The groups held now."""
        return len(self._keys)

    def group_ids(self, r: F64, q: F64, bucket: NDArray[np.int64]) -> INTP:
        """Group id per contract (put form: r > 0). At most `capacity` distinct ones.

        Ids stay valid until the next call of `group_ids` (which may start again).
        """
        uniq, inverse = group_index(r, q, bucket)
        if len(uniq) > self.capacity:
            raise ValueError(f"{len(uniq)} boundary groups in one call, at most {self.capacity}")
        triples = [(float(a), float(b), int(c)) for a, b, c in uniq.tolist()]
        if len(self._groups) + sum(t not in self._groups for t in triples) > self.capacity:
            self._clear()
            self.resets += 1
        ids = np.empty(len(triples), dtype=np.intp)
        for i, key in enumerate(triples):
            gid = self._groups.get(key)
            if gid is None:
                gid = len(self._keys)
                self._groups[key] = gid
                self._keys.append(key)
            ids[i] = gid
        self._grow(len(self._keys) * ROWS)
        out: INTP = ids[np.ravel(inverse)]
        return out

    def keys(self, gid: INTP) -> tuple[F64, F64, NDArray[np.int64]]:
        """(r, q, bucket) of each group id (valid as `group_ids` says)."""
        keys = np.array([self._keys[i] for i in gid.tolist()]).reshape(len(gid), 3)
        return keys[:, 0], keys[:, 1], keys[:, 2].astype(np.int64)

    def _grow(self, rows: int) -> None:
        if rows <= len(self._have):
            return
        size = min(max(rows, 2 * len(self._have)), self.capacity * ROWS)
        coef = np.zeros((size, DEGREE + 1))
        coef[: len(self._have)] = self._coef
        have = np.zeros(size, dtype=np.bool_)
        have[: len(self._have)] = self._have
        self._set_arrays(coef, have)

    def coefficients(self, gid: INTP, ln_sig: F64) -> tuple[F64, F64]:
        """Polynomial coefficients in w = sqrt(tau / T_b) of h and of dh / d ln sigma.

        Per contract (rows of the results: degree + 1 monomial coefficients),
        h = ln(B / xmax)^2 interpolated to its group `gid` and `ln_sig`, which must
        lie within [ln SIGMA_MIN, ln SIGMA_MAX]. Rows missing from the tables are
        solved first.
        """
        both = self.combine(gid, h_weights(ln_sig))
        return both[:, 0, :], both[:, 1, :]

    def combine(self, gid: INTP, weights: tuple[INTP, F64]) -> F64:
        """(m, 2, degree + 1): `coefficients` of h and dh / d ln sigma, stacked, with
        `h_weights(ln_sig)` given (a caller working in blocks computes them once)."""
        first, w = weights
        both: F64 = np.matmul(w, self._stencil(gid, first))
        return both

    def h_coefficients(self, gid: INTP, ln_sig: F64, stencil: tuple[INTP, F64]) -> F64:
        """The h part of `coefficients` alone, with `stencil_weights(ln_sig)` given."""
        first, weights = stencil
        h: F64 = np.matmul(weights[:, :1, :], self._stencil(gid, first))[:, 0, :]
        h *= np.exp(2.0 * ln_sig)[:, None]
        return h

    def h_difference(self, gid_a: INTP, gid_b: INTP, ln_sig: F64, stencil: tuple[INTP, F64]) -> F64:
        """The coefficients of h in groups `gid_a` less those in `gid_b`, as
        `h_coefficients` gives them (one product for the two: the interpolation is
        linear in the rows)."""
        first, weights = stencil
        rows = self._stencil(gid_a, first) - self._stencil(gid_b, first)
        h: F64 = np.matmul(weights[:, :1, :], rows)[:, 0, :]
        h *= np.exp(2.0 * ln_sig)[:, None]
        return h

    def _stencil(self, gid: INTP, first: INTP) -> F64:
        """(m, 6, degree + 1): the table rows from `first` on of each contract's group."""
        start = gid * ROWS + (first - _J_LO)
        k = len(_OFFSETS)
        have = self._have_win[start]
        if not have.all():
            rows = start[:, None] + np.arange(k)
            self._solve(np.unique(rows[~have]))
        # One gather of each contract's k consecutive rows (a window on the table)
        # and a batched product: a sparse matrix built and validated per call cost
        # more than the arithmetic.
        stencil: F64 = self._coef_win[start]
        return stencil

    @staticmethod
    def _windows(a: NDArray[Any], k: int) -> NDArray[Any]:
        """The view of `a` whose element i is a[i : i + k] (rows kept contiguous)."""
        shape = (a.shape[0] - k + 1, k, *a.shape[1:])
        return as_strided(a, shape=shape, strides=(a.strides[0], *a.strides), writeable=False)

    def _solve(self, rows: INTP) -> None:
        gid, j = np.divmod(rows, ROWS)
        keys = np.array([self._keys[i] for i in gid.tolist()])
        r, q, b = keys[:, 0], keys[:, 1], keys[:, 2].astype(np.int64)
        sig = np.exp((j + _J_LO) * LN_STEP)
        h = put_boundary(np.ones(len(rows)), bucket_years(b), r, q, sig, TABLE_SCHEME)
        self._coef[rows] = (h / (sig * sig)[:, None]) @ _TO_MONOMIAL.T
        self._have[rows] = True


TABLES = BoundaryTables()
