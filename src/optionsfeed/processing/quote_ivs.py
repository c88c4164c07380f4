"""The IVs of a batch's quotes (mark, bid and ask) and the greeks at the mark's.

One vectorized call per exercise style for all the rows of all the chains a batch
touched: pricing has a fixed cost per call, which small batches (the low-latency
case) would otherwise pay over and over. An American row's three searches each
start from where that price's last search ended (`pricing.american.Warm`, kept by
the chain per row and price): after a tick, one premium pass usually ends each.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from ..pricing import Greeks, implied_vol, iv_and_greeks
from ..pricing.american import Warm, american_iv_greeks_warm, no_warm

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]

PRICES = 3  # a row's prices solved for IVs: mark, bid, ask


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
    guess: F64  # (3, rows): the last IVs of mark, bid and ask (NaN: none)
    warm: Warm  # of (3, rows) arrays: where the last American searches ended


def no_warm_rows(n: int) -> Warm:
    """The `QuoteRows.warm` of `n` rows with no state."""
    return Warm(*(col.reshape(PRICES, n) for col in no_warm(PRICES * n)))


def quote_ivs(rows: QuoteRows) -> tuple[F64, Greeks, F64, Warm]:
    """(mark IVs, greeks at them, (2, rows) IVs of the bids and the asks, where the
    American searches ended: the rows' `warm` for next time, NaN for the others).

    NaN where no volatility fits a price; each row by its exercise style, with the
    same model and inputs for its three prices.
    """
    n = len(rows.price)
    iv, side_iv = np.full(n, np.nan), np.full((2, n), np.nan)
    cols = [np.full(n, np.nan) for _ in range(5)]
    warm = no_warm_rows(n)
    eu, am = np.flatnonzero(~rows.american), np.flatnonzero(rows.american)
    if len(eu):
        args = _args(rows, eu)
        iv[eu], g = iv_and_greeks(rows.price[eu], *args)
        _put(cols, eu, g)
        side_iv[:, eu] = implied_vol(rows.sides[:, eu], *args).reshape(2, len(eu))
    if len(am) == 0:
        return iv, Greeks(*cols), side_iv, warm
    # The three prices of a row in one call (greeks for all: a pass without them
    # saves a tenth, and a side's search from its own state takes one pass).
    m = len(am)
    prices = np.concatenate([rows.price[am], rows.sides[0, am], rows.sides[1, am]])
    c, s, k, t, r, q = (np.tile(a, PRICES) for a in _args(rows, am))
    all_iv, g, ended = american_iv_greeks_warm(
        prices, c, s, k, t, r, q, guess=rows.guess[:, am].ravel(),
        warm=Warm(*(col[:, am].ravel() for col in rows.warm)),
    )  # fmt: skip
    iv[am], side_iv[:, am] = all_iv[:m], all_iv[m:].reshape(2, m)
    _put(cols, am, Greeks(*(col[:m] for col in g)))
    for col, val in zip(warm, ended, strict=True):
        col[:, am] = val.reshape(PRICES, m)
    return iv, Greeks(*cols), side_iv, warm


def _args(rows: QuoteRows, sel: NDArray[np.intp]) -> tuple[B8, F64, F64, F64, F64, F64]:
    return (rows.is_call[sel], rows.spot[sel], rows.strike[sel], rows.t[sel], rows.rate[sel],
            rows.carry[sel])  # fmt: skip


def _put(cols: list[F64], sel: NDArray[np.intp], g: Greeks) -> None:
    for col, val in zip(cols, g, strict=True):
        col[sel] = val
