"""The state of one underlying's chain, repriced and diffed in NumPy.

One row per contract. A batch writes quote and trade columns for the rows it
touches, reprices exactly those rows in one vectorized call, rounds the results
to their wire precision and compares them with what was last published, so a
delta carries only the fields whose *visible* value changed. Pure: no I/O, no
clock (time comes in with the events).

Pricing inputs per row: the mark is the venue's mark when it sends one, else the
mid of a two-sided quote, else none (half the ask is not a mark). A row with a venue
forward is priced by Black-76 on it (BSM with spot = the forward and dividend yield
= rate is the same formula), else on its expiry's forward, implied from the
expiry's quotes (forwards.py) or from the listing's carry.
Each row is priced by its contract's exercise style (`pricing.american` for
American listings), which full records publish as `exercise`. A fitted IV outside
[IV_LOW, IV_HIGH] is published with the flag `iv_out_of_range`. Prices of an `inverse` listing are in units of the underlying; they are converted
to the strike's currency (times the forward, or the spot) before solving, so IV
and greeks are those of the USD value, as docs/protocol.md says of `currency`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from ..model.contract import Contract
from ..model.records import FLAG_ORDER, Flag, OptionRecord, UnderlyingRecord, encode
from ..pricing import Greeks
from ..pricing.american import Warm, greeks_by_exercise
from ..sources.base import Listing, Quotes, Trades, UnderlyingTick
from .forwards import (
    CARRY,
    FORWARD_SOURCES,
    IMPLIED,
    NO_FORWARD,
    VENUE,
    implied_forwards,
    pair_contracts,
)
from .quote_ivs import QuoteRows, no_warm_rows, quote_ivs

F64 = NDArray[np.float64]
US_PER_YEAR = 365.0 * 86_400.0 * 1e6
IV_LOW, IV_HIGH = 0.01, 5.0  # a fitted IV outside is flagged iv_out_of_range
NEW_YORK = ZoneInfo("America/New_York")

# Wire precision per field: a change smaller than this is not a change. Prices, IV and
# counts are rounded to decimals; greeks to significant digits, because their scale
# depends on the underlying's (a BTC gamma is ~1e-5 per USD: 6 decimals would leave it
# one digit, or none).
DECIMALS: dict[str, int] = {
    "bid": 4, "ask": 4, "mark": 4, "last": 4, "underlying_price": 4, "forward": 4,
    "iv": 5, "iv_bid": 5, "iv_ask": 5,
    "bid_size": 4, "ask_size": 4, "last_size": 4, "volume": 4, "open_interest": 4,
}  # fmt: skip
SIGNIFICANT: dict[str, int] = {"delta": 6, "gamma": 6, "theta": 6, "vega": 6, "rho": 6}
# Prices in a coin (inverse listings) keep the venue's digits: Deribit gives marks to
# 8 decimals, and a far out-of-the-money mark of 1.78e-6 BTC is a price, not 0.
COIN_PRICE_DECIMALS = 8
PRICE_FIELDS = ("bid", "ask", "mark", "last")
# Counts of contracts: whole numbers go on the wire as integers. Some venues trade
# fractions of a contract (Deribit: 0.1 BTC), and those stay as they are (34.5).
INT_FIELDS = ("bid_size", "ask_size", "last_size", "volume", "open_interest")
# Fields of a delta, in wire order (after symbol, before ts and flags).
DELTA_FIELDS = (
    "bid", "ask", "bid_size", "ask_size", "mark", "last", "last_size", "volume",
    "open_interest", "iv", "iv_bid", "iv_ask", "delta", "gamma", "theta", "vega", "rho",
    "underlying_price", "forward",
)  # fmt: skip

_BITS = {flag: 1 << i for i, flag in enumerate(FLAG_ORDER)}
# Flag lists by bitmask, shared and never mutated: a record's flags cost no allocation.
FLAG_LISTS: list[list[str]] = [
    [str(f) for f in FLAG_ORDER if m & _BITS[f]] for m in range(1 << len(FLAG_ORDER))
]


@dataclass(slots=True)
class ChainDelta:
    """What one batch changed in one chain: wire deltas plus full records for the cache."""

    options: list[dict[str, Any]]
    records: list[tuple[str, bytes]]
    underlying: dict[str, Any] | None = None


_INT_FIELD_INDEX = frozenset(DELTA_FIELDS.index(f) for f in INT_FIELDS)
# Per delta field, 10**decimals, as a column for the matrix (significant-digit rows: 1).
_SCALE = np.array([10.0 ** DECIMALS.get(f, 0) for f in DELTA_FIELDS])[:, None]
_IV_ROW = DELTA_FIELDS.index("iv")
_FORWARD_ROW = DELTA_FIELDS.index("forward")
# The published IVs of mark, bid and ask, in the order pricing solves them.
_IV_ROWS = np.array([DELTA_FIELDS.index(f) for f in ("iv", "iv_bid", "iv_ask")])
FORWARD_EXPIRIES_PER_CALL = 8  # expiries whose forward one refresh implies, nearest first
_SIG_ROWS = np.array([DELTA_FIELDS.index(f) for f in SIGNIFICANT])
_SIG_DIGITS = np.array([SIGNIFICANT[f] for f in SIGNIFICANT])[:, None]


def round_significant(x: F64, digits: NDArray[np.int64] | int) -> F64:
    """`x` rounded to `digits` significant digits (broadcast); 0, NaN and infinity stay.

    The power of ten is applied as an exact integer power (10**e with e <= 22 is exact in
    binary64) by division or multiplication, so the result is the double nearest the
    rounded decimal and equal inputs always round equally.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mag = np.floor(np.log10(np.abs(x)))
        # Capped so 10**e stays finite: below 1e-290 a value rounds to 0.
        e = np.minimum(np.where(np.isfinite(mag), digits - 1 - mag, 0.0), 300.0)
        up = np.rint(x * 10.0**e) / 10.0**e  # e >= 0: divide by an exact power of ten
        down = np.rint(x / 10.0**-e) * 10.0**-e  # e < 0: multiply by one
        out: F64 = np.where(e >= 0, up, down)
    return out


def to_wire(values: F64, scale: F64 = _SCALE) -> F64:
    """A (DELTA_FIELDS x rows) matrix rounded to wire precision, field by field."""
    out: F64 = np.rint(values * scale) / scale
    out[_SIG_ROWS] = round_significant(values[_SIG_ROWS], _SIG_DIGITS)
    return out


# A row's greeks follow the spot when its delta moved by this much, or its gamma,
# theta or vega by this fraction of their published value.
FOLLOW_DELTA = 0.001
FOLLOW_RELATIVE = 0.005


def _moved(g: Greeks, pub: dict[str, F64], rows: NDArray[np.intp]) -> NDArray[np.bool_]:
    """Rows whose greeks at the new spot differ visibly from the published ones
    (a row with no published greek always does)."""
    moved = ~(np.abs(g.delta - pub["delta"][rows]) < FOLLOW_DELTA)
    for new, name in ((g.gamma, "gamma"), (g.theta, "theta"), (g.vega, "vega")):
        old = pub[name][rows]
        moved |= ~(np.abs(new - old) <= FOLLOW_RELATIVE * np.abs(old))
    return moved


def _take_inputs(p: PricingInputs, sel: NDArray[np.intp]) -> PricingInputs:
    """The inputs of rows `sel` of `p` (positions in `p.rows`)."""
    n = len(p.rows)
    parts: dict[str, Any] = {}
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        if isinstance(v, np.ndarray) and v.ndim and v.shape[-1] == n:
            v = v[..., sel]
        parts[f.name] = v
    return PricingInputs(**parts)


@dataclass(slots=True)
class PricingInputs:
    """Rows of one chain and the inputs to price them, waiting for their prices.

    Made by `ChainState.prepare`, priced together with other chains' by
    `reprice_chains`, turned into a `ChainDelta` by `ChainState.finish`.
    """

    chain: ChainState
    rows: NDArray[np.intp]
    mark: F64  # in the quote currency (published)
    price: F64  # the mark in the strike's currency (solved for IV)
    sides: F64  # (2, rows): bid and ask in the strike's currency, NaN where none
    spot: F64  # the venue's forward, or the spot-equivalent of the expiry's forward
    carry: F64  # the listing's dividend yield; the rate on a venue forward
    forward: F64  # the forward each row is priced on
    source: NDArray[np.int8]  # where that forward came from (forwards.IMPLIED, ...)
    t_years: F64
    both: NDArray[np.bool_]
    has_bid: NDArray[np.bool_]


def reprice_chains(
    work: list[tuple[ChainState, NDArray[np.intp]]], now_us: int, *, refresh_forwards: bool = True
) -> list[ChainDelta]:
    """Reprice rows of several chains in one vectorized pricing call; one delta per chain.

    Pricing has a fixed cost per call, so one call for all of a batch's chains
    keeps small batches (the low-latency case) cheap. With `refresh_forwards`, each
    chain's forwards are implied first where due (else the caller does it, apart).
    """
    for chain, _ in work if refresh_forwards else ():
        chain.refresh_forwards(now_us)
    pending = [chain.prepare(rows, now_us) for chain, rows in work]
    sizes = [len(p.rows) for p in pending]
    if sum(sizes) == 0:
        return [ChainDelta([], []) for _ in pending]
    cat = np.concatenate
    iv, g, side_iv, warm = quote_ivs(
        QuoteRows(
            price=cat([p.price for p in pending]),
            sides=cat([p.sides for p in pending], axis=1),
            is_call=cat([p.chain.is_call[p.rows] for p in pending]),
            spot=cat([p.spot for p in pending]),
            strike=cat([p.chain.strike[p.rows] for p in pending]),
            t=cat([p.t_years for p in pending]),
            rate=cat([np.full(n, p.chain.rate) for p, n in zip(pending, sizes, strict=True)]),
            carry=cat([p.carry for p in pending]),
            american=cat([p.chain.american[p.rows] for p in pending]),
            # Where searches start: the last IVs, and where the last searches ended.
            guess=cat([p.chain.pub_matrix[_IV_ROWS[:, None], p.rows] for p in pending], axis=1),
            warm=Warm(*(cat(col, axis=1) for col in zip(*_warm_states(pending), strict=True))),
        )
    )
    out: list[ChainDelta] = []
    start = 0
    for p, n in zip(pending, sizes, strict=True):
        part = slice(start, start + n)
        start += n
        greeks = Greeks(*(col[part] for col in g))
        for col, val in zip(p.chain.warm, warm, strict=True):
            col[:, p.rows] = val[:, part]
        out.append(p.chain.finish(p, iv[part], greeks, now_us, side_iv=side_iv[:, part]))
    return out


def _warm_states(pending: list[PricingInputs]) -> list[Warm]:
    return [Warm(*(col[:, p.rows] for col in p.chain.warm)) for p in pending]


def theta_to_expiry(
    theta: F64, price: F64, is_call: NDArray[np.bool_], under: F64, strike: F64, t_years: F64
) -> F64:
    """Theta as the value change over min(1 day, the remaining life), per day.

    `theta` is the model's rate x 1 day (per calendar day). With less than a day
    left that rate overstates what can still happen (it grows like 1/sqrt(t) while
    the time value shrinks like sqrt(t)), so where it is larger than the whole
    change from now to expiry (the intrinsic value at today's `under` minus `price`),
    that change is theta. Deribit's convention: the rate from a day out, the value
    left near expiry (an ATM call 2 h out loses its whole value, not 12 times it).
    """
    intrinsic = np.maximum(np.where(is_call, under - strike, strike - under), 0.0)
    to_expiry = intrinsic - price
    capped = (t_years < 1.0 / 365.0) & (np.abs(theta) > np.abs(to_expiry))
    out: F64 = np.where(capped, to_expiry, theta)
    return out


def _nan(n: int) -> F64:
    return np.full(n, np.nan)


def _count(v: float) -> int | float | None:
    if v != v:
        return None
    return int(v) if v.is_integer() else v


def _counts(values: list[float]) -> list[int | float | None]:
    return [_count(v) for v in values]


class ChainState:
    """State of one underlying: listing, quotes, computed values, and what was published.

    Bounded by the listing: memory is O(contracts). Unknown symbols in events are
    counted in `unknown_events` and skipped. With `previous` (the state of an
    earlier listing of the same underlying), what is known of contracts listed in
    both carries over: quotes, trades, computed and published values.
    """

    def __init__(
        self,
        listing: Listing,
        *,
        listed_us: int,
        stale_after_us: int = 60_000_000,
        forward_interval_us: int = 1_000_000,
        previous: ChainState | None = None,
    ) -> None:
        self.underlying = listing.underlying
        self.rate = listing.rate
        self.dividend_yield = listing.dividend_yield
        self.inverse = listing.inverse
        # Wire precision of this chain's fields (prices to the venue's digits).
        self.wire_scale = _SCALE.copy()
        if listing.inverse:
            for name in PRICE_FIELDS:
                self.wire_scale[DELTA_FIELDS.index(name)] = 10.0**COIN_PRICE_DECIMALS
        self._mark_scale = float(self.wire_scale[DELTA_FIELDS.index("mark"), 0])
        self.stale_after_us = stale_after_us
        self.contracts = listing.contracts
        n = len(listing.contracts)
        self.size = n
        self.index = {c.symbol: i for i, c in enumerate(listing.contracts)}
        self.symbols = [c.symbol for c in listing.contracts]
        self.strike = np.array([c.strike for c in listing.contracts], dtype=np.float64)
        self.expiry_us = np.array([c.expiry_us for c in listing.contracts], dtype=np.int64)
        self.is_call = np.array([c.right == "C" for c in listing.contracts], dtype=np.bool_)
        self.american = np.array(
            [c.exercise == "american" for c in listing.contracts], dtype=np.bool_
        )
        self.multiplier = np.array([c.multiplier for c in listing.contracts], dtype=np.float64)
        self.expiry_str = [c.expiry.isoformat() for c in listing.contracts]
        # Per expiry: the carry yield rows are priced with (implied from the expiry's
        # quotes, else the listing's), where it came from, and whether quotes changed.
        self.pairs = pair_contracts(self.strike, self.is_call, self.expiry_us, self.american)
        n_exp = len(self.pairs.expiry_us)
        self.expiry_carry = np.full(n_exp, listing.dividend_yield)
        self.expiry_source = np.full(n_exp, CARRY, dtype=np.int8)
        self.expiry_dirty = np.ones(n_exp, dtype=np.bool_)
        self.forward_interval_us = forward_interval_us
        self.forward_due = 0
        # Inputs from the source.
        self.bid, self.ask = _nan(n), _nan(n)
        self.bid_size, self.ask_size = _nan(n), _nan(n)
        self.venue_mark, self.forward = _nan(n), _nan(n)
        self.last, self.last_size = _nan(n), _nan(n)
        self.volume = np.zeros(n)
        # Rows whose volume the venue publishes (Quotes.volume): trades do not add to it.
        self.venue_volume = np.zeros(n, dtype=np.bool_)
        self.open_interest = (
            listing.open_interest.astype(np.float64)
            if listing.open_interest is not None
            else _nan(n)
        )
        # A contract not quoted yet counts as quoted at listing time (so not stale yet);
        # its first quote's own time replaces that, even an older one (a venue's
        # snapshot of the last quote before the listing: the record says when it was).
        self.quote_ts = np.full(n, listed_us, dtype=np.int64)
        self.quoted = np.zeros(n, dtype=np.bool_)
        self.halted = np.zeros(n, dtype=np.bool_)
        # Published (wire-rounded) values, one column per delta field.
        self.pub_matrix = np.full((len(DELTA_FIELDS), n), np.nan)
        # Per-field views of the matrix rows (writes through them update the matrix).
        self.pub: dict[str, F64] = {f: self.pub_matrix[i] for i, f in enumerate(DELTA_FIELDS)}
        self.pub["volume"][:] = 0.0
        self.pub["open_interest"][:] = self.open_interest
        self.pub_flags = np.zeros(n, dtype=np.int64)
        self.pub_source = np.zeros(n, dtype=np.int8)
        self.pub_ts = np.full(n, listed_us, dtype=np.int64)
        # Where each American row's last searches for the IVs of its mark, bid and ask
        # ended: the starts of its next ones (pricing.american.Warm, (3, rows) each).
        self.warm = no_warm_rows(n)
        # Underlying.
        self.spot = float("nan")
        self.spot_bid: float | None = None
        self.spot_ask: float | None = None
        self.spot_ts = listed_us
        # The spot moved since the greeks last followed it (processing.Processor decides when).
        self.spot_moved = False
        self.volume_day: str | None = None
        self.unknown_events = 0
        self.oi_version = 0  # grows whenever a quote changes some open interest
        if previous is not None:
            self._carry_over(previous)

    # Columns copied row for row from an earlier listing's state.
    _CARRIED = ("bid", "ask", "bid_size", "ask_size", "venue_mark", "forward", "last",
                "last_size", "volume", "venue_volume", "quote_ts", "quoted", "halted",
                "pub_flags", "pub_ts", "pub_source")  # fmt: skip

    def _carry_over(self, old: ChainState) -> None:
        pairs = [(i, old.index[s]) for i, s in enumerate(self.symbols) if s in old.index]
        self.spot, self.spot_bid, self.spot_ask = old.spot, old.spot_bid, old.spot_ask
        self.spot_ts, self.volume_day = old.spot_ts, old.volume_day
        if not pairs:
            return
        new_rows, old_rows = (np.array(c, dtype=np.intp) for c in zip(*pairs, strict=True))
        for name in self._CARRIED:
            getattr(self, name)[new_rows] = getattr(old, name)[old_rows]
        self.pub_matrix[:, new_rows] = old.pub_matrix[:, old_rows]
        for col, was in zip(self.warm, old.warm, strict=True):
            col[:, new_rows] = was[:, old_rows]
        # Open interest: the new listing's figure where it has one.
        oi = self.open_interest[new_rows]
        self.open_interest[new_rows] = np.where(np.isnan(oi), old.open_interest[old_rows], oi)
        self.pub["open_interest"][new_rows] = self.open_interest[new_rows]

    # -- inputs ---------------------------------------------------------------

    def _rows(self, symbols: list[str]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(rows, positions in the event arrays) of the known symbols."""
        get = self.index.get
        found = [get(s, -1) for s in symbols]
        rows = np.asarray(found, dtype=np.intp)
        pos = np.flatnonzero(rows >= 0)
        if len(pos) != len(rows):
            self.unknown_events += len(rows) - len(pos)
            rows = rows[pos]
        return rows, pos

    def apply_tick(self, tick: UnderlyingTick) -> dict[str, Any] | None:
        """Take an underlying tick; return its wire delta (None if nothing visible changed)."""
        delta: dict[str, Any] = {"symbol": self.underlying}
        price = round(tick.price, 4) if np.isfinite(tick.price) else None
        if price != (None if np.isnan(self.spot) else self.spot):
            delta["price"] = price
        if tick.bid != self.spot_bid:
            delta["bid"] = tick.bid
        if tick.ask != self.spot_ask:
            delta["ask"] = tick.ask
        # A first spot is no move: nothing was priced on an earlier one.
        self.spot_moved |= "price" in delta and np.isfinite(self.spot)
        self.spot = float("nan") if price is None else price
        self.spot_bid, self.spot_ask, self.spot_ts = tick.bid, tick.ask, tick.ts
        if len(delta) == 1:
            return None
        delta["ts"] = tick.ts
        return delta

    def apply_quotes(self, q: Quotes) -> NDArray[np.intp]:
        """Store quotes and venue columns (last one wins per row); return the touched rows."""
        rows, pos = self._rows(q.symbols)
        self.bid[rows] = q.bid[pos]
        self.ask[rows] = q.ask[pos]
        self.bid_size[rows] = q.bid_size[pos]
        self.ask_size[rows] = q.ask_size[pos]
        first = ~self.quoted[rows]
        if first.any():
            self.quote_ts[rows[first]] = q.ts[pos][first]
            self.quoted[rows] = True
        np.maximum.at(self.quote_ts, rows, q.ts[pos])
        self.expiry_dirty[self.pairs.row_expiry[rows]] = True
        # Per quote: a missing mark or forward means "none now" (use the mid, the spot).
        if q.mark is not None:
            self.venue_mark[rows] = q.mark[pos]
        if q.forward is not None:
            self.forward[rows] = q.forward[pos]
        if q.halted is not None:
            self.halted[rows] = q.halted[pos]
        # Venue figures: NaN means "not in this message", so the previous value stays.
        for name, col in (("last", q.last), ("volume", q.volume),
                          ("open_interest", q.open_interest)):  # fmt: skip
            if col is not None:
                given = col[pos]
                have = ~np.isnan(given)
                target = getattr(self, name)
                if name == "open_interest" and (target[rows[have]] != given[have]).any():
                    self.oi_version += 1
                target[rows[have]] = given[have]
                if name == "volume":
                    self.venue_volume[rows[have]] = True
        return rows

    def apply_trades(self, t: Trades) -> NDArray[np.intp]:
        """Store prints and add their sizes to the day's volume; return the touched rows."""
        rows, pos = self._rows(t.symbols)
        if len(rows) and len(pos):
            day = datetime.fromtimestamp(int(t.ts[pos[-1]]) / 1e6, NEW_YORK).date().isoformat()
            if day != self.volume_day:
                # Volume counts one session; a new New York date starts it again
                # (a venue's own volume figure is its own business).
                self.volume_day = day
                self.volume[~self.venue_volume] = 0.0
        self.last[rows] = t.price[pos]
        self.last_size[rows] = t.size[pos]
        counted = ~self.venue_volume[rows]
        np.add.at(self.volume, rows[counted], t.size[pos][counted])
        return rows

    # -- forwards ---------------------------------------------------------------

    def forwards_due(self, now_us: int) -> bool:
        """Whether `refresh_forwards(now_us)` would imply some expiry's forward."""
        return (
            now_us >= self.forward_due
            and not self.inverse
            and bool(np.isfinite(self.spot))
            and bool(self.expiry_dirty.any())
        )

    def refresh_forwards(self, now_us: int) -> None:
        """Imply the forwards of expiries whose quotes changed, if due (pure: `now_us` in).

        At most once per `forward_interval_us`, only for expiries quoted since, and
        at most FORWARD_EXPIRIES_PER_CALL of them (bounded cost; the others wait
        for the next call). An expiry with too few two-sided strikes falls back to the
        listing's dividend yield (`carry`). Stored as the yield the forward implies
        against the spot of the moment, so the forward follows the spot until the
        expiry's quotes change (sticky strike).
        """
        if not self.forwards_due(now_us):
            return
        # Nearest expiries first, a bounded number per call: the first call after a
        # listing finds every expiry quoted, and one batch must not pay for all of them.
        dirty = np.flatnonzero(self.expiry_dirty)[:FORWARD_EXPIRIES_PER_CALL]
        self.forward_due = now_us + self.forward_interval_us
        self.expiry_dirty[dirty] = False
        spot, r = self.spot, self.rate
        t = (self.pairs.expiry_us[dirty] - now_us) / US_PER_YEAR
        current = spot * np.exp((r - self.expiry_carry[dirty]) * t)
        fwd = implied_forwards(
            self.pairs, dirty, self.bid, self.ask, rate=r, carry=self.dividend_yield,
            t_years=t, guess=current, warm=bool(np.all(self.expiry_source[dirty] == IMPLIED)),
        )  # fmt: skip
        found = np.isfinite(fwd)
        with np.errstate(divide="ignore", invalid="ignore"):
            implied = r - np.log(fwd / spot) / t
        self.expiry_carry[dirty[found]] = implied[found]
        self.expiry_source[dirty[found]] = IMPLIED
        self.expiry_carry[dirty[~found]] = self.dividend_yield
        self.expiry_source[dirty[~found]] = CARRY

    # -- reprice + diff ---------------------------------------------------------

    def prepare(self, rows: NDArray[np.intp], now_us: int) -> PricingInputs:
        """The pricing inputs of `rows` (deduplicated) at `now_us`."""
        rows = np.unique(rows)
        bid, ask = self.bid[rows], self.ask[rows]
        has_bid = bid > 0
        both = has_bid & (ask > 0)
        # Mark: the venue's (0 included: a mark of 0 is a mark, which no IV fits); else
        # the mid of a two-sided quote; else none. Half the ask is not a mark: with no
        # bid, a row without a venue mark has no mark and no IV (flagged no_bid).
        mid = np.where(both, (bid + ask) * 0.5, np.nan)
        venue = self.venue_mark[rows]
        # The IV is solved for the mark as published, so a client recomputes it exactly.
        scale = self._mark_scale
        mark = np.rint(np.where(np.isnan(venue), mid, venue) * scale) / scale
        t_years = (self.expiry_us[rows] - now_us) / US_PER_YEAR
        venue_fwd = self.forward[rows]
        on_fwd = np.isfinite(venue_fwd) & (venue_fwd > 0)
        expiry = self.pairs.row_expiry[rows]
        # On the expiry's forward F: priced on the spot-equivalent F e^{-(r - q)T} with
        # the listing's yield q, which is Black-76 on F for European rows, and keeps
        # American rows on the boundary tables of the one yield q (an implied yield
        # per expiry would solve new tables at every change of it).
        q = self.dividend_yield
        implied = self.spot * np.exp((self.rate - self.expiry_carry[expiry]) * t_years)
        forward = np.where(on_fwd, venue_fwd, implied)
        spot = np.where(on_fwd, venue_fwd, implied * np.exp(-(self.rate - q) * t_years))
        carry = np.where(on_fwd, self.rate, q)
        source = np.where(on_fwd, VENUE, self.expiry_source[expiry]).astype(np.int8)
        source[~np.isfinite(forward)] = NO_FORWARD
        price = mark * spot if self.inverse else mark
        sides = np.stack([np.where(has_bid, bid, np.nan), np.where(ask > 0, ask, np.nan)])
        if self.inverse:
            sides = sides * spot
        return PricingInputs(
            self, rows, mark, price, sides, spot, carry, forward, source, t_years, both, has_bid
        )

    def finish(
        self, p: PricingInputs, iv: F64, g: Greeks, now_us: int, *, side_iv: F64 | None = None
    ) -> ChainDelta:
        """Diff priced rows against what was published; mark the changes published.

        `side_iv`: (2, rows) IVs of the bid and the ask (None: unknown, published null).
        Returns the wire deltas of the rows whose visible values changed and their
        new full records.
        """
        rows, mark, both, has_bid = p.rows, p.mark, p.both, p.has_bid
        if len(rows) == 0:
            return ChainDelta([], [])
        bid, ask = self.bid[rows], self.ask[rows]
        flags = np.zeros(len(rows), dtype=np.int64)
        flags |= np.where(both & (bid > ask), _BITS[Flag.CROSSED], 0)
        flags |= np.where(~has_bid & ~np.isnan(ask), _BITS[Flag.NO_BID], 0)
        flags |= np.where(np.isfinite(mark) & np.isnan(iv), _BITS[Flag.IV_FAILED], 0)
        flags |= np.where(now_us - self.quote_ts[rows] > self.stale_after_us, _BITS[Flag.STALE], 0)
        flags |= np.where(self.halted[rows], _BITS[Flag.HALTED], 0)
        theta = theta_to_expiry(
            g.theta, p.price, self.is_call[rows], p.spot, self.strike[rows], p.t_years
        )
        iv_bid, iv_ask = side_iv if side_iv is not None else (_nan(len(rows)), _nan(len(rows)))
        # One (fields x rows) matrix, rounded to wire precision in one step.
        new = np.stack(
            [
                bid, ask, self.bid_size[rows], self.ask_size[rows], mark, self.last[rows],
                self.last_size[rows], self.volume[rows], self.open_interest[rows], iv,
                iv_bid, iv_ask, g.delta, g.gamma, theta, g.vega, g.rho,
                np.where(np.isfinite(iv), p.spot, np.nan), np.where(np.isfinite(iv), p.forward, np.nan),
            ]
        )  # fmt: skip
        new = to_wire(new, self.wire_scale)
        # On the IV as published: a client seeing 5.0 must not see the flag beside it.
        wire_iv = new[_IV_ROW]
        flags |= np.where((wire_iv < IV_LOW) | (wire_iv > IV_HIGH), _BITS[Flag.IV_OUT_OF_RANGE], 0)
        old = self.pub_matrix[:, rows]
        masks = (new != old) & ~(np.isnan(new) & np.isnan(old))
        flag_mask = flags != self.pub_flags[rows]
        source = np.where(np.isfinite(new[_FORWARD_ROW]), p.source, NO_FORWARD).astype(np.int8)
        source_mask = source != self.pub_source[rows]
        sel = np.flatnonzero(flag_mask | source_mask | masks.any(axis=0))
        if len(sel) == 0:
            return ChainDelta([], [])
        out_rows = rows[sel]
        ts = np.maximum(self.quote_ts[out_rows], self.spot_ts)
        symbols = self.symbols
        deltas: list[dict[str, Any]] = [
            {"symbol": symbols[r], "ts": t}
            for r, t in zip(out_rows.tolist(), ts.tolist(), strict=True)
        ]
        masks, new = masks[:, sel], new[:, sel]
        # Field-major order, so each delta's keys come out in wire order.
        fields, at = np.nonzero(masks)
        for f, i, v in zip(fields.tolist(), at.tolist(), new[fields, at].tolist(), strict=True):
            if f in _INT_FIELD_INDEX:
                deltas[i][DELTA_FIELDS[f]] = _count(v)
            else:
                deltas[i][DELTA_FIELDS[f]] = v
        # Unchanged fields hold their published value already, so the whole block is written.
        self.pub_matrix[:, out_rows] = new
        fl = flags[sel]
        for i in np.flatnonzero(flag_mask[sel]).tolist():
            deltas[i]["flags"] = FLAG_LISTS[fl[i]]
        self.pub_flags[out_rows] = fl
        src = source[sel]
        for i in np.flatnonzero(source_mask[sel]).tolist():
            deltas[i]["forward_source"] = FORWARD_SOURCES[src[i]]
        self.pub_source[out_rows] = src
        self.pub_ts[out_rows] = ts
        return ChainDelta(deltas, self.full_records(out_rows))

    def reprice(self, rows: NDArray[np.intp], now_us: int) -> ChainDelta:
        """Reprice `rows` at `now_us` and diff them (`prepare` + pricing + `finish`)."""
        return reprice_chains([(self, rows)], now_us)[0]

    def follow_spot(self, now_us: int, rows: NDArray[np.intp]) -> ChainDelta:
        """Greeks of `rows` (those with an IV) at the current spot and their published IVs.

        Sticky strike: each row keeps its IV (which only its own quote changes) and
        its delta, gamma, theta, vega, rho, `underlying_price` and `forward` are
        recomputed at the spot of now. A row follows only when a greek moved by what
        a desk would see (`_moved`): otherwise every spot tick would resend every row
        (a greek's 6th significant digit always moves), about 15,000 updates/s of
        noise; such a row keeps the greeks and `underlying_price` they were computed
        at, consistent with each other. Of a row that follows, only fields whose
        published value changed are sent.
        """
        iv_all = self.pub["iv"]
        rows = rows[np.isfinite(iv_all[rows])]
        if len(rows) == 0:
            return ChainDelta([], [])
        p = self.prepare(rows, now_us)
        iv = iv_all[rows]
        rate = np.full(len(rows), self.rate)
        g = greeks_by_exercise(self.is_call[rows], p.spot, self.strike[rows], p.t_years, rate,
                               p.carry, iv, self.american[rows])  # fmt: skip
        moved = np.flatnonzero(_moved(g, self.pub, rows))
        if len(moved) < len(rows):
            rows, iv, p = rows[moved], iv[moved], _take_inputs(p, moved)
            g = Greeks(*(col[moved] for col in g))
        sides = np.stack([self.pub["iv_bid"][rows], self.pub["iv_ask"][rows]])
        return self.finish(p, iv, g, now_us, side_iv=sides)

    def stale_rows(self, now_us: int) -> NDArray[np.intp]:
        """Rows whose quote went stale (or fresh again) since they were last published."""
        stale = (now_us - self.quote_ts) > self.stale_after_us
        was = (self.pub_flags & _BITS[Flag.STALE]) != 0
        return np.flatnonzero(stale != was)

    # -- full records -----------------------------------------------------------

    def full_records(self, rows: NDArray[np.intp] | None = None) -> list[tuple[str, bytes]]:
        """(symbol, full record JSON) of `rows` (all when None), from published values."""
        if rows is None:
            rows = np.arange(self.size, dtype=np.intp)
        rl = rows.tolist()
        p = self.pub
        col = {name: p[name][rows].tolist() for name in DELTA_FIELDS}
        for name in INT_FIELDS:
            col[name] = _counts(col[name])
        flags = self.pub_flags[rows].tolist()
        source = self.pub_source[rows].tolist()
        ts = self.pub_ts[rows].tolist()
        contracts = self.contracts
        out: list[tuple[str, bytes]] = []
        for i, r in enumerate(rl):
            c: Contract = contracts[r]
            rec = OptionRecord(
                c.symbol, c.underlying, c.root, self.expiry_str[r], c.strike, c.right,
                c.multiplier, col["bid"][i], col["ask"][i], col["bid_size"][i],
                col["ask_size"][i], col["mark"][i], col["last"][i], col["last_size"][i],
                col["volume"][i], col["open_interest"][i], col["iv"][i], col["delta"][i],
                col["gamma"][i], col["theta"][i], col["vega"][i], col["rho"][i],
                col["underlying_price"][i], ts[i], FLAG_LISTS[flags[i]],
            )  # fmt: skip
            rec.iv_bid, rec.iv_ask = col["iv_bid"][i], col["iv_ask"][i]
            rec.forward, rec.forward_source = col["forward"][i], FORWARD_SOURCES[source[i]]
            if c.currency is not None:
                rec.currency = c.currency
            rec.exercise = c.exercise
            out.append((c.symbol, encode(rec)))
        return out

    def underlying_record(self) -> UnderlyingRecord:
        """The full `underlying.{U}` record."""
        return UnderlyingRecord(
            self.underlying,
            None if np.isnan(self.spot) else self.spot,
            self.spot_bid,
            self.spot_ask,
            self.rate,
            self.dividend_yield,
            self.spot_ts,
        )
