"""A deterministic simulated options market (pure: time comes in, batches go out).

Model, per underlying:
- Spot: geometric Brownian motion in trading time (252 days of 6.5 hours a year,
  so intraday moves look like a real session) plus Poisson jumps.
- Volatility: an SSVI surface per expiry (Gatheral-Jacquier), total variance
  w(k) = theta/2 (1 + rho phi k + sqrt((phi k + rho)^2 + 1 - rho^2)) with
  phi = eta / sqrt(theta); the ATM term structure decays from the short level to
  the long one; the short level mean-reverts and moves against spot (leverage).
- Quotes: the model price (American for American listings, by
  `pricing.american`, European otherwise), a spread that widens with price and for non-penny
  classes, tick rules ($0.01 throughout for penny classes, else $0.01 under $3 and
  $0.05 above), a no-bid below one tick, sizes that grow toward the money.
- Message mix: each step an underlying ticks, then its contracts are requoted,
  drawn with weight falling away from the money and with time to expiry, plus a
  round-robin slice so every contract is refreshed within `refresh_s`.
- Trades: a fraction of requotes print at the bid, the ask or the mid; open
  interest is drawn once per listing (fixed for the day).
Same seed + same start + same step times -> the same batches, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ...model.contract import Contract
from ...pricing.american import price_by_exercise
from ..base import Listing, Quotes, SourceBatch, Trades, UnderlyingTick
from .listing import build_listing
from .strikes import profiles_for
from .universe import UnderlyingSpec

F64 = NDArray[np.float64]
US_PER_YEAR = 365.0 * 86_400e6
TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600
SSVI_ETA = 1.2
TERM_DECAY_YEARS = 0.25
JUMP_RATE_PER_HOUR = 0.5
JUMP_MEAN, JUMP_SD = -0.004, 0.008
VOL_REVERSION_PER_HOUR = 0.5
VOL_OF_VOL = 1.5  # annualized, in trading time
LEVERAGE = -0.7
TRADE_PROBABILITY = 0.08
REWEIGHT_US = 30_000_000  # refit draw weights to the moving spot this often


@dataclass(slots=True)
class _Underlying:
    spec: UnderlyingSpec
    contracts: list[Contract]
    strike: F64
    expiry_us: NDArray[np.int64]
    is_call: NDArray[np.bool_]
    american: NDArray[np.bool_]
    cdf: F64  # cumulative draw weights (normalized)
    spot: float
    short_vol: float
    skew: float
    last_tick_price: float
    rr: int = 0  # round-robin position
    weights_us: int = 0  # when the draw weights were last fitted to spot
    next_expiry_us: int = 0


def _round_up(x: F64, tick: F64) -> F64:
    return np.ceil(np.round(x / tick, 6)) * tick


def _round_down(x: F64, tick: F64) -> F64:
    return np.floor(np.round(x / tick, 6)) * tick


@dataclass(slots=True)
class _Priced:
    """Rows of one underlying quoted in a step, with what they are priced with."""

    u: _Underlying
    rows: NDArray[np.intp]
    t: F64
    fwd: F64
    vol: F64


class SimMarket:
    """The simulated market of `specs`, started at `start_us` with `seed`."""

    def __init__(
        self, specs: list[UnderlyingSpec], *, seed: int, start_us: int, refresh_s: float = 20.0
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.now_us = start_us
        self.refresh_s = refresh_s
        self._pending_listings: list[Listing] = []
        self.underlyings: dict[str, _Underlying] = {}
        for spec in specs:
            self.underlyings[spec.symbol] = self._list(spec, spec.spot, spec.atm_vol, spec.skew)
        total = sum(s.activity for s in specs)
        self.activity = np.array([s.activity / total for s in specs])
        self.active = set(self.underlyings)  # the ones simulated (see `select`)
        self._active_weights = self.activity

    def select(self, names: set[str]) -> None:
        """Simulate only `names` (of those this market has) from now on: the others stand
        still. One that comes back is listed again (a new listing from where it stood),
        since whoever consumes it has not followed it meanwhile."""
        names = names & self.underlyings.keys()
        for sym in sorted(names - self.active):
            u = self.underlyings[sym]
            self.underlyings[sym] = self._list(u.spec, u.spot, u.short_vol, u.skew)
        self.active = names
        w = np.array(
            [a if s in names else 0.0 for s, a in zip(self.underlyings, self.activity, strict=True)]
        )
        self._active_weights = w / w.sum() if w.sum() > 0 else w

    def share(self) -> float:
        """The share of the whole market's activity that is simulated now (0..1)."""
        return float(
            sum(a for s, a in zip(self.underlyings, self.activity, strict=True) if s in self.active)
        )

    # -- listing ----------------------------------------------------------------

    def _list(
        self, spec: UnderlyingSpec, spot: float, short_vol: float, skew: float
    ) -> _Underlying:
        exp_profile, strike_profile = profiles_for(spec.symbol, spot)
        contracts = build_listing(spec.symbol, spot, exp_profile, strike_profile, self.now_us)
        strike = np.array([c.strike for c in contracts])
        expiry_us = np.array([c.expiry_us for c in contracts], dtype=np.int64)
        is_call = np.array([c.right == "C" for c in contracts])
        american = np.array([c.exercise == "american" for c in contracts], dtype=np.bool_)
        u = _Underlying(
            spec, contracts, strike, expiry_us, is_call, american, np.zeros(0), spot,
            short_vol, skew, last_tick_price=float("nan"), next_expiry_us=int(expiry_us.min()),
        )  # fmt: skip
        u.cdf = self._weights(u)
        u.weights_us = self.now_us
        oi = self._open_interest(u)
        self._pending_listings.append(
            Listing(spec.symbol, contracts, spec.rate, spec.dividend_yield, oi)
        )
        return u

    def _weights(self, u: _Underlying) -> F64:
        """Draw weights: near the money and short expiries update most."""
        t = np.maximum((u.expiry_us - self.now_us) / US_PER_YEAR, 1.0 / 365.0)
        sd = np.maximum(u.short_vol * np.sqrt(t), 0.01)
        z = np.log(u.strike / u.spot) / sd
        w = np.exp(-0.5 * (z / 1.5) ** 2) / (t * 365.0 + 1.0) ** 0.7 + 1e-4
        c: F64 = np.cumsum(w)
        out: F64 = c / c[-1]
        return out

    def _open_interest(self, u: _Underlying) -> F64:
        t = np.maximum((u.expiry_us - self.now_us) / US_PER_YEAR, 1.0 / 365.0)
        z = np.log(u.strike / u.spot) / np.maximum(u.short_vol * np.sqrt(t), 0.02)
        # Puts carry more open interest below the money, calls above: hedgers and overwriters.
        tilt = np.where(u.is_call, np.exp(0.3 * z), np.exp(-0.3 * z))
        mean = 4000.0 * np.exp(-0.5 * (z / 2.0) ** 2) * tilt / (1.0 + 2.0 * t) + 20.0
        return np.round(mean * self.rng.lognormal(0.0, 0.5, len(z)))

    def listings(self) -> list[Listing]:
        """Listings made since the last call (all of them at first)."""
        out, self._pending_listings = self._pending_listings, []
        return out

    # -- model --------------------------------------------------------------------

    def implied_vol(self, u: _Underlying, rows: NDArray[np.intp], t: F64, fwd: F64) -> F64:
        """The surface's volatility for `rows` (SSVI at their log-moneyness)."""
        long = u.spec.long_vol
        atm = long + (u.short_vol - long) * np.exp(-t / TERM_DECAY_YEARS)
        theta = atm * atm * t
        phi = SSVI_ETA / np.sqrt(theta)
        k = np.log(u.strike[rows] / fwd)
        rho = u.skew
        w = 0.5 * theta * (1 + rho * phi * k + np.sqrt((phi * k + rho) ** 2 + 1 - rho * rho))
        vol: F64 = np.sqrt(w / t)
        return vol

    def _evolve(self, u: _Underlying, dt_s: float) -> None:
        rng = self.rng
        dt = dt_s / TRADING_SECONDS_PER_YEAR
        z1, z2 = rng.standard_normal(2)
        jump = 0.0
        if rng.random() < JUMP_RATE_PER_HOUR * dt_s / 3600.0:
            jump = rng.normal(JUMP_MEAN, JUMP_SD)
        vol = u.short_vol
        u.spot *= math.exp(-0.5 * vol * vol * dt + vol * math.sqrt(dt) * z1 + jump)
        zv = LEVERAGE * z1 + math.sqrt(1 - LEVERAGE**2) * z2
        kappa = VOL_REVERSION_PER_HOUR * dt_s / 3600.0
        u.short_vol += kappa * (u.spec.atm_vol - vol) + VOL_OF_VOL * vol * math.sqrt(dt) * zv
        u.short_vol -= 3.0 * jump * vol  # a down jump lifts volatility
        u.short_vol = min(max(u.short_vol, 0.3 * u.spec.atm_vol), 4.0 * u.spec.atm_vol)
        u.skew = min(
            max(u.skew + 0.02 * math.sqrt(dt_s) * rng.standard_normal() * 0.05, -0.95), 0.2
        )

    def _inputs(self, u: _Underlying, rows: NDArray[np.intp]) -> _Priced:
        """What `rows` of `u` are priced with now (their prices to follow)."""
        t = np.maximum((u.expiry_us[rows] - self.now_us) / US_PER_YEAR, 1e-6)
        fwd = u.spot * np.exp((u.spec.rate - u.spec.dividend_yield) * t)
        return _Priced(u, rows, t, fwd, self.implied_vol(u, rows, t, fwd))

    @staticmethod
    def _price(todo: list[_Priced]) -> list[F64]:
        """The model prices of every underlying's rows of a step, one array per entry
        of `todo`: one call per exercise style for all of them. A call has a fixed
        cost (American prices of 8 rows: 0.36 ms; of 200: 0.52 ms), which five
        underlyings would pay five times a step."""
        cat = np.concatenate
        sizes = [len(p.rows) for p in todo]

        def each(f: Callable[[_Priced], F64 | float]) -> F64:
            return cat([np.broadcast_to(f(p), n) for p, n in zip(todo, sizes, strict=True)])

        theo = price_by_exercise(
            cat([p.u.is_call[p.rows] for p in todo]), each(lambda p: p.u.spot),
            each(lambda p: p.u.strike[p.rows]), each(lambda p: p.t),
            each(lambda p: p.u.spec.rate), each(lambda p: p.u.spec.dividend_yield),
            each(lambda p: p.vol), cat([p.u.american[p.rows] for p in todo]),
        )  # fmt: skip
        return np.split(theo, np.cumsum(sizes)[:-1])

    def _quote(self, p: _Priced, theo: F64, ts: int) -> tuple[Quotes, Trades]:
        rng = self.rng
        u, rows, t, fwd, vol = p.u, p.rows, p.t, p.fwd, p.vol
        spec = u.spec
        n = len(rows)
        theo = np.nan_to_num(theo, nan=0.0)
        if spec.penny_all:
            frac, fine = 0.003, np.full(n, 0.01)
            tick_hi = fine
        else:
            frac, fine = 0.012, np.full(n, 0.01)
            tick_hi = np.full(n, 0.05)
        spread = (0.01 + frac * theo) * rng.uniform(0.8, 1.6, n)
        lo, hi = theo - spread / 2, theo + spread / 2
        bid = np.where(lo >= 3.0, _round_down(lo, tick_hi), _round_down(lo, fine))
        ask = np.where(hi >= 3.0, _round_up(hi, tick_hi), _round_up(hi, fine))
        bid = np.where(bid < 0.01, 0.0, bid)
        ask = np.maximum(ask, np.where(bid > 0, bid + 0.01, 0.01))
        bid, ask = np.round(bid, 2).astype(np.float64), np.round(ask, 2).astype(np.float64)
        near = np.exp(-0.5 * (np.log(u.strike[rows] / fwd) / (vol * np.sqrt(t))) ** 2)
        lam = 5.0 + 250.0 * near
        bid_size = np.where(bid > 0, 1.0 + rng.poisson(lam), 0.0).astype(np.float64)
        ask_size = (1.0 + rng.poisson(lam)).astype(np.float64)
        tsa = np.full(n, ts, dtype=np.int64)
        symbols = [u.contracts[r].symbol for r in rows.tolist()]
        quotes = Quotes(spec.symbol, symbols, bid, ask, bid_size, ask_size, tsa)
        trade = np.flatnonzero(rng.random(n) < TRADE_PROBABILITY)
        side = rng.random(len(trade))
        tb, ta = bid[trade], ask[trade]
        mid = np.round((tb + ta) / 2, 2)
        price = np.where((side < 0.4) & (tb > 0), tb, np.where(side < 0.8, ta, mid))
        size = 1.0 + rng.geometric(0.25, len(trade)) - 1.0
        trades = Trades(
            spec.symbol,
            [symbols[i] for i in trade.tolist()],
            price,
            size.astype(np.float64),
            tsa[trade],
        )
        return quotes, trades

    # -- stepping -------------------------------------------------------------------

    def step(self, now_us: int, updates: int) -> SourceBatch:
        """Advance the market to `now_us` and produce about `updates` updates.

        Each underlying's tick counts as one update; the rest are quotes (trades ride
        along with some quotes and are not counted). `now_us` never goes backwards.
        """
        dt_s = max(now_us - self.now_us, 0) / 1e6
        self.now_us = max(now_us, self.now_us)
        batch = SourceBatch()
        for sym, u in list(self.underlyings.items()):
            if sym in self.active and self.now_us >= u.next_expiry_us:
                # An expiry passed: list again, like a new day.
                self.underlyings[sym] = self._list(u.spec, u.spot, u.short_vol, u.skew)
        batch.listings = self.listings()
        if not self.active:
            return batch
        per = self.rng.multinomial(max(updates, 0), self._active_weights)
        todo: list[_Priced] = []
        for u, n in zip(self.underlyings.values(), per.tolist(), strict=True):
            if u.spec.symbol not in self.active:
                continue
            self._evolve(u, dt_s)
            if self.now_us - u.weights_us > REWEIGHT_US:
                u.cdf, u.weights_us = self._weights(u), self.now_us
            price = round(u.spot, 2)
            if price != u.last_tick_price and n > 0:
                spread = 0.01
                batch.ticks.append(
                    UnderlyingTick(
                        u.spec.symbol,
                        price,
                        round(price - spread, 2),
                        round(price + spread, 2),
                        self.now_us,
                    )
                )
                u.last_tick_price = price
                n -= 1
            if n <= 0:
                continue
            size = len(u.contracts)
            rr = min(n // 2, math.ceil(size * dt_s / self.refresh_s))
            rr_rows = (u.rr + np.arange(rr)) % size
            u.rr = (u.rr + rr) % size
            drawn = np.searchsorted(u.cdf, self.rng.random(n - rr))
            rows = np.concatenate([rr_rows, np.minimum(drawn, size - 1)]).astype(np.intp)
            todo.append(self._inputs(u, rows))
        for p, theo in zip(todo, self._price(todo) if todo else [], strict=True):
            quotes, trades = self._quote(p, theo, self.now_us)
            batch.quotes.append(quotes)
            if trades.symbols:
                batch.trades.append(trades)
        return batch
