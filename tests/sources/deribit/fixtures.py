"""What the Deribit tests share: instrument definitions, tickers, recorded real tickers,
and a way to run a DeribitSource against the local venue (`fast_source`, `Feed`).

The builders spell instrument names on their own (not with the code under test),
and fill in the fields Deribit sends that we do not use, so the adapter is shown
tolerating them.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from optionsfeed.aio import cancel_and_wait
from optionsfeed.sources.base import Listing, SourceBatch
from optionsfeed.sources.deribit.source import DeribitSource

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
MS_PER_YEAR = 365 * 86_400_000
TICK = 0.0005  # BTC and ETH options' price tick


def option_name(currency: str, expiry: date, strike: int, right: str) -> str:
    """Deribit's spelling: BTC-3JAN26-100000-C (no leading zero in the day)."""
    return (
        f"{currency}-{expiry.day}{MONTHS[expiry.month - 1]}{expiry.year % 100:02d}-{strike}-{right}"
    )


def expiry_ms(expiry: date) -> int:
    """08:00 UTC on `expiry`, in ms."""
    return int(datetime(expiry.year, expiry.month, expiry.day, 8, tzinfo=UTC).timestamp() * 1000)


def instrument(
    currency: str, expiry: date, strike: int, option_type: str, /, **override: Any
) -> dict[str, Any]:
    """A `public/get_instruments` element of an inverse option; `override` changes fields."""
    right = "C" if option_type == "call" else "P"
    out: dict[str, Any] = {
        "tick_size": 0.0005,
        "tick_size_steps": [{"above_price": 0.005, "tick_size": 0.0005}],
        "taker_commission": 0.0003,
        "strike": float(strike),
        "settlement_period": "week",
        "settlement_currency": currency,
        "rfq": False,
        "quote_currency": currency,
        "price_index": f"{currency.lower()}_usd",
        "option_type": option_type,
        "min_trade_amount": 0.1,
        "maker_commission": 0.0003,
        "kind": "option",
        "is_active": True,
        "instrument_name": option_name(currency, expiry, strike, right),
        "instrument_id": 100_000 + strike // 100,
        "expiration_timestamp": expiry_ms(expiry),
        "creation_timestamp": expiry_ms(expiry) - 30 * 86_400_000,
        "counter_currency": "USD",
        "contract_size": 1.0,
        "block_trade_tick_size": 0.0001,
        "block_trade_min_trade_amount": 25,
        "block_trade_commission": 0.00015,
        "base_currency": currency,
    }
    out.update(override)
    return out


def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def inverse_price(forward: float, strike: float, t_years: float, vol: float, right: str) -> float:
    """Black-76 price (rate 0) of the USD value, in units of the coin (7 decimals, as
    Deribit's mark_price; its book prices are on the 0.0005 tick, see `ticker`)."""
    s = vol * math.sqrt(t_years)
    d1 = math.log(forward / strike) / s + s / 2
    d2 = d1 - s
    if right == "C":
        usd = forward * _ncdf(d1) - strike * _ncdf(d2)
    else:
        usd = strike * _ncdf(-d2) - forward * _ncdf(-d1)
    return round(usd / forward, 7)


def ticker(
    inst: dict[str, Any], timestamp_ms: int, forward: float, *, vol: float = 0.5, **override: Any
) -> dict[str, Any]:
    """A full ticker notification's data for `inst`, priced at `vol` on `forward`."""
    right = "C" if inst["option_type"] == "call" else "P"
    t = (inst["expiration_timestamp"] - timestamp_ms) / MS_PER_YEAR
    mark = inverse_price(forward, inst["strike"], t, vol, right)
    on_tick = round(mark / TICK) * TICK
    out: dict[str, Any] = {
        "timestamp": timestamp_ms,
        "stats": {"volume_usd": 1000.0, "volume": 12.3, "price_change": None, "low": None,
                  "high": None},
        "state": "open",
        "settlement_price": mark,
        "open_interest": 42.5,
        "min_price": 0.0001,
        "max_price": 0.5,
        "mark_price": mark,
        "mark_iv": vol * 100,
        "last_price": mark,
        "interest_rate": 0.0,
        "instrument_name": inst["instrument_name"],
        "index_price": forward - 10.0,
        "greeks": {"rho": 1.0, "theta": -1.0, "vega": 1.0, "gamma": 0.0001, "delta": 0.5},
        "estimated_delivery_price": forward - 10.0,
        "bid_iv": vol * 100 - 1,
        "best_bid_price": round(max(on_tick - TICK, 0.0), 4),
        "best_bid_amount": 10.0,
        "best_ask_price": round(on_tick + TICK, 4),
        "best_ask_amount": 12.5,
        "ask_iv": vol * 100 + 1,
        "underlying_price": forward,
        "underlying_index": f"{inst['base_currency']}-{inst['instrument_name'].split('-')[1]}",
    }  # fmt: skip
    out.update(override)
    return out


def friday_after(day: date, weeks: int) -> date:
    """The Friday `weeks` weeks after the first Friday after `day`."""
    return day + timedelta(days=(4 - day.weekday()) % 7 or 7) + timedelta(weeks=weeks)


def chain(currency: str, today: date, spot: float) -> list[dict[str, Any]]:
    """Two weekly expiries x three strikes x call/put of inverse options around `spot`."""
    step = 10_000 if currency == "BTC" else 500
    atm = int(round(spot / step) * step)
    out = []
    for weeks in (0, 4):
        expiry = friday_after(today, weeks)
        for strike in (atm - step, atm, atm + step):
            for option_type in ("call", "put"):
                out.append(instrument(currency, expiry, strike, option_type))
    return out


def unusable(currency: str, today: date) -> list[dict[str, Any]]:
    """Instruments a BTC/ETH listing must skip: linear, a bad name, a disagreeing one."""
    expiry = friday_after(today, 1)
    linear = instrument(currency, expiry, 90_000, "call", quote_currency="USDC",
                        settlement_currency="USDC")  # fmt: skip
    linear["instrument_name"] = f"{currency}_USDC-" + linear["instrument_name"].split("-", 1)[1]
    bad_name = instrument(
        currency, expiry, 80_000, "put", instrument_name=f"{currency}-31FEB27-80000-P"
    )
    disagrees = instrument(currency, expiry, 70_000, "call")
    disagrees["strike"] = 75_000.0  # the name says 70000
    return [linear, bad_name, disagrees]


@dataclass(frozen=True, slots=True)
class Recorded:
    """A real ticker from Deribit (values as published) and what Deribit computed."""

    data: dict[str, Any]
    expiry: datetime
    mark_iv: float  # percent, as Deribit publishes it
    greeks: dict[str, float]

    @property
    def instrument(self) -> dict[str, Any]:
        name = self.data["instrument_name"]
        currency, _, strike, right = name.split("-")
        return instrument(
            currency, self.expiry.date(), int(strike), "call" if right == "C" else "put"
        )


def _recorded(
    name: str, ts: int, expiry: datetime, *, underlying: float, index: float, mark: float,
    mark_iv: float, bid: tuple[float, float], ask: tuple[float, float], oi: float,
    greeks: tuple[float, float, float, float, float], last: float | None = None,
    volume: float | None = None,
) -> Recorded:  # fmt: skip
    data: dict[str, Any] = {
        "instrument_name": name,
        "timestamp": ts,
        # Not part of the recorded values; every ticker carries it, "open" while quoted.
        "state": "open",
        "underlying_price": underlying,
        "index_price": index,
        "mark_price": mark,
        "mark_iv": mark_iv,
        "best_bid_price": bid[0],
        "best_bid_amount": bid[1],
        "best_ask_price": ask[0],
        "best_ask_amount": ask[1],
        "open_interest": oi,
        "greeks": dict(zip(("delta", "gamma", "vega", "theta", "rho"), greeks, strict=True)),
    }
    if last is not None:
        data["last_price"] = last
    if volume is not None:
        data["stats"] = {"volume": volume}
    return Recorded(data, expiry, mark_iv, data["greeks"])


def _at8(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 8, tzinfo=UTC)


# Real public ticker notifications of BTC options (values only, as published).
RECORDED = [
    _recorded(
        "BTC-24JUN22-15000-P", 1638355095066, _at8(2022, 6, 24), underlying=60041.9,
        index=56942.12, mark=0.0050063, mark_iv=102.15, bid=(0.0045, 34.5), ask=(0.0055, 3.2),
        oi=430.5, greeks=(-0.01408, 0.0, 16.13665, -4.02251, -6.43421),
    ),
    _recorded(
        "BTC-30SEP22-60000-C", 1654161839367, _at8(2022, 9, 30), underlying=30220.5,
        index=29939.43, mark=0.0084, mark_iv=67.7, bid=(0.008, 2.8), ask=(0.009, 18.5),
        last=0.009, oi=1767.5, volume=16.7,
        greeks=(0.05785, 0.00001, 20.05335, -5.65962, 4.91491),
    ),
    _recorded(
        "BTC-23FEB24-45000-C", 1707627659690, _at8(2024, 2, 23), underlying=48559.14,
        index=48321.99, mark=0.0815, mark_iv=46.17, bid=(0.0775, 32.3), ask=(0.0865, 32.4),
        last=0.085, oi=1716.9, volume=52.3,
        greeks=(0.82809, 0.00006, 22.55662, -42.9504, 12.04475),
    ),
    _recorded(
        "BTC-15SEP26-77000-C", 1789344931096, _at8(2026, 9, 15), underlying=76904.4,
        index=76900.24, mark=0.0069, mark_iv=31.2, bid=(0.0065, 10.0), ask=(0.0075, 10.0),
        last=0.0065, oi=534.4, volume=1555.0,
        greeks=(0.47736, 0.00028, 18.43602, -217.49347, 1.31068),
    ),
]  # fmt: skip


def notification(channel: str, data: Any) -> dict[str, Any]:
    """A JSON-RPC subscription notification as Deribit sends it."""
    return {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {"channel": channel, "data": data},
    }


# -- running a source against the venue ----------------------------------------

# Timings shrunk for tests: heartbeats every 0.2 s (silence after 0.4 s), quick retries.
FAST: dict[str, Any] = {
    "heartbeat_s": 0.2,
    "backoff_min_s": 0.02,
    "backoff_max_s": 0.1,
    "request_timeout_s": 5.0,
    "connect_timeout_s": 5.0,
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fast_source(underlyings: list[str], url: str, **options: Any) -> DeribitSource:
    """A DeribitSource with the test timings (overridable) and a seeded jitter."""
    return DeribitSource(underlyings, url, **{**FAST, "rng": random.Random(7), **options})


async def until(cond: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    """Wait for `cond` on state another task owns (the source exposes no event for it)."""
    async with asyncio.timeout(limit_s):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert cond(), what


class Feed:
    """Reads a source's batches in a task it owns; tests await conditions on them.

    An async context manager: leaving it cancels the reader, which closes the source.
    """

    def __init__(self, source: DeribitSource) -> None:
        self.source = source
        self.batches: list[SourceBatch] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            assert await cancel_and_wait(self._task)

    async def _read(self) -> None:
        try:
            async for batch in self.source.batches():
                self.batches.append(batch)
                async with self._changed:
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, pred: Callable[[], bool], limit_s: float = 10.0) -> None:
        """Return once `pred()` holds (checked after every batch); raise if the source fails."""
        task = self._task
        assert task is not None
        async with asyncio.timeout(limit_s), self._changed:
            await self._changed.wait_for(lambda: task.done() or pred())
        if task.done():
            task.result()
            raise AssertionError("the source ended")

    def listings(self, underlying: str | None = None) -> list[Listing]:
        return [
            lst
            for b in self.batches
            for lst in b.listings
            if underlying is None or lst.underlying == underlying
        ]

    def quoted(self) -> list[tuple[str, float, float, int]]:
        """(symbol, bid, forward, ts) of every quote received, in order."""
        out: list[tuple[str, float, float, int]] = []
        for b in self.batches:
            for q in b.quotes:
                assert q.forward is not None
                out.extend(
                    zip(q.symbols, q.bid.tolist(), q.forward.tolist(), q.ts.tolist(), strict=True)
                )
        return out
