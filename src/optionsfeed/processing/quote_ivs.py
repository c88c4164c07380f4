"""The IVs of a batch's quotes (mark, bid and ask) and the greeks at the mark's.

One vectorized call per exercise style and kind, for all the rows of all the chains
a batch touched: pricing has a fixed cost per call, which small batches (the
low-latency case) would otherwise pay over and over.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from ..pricing import Greeks, implied_vol, iv_and_greeks
from ..pricing.american import american_implied_vol, american_iv_and_greeks

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]

# Up to this many American rows, the marks and both sides are solved in one American
# call: a call costs about 1.2 ms whatever its size, which a batch of a few dozen
# quotes would pay twice (3.0 -> 2.0 ms for 42 rows, 14 -> 13 ms for 1,000). Past it
# the sides' greeks, computed and dropped, and their searches started from the last
# IV rather than the new mark's, cost more than the call saves (3,000 rows: 30 ms
# apart, 37-41 ms in one call).
ONE_CALL_ROWS = 1_000


class QuoteRows(NamedTuple):
    """Rows to price, one entry per row (`sides`: (2, rows), NaN where no quote)."""

    price: F64  # the mark, in the strike's currency
    sides: F64  # bid and ask, in the strike's currency
    is_call: B8
    spot: F64
    strike: F64
    t: F64
    rate: F64
    carry: F64
    american: B8
    guess: F64  # where each American search starts (the row's last IV; NaN: none)


def quote_ivs(rows: QuoteRows) -> tuple[F64, Greeks, F64]:
    """(mark IVs, greeks at them, (2, rows) IVs of the bids and the asks).

    NaN where no volatility fits a price; each row by its exercise style, with the
    same model and inputs for its three prices.
    """
    n = len(rows.price)
    iv, side_iv = np.full(n, np.nan), np.full((2, n), np.nan)
    cols = [np.full(n, np.nan) for _ in range(5)]
    eu, am = np.flatnonzero(~rows.american), np.flatnonzero(rows.american)
    if len(eu):
        args = _args(rows, eu)
        iv[eu], g = iv_and_greeks(rows.price[eu], *args)
        _put(cols, eu, g)
        side_iv[:, eu] = implied_vol(rows.sides[:, eu], *args).reshape(2, len(eu))
    if len(am) == 0:
        return iv, Greeks(*cols), side_iv
    args = _args(rows, am)
    if len(am) <= ONE_CALL_ROWS:
        # The three prices of a row in one call, each search from the row's last IV.
        prices = np.concatenate([rows.price[am], rows.sides[0, am], rows.sides[1, am]])
        all_iv, g = american_iv_and_greeks(
            prices, *_tiled(args, 3), guess=np.tile(rows.guess[am], 3)
        )
        iv[am], side_iv[:, am] = all_iv[: len(am)], all_iv[len(am) :].reshape(2, len(am))
        _put(cols, am, Greeks(*(col[: len(am)] for col in g)))
        return iv, Greeks(*cols), side_iv
    iv[am], g = american_iv_and_greeks(rows.price[am], *args, guess=rows.guess[am])
    _put(cols, am, g)
    # Both sides in one call, from the mark's IV (which they lie close to). Not
    # priced European first: the American search solves that as its upper bound.
    side_iv[:, am] = american_implied_vol(
        rows.sides[:, am].ravel(), *_tiled(args, 2), guess=np.tile(iv[am], 2)
    ).reshape(2, len(am))
    return iv, Greeks(*cols), side_iv


def _args(rows: QuoteRows, sel: NDArray[np.intp]) -> tuple[B8, F64, F64, F64, F64, F64]:
    return (rows.is_call[sel], rows.spot[sel], rows.strike[sel], rows.t[sel], rows.rate[sel],
            rows.carry[sel])  # fmt: skip


def _tiled(
    args: tuple[B8, F64, F64, F64, F64, F64], times: int
) -> tuple[B8, F64, F64, F64, F64, F64]:  # fmt: skip
    c, s, k, t, r, q = args
    return (np.tile(c, times), np.tile(s, times), np.tile(k, times), np.tile(t, times),
            np.tile(r, times), np.tile(q, times))  # fmt: skip


def _put(cols: list[F64], sel: NDArray[np.intp], g: Greeks) -> None:
    for col, val in zip(cols, g, strict=True):
        col[sel] = val
