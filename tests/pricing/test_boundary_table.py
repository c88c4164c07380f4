"""The shared boundary tables: as good as a direct solve, and the cache bound."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial import chebyshev

from optionsfeed.pricing.alo import Scheme, chebyshev_nodes, put_boundary
from optionsfeed.pricing.boundary_table import (
    TABLE_SCHEME,
    BoundaryTables,
    bucket_of,
    bucket_years,
)


def test_buckets_double_from_one_day() -> None:
    """Bucket b holds T in (2^(b-1), 2^b] days; its longest T is 2^b days."""
    days = np.array([0.25, 0.5, 0.51, 1.0, 1.5, 2.0, 365.0, 1095.0])
    b = bucket_of(days / 365.0)
    np.testing.assert_array_equal(b, [-2, -1, 0, 0, 1, 1, 9, 11])
    assert (
        (days / 365.0 <= bucket_years(b) * (1 + 1e-12)) & (days / 365.0 > bucket_years(b) / 2)
    ).all()


def _on_grid(h: np.ndarray, scheme: Scheme, w: np.ndarray) -> np.ndarray:
    """Values at the nodes of `scheme` -> the interpolant at w = sqrt(tau / t)."""
    n = scheme.nodes
    inv = np.linalg.inv(chebyshev.chebvander(chebyshev_nodes(scheme), n))
    out: np.ndarray = (chebyshev.chebvander(2.0 * w - 1.0, n) @ inv @ h.T).T
    return out


@pytest.mark.parametrize(("r", "q"), [(0.05, 0.0), (0.04, 0.01), (0.01, 0.04)])
def test_interpolated_boundary_is_as_good_as_a_direct_solve(r: float, q: float) -> None:
    """Between grid volatilities and inside a bucket, the table's boundary is as close
    to a fine solve (48 nodes) as ALO solved for that very contract at the table's
    scheme is (within 5 times its error)."""
    tables = BoundaryTables()
    t = np.array([0.3, 0.37, 0.49, 1.7])
    sig = np.array([0.123, 0.31, 0.77, 0.2])
    n = len(t)
    rr, qq = np.full(n, r), np.full(n, q)
    ch, _ = tables.coefficients(tables.group_ids(rr, qq, bucket_of(t)), np.log(sig))
    alpha = np.sqrt(t / bucket_years(bucket_of(t)))
    w = np.linspace(0.0, 1.0, 41)
    powers = np.arange(ch.shape[1])
    ours = (ch * alpha[:, None] ** powers) @ (w[None, :] ** powers[:, None])
    fine = Scheme(nodes=48, quad=48, steps=16)
    ref = _on_grid(put_boundary(np.ones(n), t, rr, qq, sig, fine), fine, w)
    direct = _on_grid(put_boundary(np.ones(n), t, rr, qq, sig, TABLE_SCHEME), TABLE_SCHEME, w)
    assert np.max(np.abs(ours - ref)) <= 5.0 * np.max(np.abs(direct - ref))


def test_the_cache_starts_again_at_its_bound() -> None:
    """More groups than the capacity: the cache starts again, and answers do not change."""
    tables = BoundaryTables(capacity=2)
    sig = np.log(np.array([0.2]))
    first = tables.coefficients(
        tables.group_ids(np.array([0.03]), np.array([0.0]), np.array([5])), sig
    )
    for r in (0.04, 0.05, 0.06):
        tables.group_ids(np.array([r]), np.array([0.0]), np.array([5]))
    assert len(tables._groups) <= 2
    again = tables.coefficients(
        tables.group_ids(np.array([0.03]), np.array([0.0]), np.array([5])), sig
    )
    np.testing.assert_array_equal(first[0], again[0])
    with pytest.raises(ValueError, match="at most 2"):
        tables.group_ids(np.array([0.01, 0.02, 0.03]), np.zeros(3), np.full(3, 5))


def test_memo_lasts_as_long_as_the_ids() -> None:
    """What a caller keeps per group id is dropped when the cache starts again (the
    ids then name other groups), and kept while it does not."""
    tables = BoundaryTables(capacity=2)
    gid = int(tables.group_ids(np.array([0.03]), np.array([0.0]), np.array([5]))[0])
    tables.memo[gid] = (7,)
    tables.group_ids(np.array([0.04]), np.array([0.0]), np.array([5]))
    assert tables.memo == {gid: (7,)}
    tables.group_ids(np.array([0.05]), np.array([0.0]), np.array([5]))
    assert tables.memo == {}


def test_group_ids_of_many_buckets_and_yields() -> None:
    """Contracts over many buckets and yields: one id per distinct (r, q, bucket),
    the same as for each contract alone."""
    rng = np.random.default_rng(2)
    r = rng.choice([0.01, 0.04], 300)
    q = rng.choice([0.0, 0.02, 0.03], 300)
    b = rng.integers(-1, 12, 300)
    tables = BoundaryTables()
    ids = tables.group_ids(r, q, b)
    assert len(np.unique(ids)) == len({(a, c, d) for a, c, d in zip(r, q, b, strict=True)})
    alone = [int(tables.group_ids(r[i : i + 1], q[i : i + 1], b[i : i + 1])[0]) for i in range(300)]
    np.testing.assert_array_equal(ids, alone)
