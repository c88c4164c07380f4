"""Implied forwards per expiry, from put-call parity on near-the-money strikes.

Pure and vectorized: quotes in, one forward per expiry out. At a strike K with a
two-sided call and put, European parity gives the forward

    F_K = K + e^{rT} (C - P)        (C, P: the mids)

The expiry's forward is the median of F_K over the `K_NEAREST` strikes nearest the
money with two-sided, uncrossed quotes on both sides, so one absurd quote moves it
by nothing (the median ignores it) and a handful of noisy mids average out. With
fewer than `MIN_PAIRS` such strikes there is no implied forward (NaN), and pricing
falls back to the configured carry.

American listings: parity holds for European prices only; an American put (and a
call on a dividend payer) carries an early-exercise premium. Each selected price is
taken back to its European equivalent with the American model itself, as
processing prices it on a forward F (spot-equivalent F e^{-(r-q)T}, configured
yield q): its American IV there, then the European price at that IV. Parity on
those is a function of F whose fixed point is the forward; two secant rounds from
the European estimate converge far inside a basis point (the premium moves little
with F). docs/conventions.md says the same for users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..pricing import bsm_price
from ..pricing.american import american_implied_vol

F64 = NDArray[np.float64]
INTP = NDArray[np.intp]

K_NEAREST = 7  # strikes nearest the money per expiry (odd: the median is one of them)
MIN_PAIRS = 3  # fewer two-sided strikes than this: no implied forward
AMERICAN_ROUNDS = 2  # de-Americanizing rounds (secant fixed points, the second refines)
SECANT_STEP = 1e-3  # relative distance of the second forward of a secant round

# Where a row's forward came from; the wire names are FORWARD_SOURCES[code].
NO_FORWARD, IMPLIED, CARRY, VENUE = 0, 1, 2, 3
FORWARD_SOURCES: tuple[str | None, ...] = (None, "implied", "carry", "venue")


@dataclass(frozen=True, slots=True)
class ExpiryPairs:
    """A chain's calls and puts matched by (expiry, strike), made once per listing.

    `expiry_us`: the distinct expiry instants, sorted; `row_expiry`: per row, the
    index of its expiry. Per pair (a strike listed with both a call and a put):
    `call` and `put` rows, `expiry` index, `strike`, `american` (either side is).
    """

    expiry_us: NDArray[np.int64]
    row_expiry: INTP
    call: INTP
    put: INTP
    expiry: INTP
    strike: F64
    american: NDArray[np.bool_]


def pair_contracts(
    strike: F64,
    is_call: NDArray[np.bool_],
    expiry_us: NDArray[np.int64],
    american: NDArray[np.bool_],
) -> ExpiryPairs:
    """Match the calls and puts of one chain (rows in any order) by expiry and strike."""
    exp, row_expiry = np.unique(expiry_us, return_inverse=True)
    row_expiry = row_expiry.astype(np.intp)
    calls: dict[tuple[int, float], int] = {}
    for r in np.flatnonzero(is_call).tolist():
        calls[(int(row_expiry[r]), float(strike[r]))] = r
    c_rows, p_rows = [], []
    for r in np.flatnonzero(~is_call).tolist():
        c = calls.get((int(row_expiry[r]), float(strike[r])))
        if c is not None:
            c_rows.append(c)
            p_rows.append(r)
    call, put = np.array(c_rows, dtype=np.intp), np.array(p_rows, dtype=np.intp)
    return ExpiryPairs(
        exp, row_expiry, call, put, row_expiry[call], strike[call], american[call] | american[put]
    )


def nearest_median(group: INTP, dist: F64, value: F64, n_groups: int, k: int) -> tuple[F64, INTP]:
    """Per group: the median of the finite `value`s among its `k` smallest `dist`, and
    how many finite values that was (NaN and 0 for a group with none)."""
    order = np.lexsort((dist, group))
    g = group[order]
    rank = np.arange(len(g)) - np.searchsorted(g, g, side="left")
    keep = rank < k
    mat = np.full((n_groups, k), np.nan)
    mat[g[keep], rank[keep]] = value[order][keep]
    count = np.sum(np.isfinite(mat), axis=1)
    out = np.full(n_groups, np.nan)
    some = count > 0
    if some.any():
        out[some] = np.nanmedian(mat[some], axis=1)
    return out, count


def implied_forwards(
    pairs: ExpiryPairs,
    expiries: INTP,
    bid: F64,
    ask: F64,
    *,
    rate: float,
    carry: float,
    t_years: F64,
    guess: F64,
    warm: bool = False,
) -> F64:
    """The implied forward of each expiry in `expiries` (indices into `pairs.expiry_us`).

    `bid`, `ask`: the chain's quote columns (a bid of 0 is no bid). `t_years` and
    `guess` (a forward estimate that picks the strikes nearest the money: the last
    forward, or the carry's) are per requested expiry; `carry` is the configured
    dividend yield American prices are de-Americanized with (`_de_americanized`).
    `warm`: every `guess` is a forward implied before (moved with the spot since),
    so one fixed-point step from it is enough for American pairs.
    NaN where fewer than `MIN_PAIRS` strikes have uncrossed two-sided quotes on
    both sides, or `t_years` is not positive. Cost: O(the chain's pairs) in NumPy,
    plus one American IV call (two per round from a cold start) over at most
    2 x `K_NEAREST` prices per expiry.
    """
    n = len(expiries)
    local = np.full(len(pairs.expiry_us), -1, dtype=np.intp)
    local[expiries] = np.arange(n)
    grp = local[pairs.expiry]
    c, p = pairs.call, pairs.put
    cb, ca, pb, pa = bid[c], ask[c], bid[p], ask[p]
    with np.errstate(invalid="ignore"):
        ok = (grp >= 0) & (cb > 0) & (ca >= cb) & (pb > 0) & (pa >= pb)
    sel = np.flatnonzero(ok)
    grp, strike = grp[sel], pairs.strike[sel]
    t = t_years[grp]
    ok_t = t > 0
    sel, grp, strike, t = sel[ok_t], grp[ok_t], strike[ok_t], t[ok_t]
    cmid = 0.5 * (cb[sel] + ca[sel])
    pmid = 0.5 * (pb[sel] + pa[sel])
    growth = np.exp(rate * t)
    f_k = strike + growth * (cmid - pmid)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.abs(np.log(strike / guess[grp]))
    dist = np.where(np.isfinite(dist), dist, np.inf)
    # The strikes nearest the money, chosen once: the American passes reuse them.
    order = np.lexsort((dist, grp))
    g_sorted = grp[order]
    rank = np.arange(len(order)) - np.searchsorted(g_sorted, g_sorted, side="left")
    near = order[rank < K_NEAREST]
    grp, strike, t, growth = grp[near], strike[near], t[near], growth[near]
    cmid, pmid, f_k, dist = cmid[near], pmid[near], f_k[near], dist[near]
    fwd, count = nearest_median(grp, dist, f_k, n, K_NEAREST)
    am = pairs.american[sel[near]]
    if am.any():
        start = guess if warm else fwd
        f_k = _de_americanized(
            f_k, start, grp, am, cmid, pmid, strike, t, growth, rate, carry, warm=warm
        )
        fwd, count = nearest_median(grp, dist, f_k, n, K_NEAREST)
    fwd[(count < MIN_PAIRS) | ~(fwd > 0)] = np.nan
    return fwd


def _de_americanized(
    f_k: F64, fwd: F64, grp: INTP, am: NDArray[np.bool_], cmid: F64, pmid: F64,
    strike: F64, t: F64, growth: F64, rate: float, carry: float, *, warm: bool,
) -> F64:  # fmt: skip
    """Per-strike parity forwards of American pairs (`am`) on European-equivalent prices.

    A price's European equivalent depends on the forward being solved for: at a
    forward F it is priced as processing prices it, on the spot-equivalent
    S' = F e^{-(r - q)T} with the configured yield q (so the model's boundary tables
    are the ones pricing uses). Per round, parity is evaluated at two forwards around
    the estimate and the fixed point F = parity(F) of the line through them is taken;
    the second round starts from the first's median. From a `warm` start (`fwd`
    already a forward implied a moment ago) one plain step F -> parity(F) is taken
    instead: the map's slope is about 0.1, so it shrinks the start's error tenfold,
    at a quarter of the pricing.

    The carry is consistent with the forward being solved for (S' e^{(r - q)T} = F)
    and with how processing prices the same rows afterwards (`ChainState.prepare`:
    the same S' and q), but the early-exercise premium taken out is the model's at
    the configured q. Where the market's own yield differs from q, so does its
    premium, and the forward is off by the difference: quotes made at a yield 1.8
    points above q (r 4%) give forwards 0.3 bp off at 7 days, 5.8 bp at 91 days and
    39 bp at a year. Pricing on the spot with the yield each forward implies would
    remove that, at the cost of new boundary tables at every change of that yield,
    here and in processing's pricing; one configured yield keeps both on the same
    tables.
    """
    rows = np.flatnonzero(am)
    n = len(rows)
    k, tt, gr = strike[rows], t[rows], growth[rows]
    shift = np.exp(-(rate - carry) * tt)
    out = f_k.copy()
    est = fwd[grp[rows]]
    est = np.where(np.isfinite(est), est, f_k[rows])

    def parity(forwards: list[F64]) -> list[F64]:
        # One American IV call for every forward asked (its cost is mostly per call).
        m = len(forwards)
        s = np.concatenate([f * shift for f in forwards for _ in (0, 1)])
        price = np.tile(np.concatenate([cmid[rows], pmid[rows]]), m)
        call = np.tile(np.concatenate([np.ones(n, np.bool_), np.zeros(n, np.bool_)]), m)
        kk, ttt = np.tile(k, 2 * m), np.tile(tt, 2 * m)
        vol = american_implied_vol(price, call, s, kk, ttt, rate, carry)
        euro = bsm_price(call, s, kk, ttt, rate, carry, vol).reshape(m, 2, n)
        return [k + gr * (e[0] - e[1]) for e in euro]

    if warm:
        out[rows] = parity([est])[0]
        return out
    for _ in range(AMERICAN_ROUNDS):
        points = (est, est * (1.0 + SECANT_STEP))
        ends = parity(list(points))
        slope = (ends[1] - ends[0]) / (points[1] - points[0])
        # g(F) = ends[0] + slope (F - est); F = g(F):
        out[rows] = (ends[0] - slope * est) / (1.0 - slope)
        med, _ = nearest_median(grp, np.zeros(len(out)), out, len(fwd), K_NEAREST)
        est = np.where(np.isfinite(med[grp[rows]]), med[grp[rows]], est)
    return out
