"""Which US equity option expiries are listed on a given day, and their expiry instants.

Nominal expiries (dailies, Friday weeklies, third-Friday monthlies, quarter-end
quarterlies, January LEAPS) that fall on an exchange holiday move to the previous
trading session, as the listing exchanges do. Trading sessions and their closes come
from `exchange_calendars`' XNYS calendar, a maintained list of NYSE holidays and
early closes, so nothing here hard-codes a holiday or a half day: an expiry's
instant is its session's close, 16:00 New York, or 13:00 on an early-close day
(the day after Thanksgiving, Christmas Eve).

Settlement per root (`SETTLEMENT`): PM-settled options (equities, ETFs, SPXW and the
other index weeklies) settle on the close of the expiry date and trade through it;
AM-settled ones (the standard monthlies of SPX, NDX, RUT, DJX, and VIX) settle on
the opening prints of the expiry date, so their expiry instant is that session's
open and their last trading day is the session before.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import exchange_calendars

NEW_YORK = ZoneInfo("America/New_York")
_EXPIRY_TIME = time(16, 0)
_OPEN_TIME = time(9, 30)

Settlement = Literal["AM", "PM"]
# Roots settled on the expiry date's opening prints (a special opening quotation);
# every other root, including the PM-settled weeklies of the same indices (SPXW,
# NDXP, RUTW, VIXW), settles on the close. Only these are listed: a root missing
# here is PM, as US equity and ETF options are.
AM_SETTLED_ROOTS: frozenset[str] = frozenset({"SPX", "NDX", "RUT", "DJX", "VIX"})


def settlement(root: str) -> Settlement:
    """`AM` for the roots of AM_SETTLED_ROOTS, else `PM`."""
    return "AM" if root in AM_SETTLED_ROOTS else "PM"


_FRIDAY = 4
_QUARTER_MONTHS = (3, 6, 9, 12)


def expiry_instant_us(expiry: date, settle: Settlement = "PM") -> int:
    """The instant an option of `expiry` settles, in microseconds since the Unix epoch.

    PM: the exchange's close on `expiry`, 16:00 America/New_York on a regular
    session, 13:00 on an early-close day. AM: the session's open, 09:30 (the opening
    prints the settlement value is computed from). On a day that is no session (a
    listing the calendar does not know of): 16:00, or 09:30.
    """
    pm = settle == "PM"
    hours = _hours(expiry.year).get(expiry)
    if hours is not None:
        return hours[1] if pm else hours[0]
    at = _EXPIRY_TIME if pm else _OPEN_TIME
    return int(datetime.combine(expiry, at, NEW_YORK).timestamp()) * 1_000_000


def contract_expiry_us(root: str, expiry: date) -> int:
    """The expiry instant of an option of `root` expiring on `expiry` (by its settlement)."""
    return expiry_instant_us(expiry, settlement(root))


def last_trading_day(root: str, expiry: date) -> date:
    """The last session an option of `root` expiring on `expiry` trades.

    `expiry` for PM settlement; for AM settlement the session before it (the
    contract stops trading at that close and settles on the next open).
    """
    if settlement(root) == "PM":
        return expiry
    days = _sessions(expiry.year - 1, expiry.year)
    day = expiry - timedelta(days=1)
    while day not in days:
        day -= timedelta(days=1)
    return day


def trading_day(now_us: int) -> date:
    """The New York calendar date at `now_us`."""
    return datetime.fromtimestamp(now_us / 1e6, NEW_YORK).date()


@dataclass(frozen=True, slots=True)
class ExpiryProfile:
    """How many expiries of each kind a class lists.

    `dailies`: every session through `daily_weeks` weeks ahead (SPY, QQQ);
    `weeklies`: this many Friday expiries ahead; `monthlies`: this many standard
    third-Friday expiries; `quarterlies`: this many quarter-end expiries (the last
    session of March, June, September, December); `leaps_years`: January
    third-Friday expiries of the next this-many years.
    """

    dailies: bool
    daily_weeks: int
    weeklies: int
    monthlies: int
    quarterlies: int
    leaps_years: int


def _calendar(first_year: int, last_year: int) -> exchange_calendars.ExchangeCalendar:
    with warnings.catch_warnings():
        # pandas deprecation notices raised inside the library, not actionable here
        warnings.simplefilter("ignore")
        return exchange_calendars.get_calendar(
            "XNYS", start=f"{first_year}-01-01", end=f"{last_year}-12-31"
        )


@lru_cache(maxsize=4)
def _sessions(first_year: int, last_year: int) -> frozenset[date]:
    # Building the calendar takes ~0.1-0.4 s, so it is made once per span of years.
    return frozenset(_calendar(first_year, last_year).sessions.date)


@lru_cache(maxsize=16)
def _hours(year: int) -> dict[date, tuple[int, int]]:
    """Each session of `year` -> its (open, close) in µs. Cached per year: expiry
    instants are looked up per contract (thousands per listing), a year's calendar once."""
    cal = _calendar(year, year)
    return {
        ts.date(): (int(o.value // 1_000), int(c.value // 1_000))
        for ts, o, c in zip(cal.opens.index, cal.opens, cal.closes, strict=True)
    }


def market_session(now_us: int) -> tuple[int, int] | None:
    """The NYSE session `now_us` falls in, as (open, close) in µs; None while the
    market is closed (nights, weekends, holidays, after an early close)."""
    day = trading_day(now_us)
    hours = _hours(day.year).get(day)
    if hours is None or not hours[0] <= now_us < hours[1]:
        return None
    return hours


_YEARS_AHEAD = 6  # covers LEAPS and the 60 months scanned below


class _Sessions:
    """Session lookups over the years any expiry profile can reach from `today`."""

    def __init__(self, today: date) -> None:
        self.days = _sessions(today.year - 1, today.year + _YEARS_AHEAD)

    def on_or_before(self, day: date) -> date:
        """`day` if it is a session, else the session before it."""
        while day not in self.days:
            day -= timedelta(days=1)
        return day


def _third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(_FRIDAY - first.weekday()) % 7 + 14)


def _last_day(year: int, month: int) -> date:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return nxt - timedelta(days=1)


def _months_from(today: date) -> list[tuple[int, int]]:
    """(year, month) pairs from today's month, long enough for any profile."""
    return [
        (today.year + (today.month - 1 + i) // 12, (today.month - 1 + i) % 12 + 1)
        for i in range(60)
    ]


def listed_expiries(profile: ExpiryProfile, now_us: int) -> list[date]:
    """Expiry dates listed at `now_us` that have not yet expired, sorted and unique.

    An expiry counts until its instant (the session's close: 16:00 New York, 13:00
    on an early-close day), so a 0DTE expiry is listed in the morning and gone after
    the close.
    """
    today = trading_day(now_us)
    if profile.leaps_years > _YEARS_AHEAD - 1:
        raise ValueError(f"leaps_years above {_YEARS_AHEAD - 1} is not supported")
    sessions = _Sessions(today)
    out: set[date] = set()
    if profile.dailies:
        horizon = today + timedelta(weeks=profile.daily_weeks)
        day = today
        while day <= horizon:
            if day in sessions.days:
                out.add(day)
            day += timedelta(days=1)
    friday = today + timedelta(days=(_FRIDAY - today.weekday()) % 7)
    for i in range(profile.weeklies):
        out.add(sessions.on_or_before(friday + timedelta(weeks=i)))
    months = _months_from(today)
    monthly = [sessions.on_or_before(_third_friday(y, m)) for y, m in months]
    out.update([d for d in monthly if d >= today][: profile.monthlies])
    quarterly = [sessions.on_or_before(_last_day(y, m)) for y, m in months if m in _QUARTER_MONTHS]
    out.update([d for d in quarterly if d >= today][: profile.quarterlies])
    for year in range(today.year + 1, today.year + 1 + profile.leaps_years):
        out.add(sessions.on_or_before(_third_friday(year, 1)))
    return sorted(d for d in out if expiry_instant_us(d) > now_us)
