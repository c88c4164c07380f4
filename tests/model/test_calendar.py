"""Listed expiries: kinds, holidays moving to the previous session, the instant of the
exchange's close (16:00 ET, 13:00 on early-close days)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from optionsfeed.model.calendar import (
    NEW_YORK,
    ExpiryProfile,
    contract_expiry_us,
    expiry_instant_us,
    last_trading_day,
    listed_expiries,
    settlement,
)

SPY_LIKE = ExpiryProfile(
    dailies=True, daily_weeks=4, weeklies=0, monthlies=9, quarterlies=6, leaps_years=3
)
STOCK = ExpiryProfile(
    dailies=False, daily_weeks=0, weeklies=6, monthlies=9, quarterlies=0, leaps_years=3
)


def _ny_us(y: int, m: int, d: int, hh: int = 11, mm: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, tzinfo=NEW_YORK).timestamp() * 1_000_000)


def test_expiry_instant_is_16_new_york_in_winter_and_summer() -> None:
    """16:00 ET is 21:00 UTC in winter and 20:00 UTC in summer."""
    winter = datetime.fromtimestamp(expiry_instant_us(date(2026, 12, 18)) / 1e6, UTC)
    summer = datetime.fromtimestamp(expiry_instant_us(date(2027, 6, 18)) / 1e6, UTC)
    assert (winter.hour, winter.minute) == (21, 0)
    assert (summer.hour, summer.minute) == (20, 0)


EARLY_CLOSES = [date(2026, 11, 27), date(2026, 12, 24), date(2027, 11, 26)]


@pytest.mark.parametrize("day", EARLY_CLOSES)
def test_early_close_days_expire_at_the_13_00_close(day: date) -> None:
    """The day after Thanksgiving and Christmas Eve close at 13:00 ET: expiry is then."""
    at = datetime.fromtimestamp(expiry_instant_us(day) / 1e6, NEW_YORK)
    assert (at.date(), at.hour, at.minute) == (day, 13, 0)


@pytest.mark.parametrize("day", EARLY_CLOSES)
def test_zero_dte_on_an_early_close_is_gone_after_13_00(day: date) -> None:
    """A 0DTE expiry on an early-close day is listed at 12:59 ET and gone at 13:00 ET."""
    assert day in listed_expiries(SPY_LIKE, _ny_us(day.year, day.month, day.day, 12, 59))
    assert day not in listed_expiries(SPY_LIKE, _ny_us(day.year, day.month, day.day, 13, 0))


def test_a_day_that_is_no_session_expires_at_16_00() -> None:
    """An expiry on a day the exchange does not trade (a venue's odd listing) keeps 16:00 ET."""
    at = datetime.fromtimestamp(expiry_instant_us(date(2026, 12, 25)) / 1e6, NEW_YORK)
    assert (at.hour, at.minute) == (16, 0)


def test_christmas_friday_moves_to_thursday() -> None:
    """The weekly of Friday 2026-12-25 (a holiday) is listed on Thursday 2026-12-24."""
    expiries = listed_expiries(STOCK, _ny_us(2026, 12, 14))
    assert date(2026, 12, 24) in expiries
    assert date(2026, 12, 25) not in expiries


def test_good_friday_moves_to_thursday() -> None:
    """Good Friday 2027-03-26 is a holiday: that week's expiry is 2027-03-25."""
    expiries = listed_expiries(STOCK, _ny_us(2027, 3, 15))
    assert date(2027, 3, 25) in expiries
    assert date(2027, 3, 26) not in expiries


def test_dailies_are_sessions_only() -> None:
    """SPY-like dailies cover every session four weeks ahead and skip weekends and holidays."""
    expiries = listed_expiries(SPY_LIKE, _ny_us(2026, 11, 23))
    dailies = [d for d in expiries if d <= date(2026, 12, 21)]
    assert date(2026, 11, 26) not in dailies  # Thanksgiving
    assert all(d.weekday() < 5 for d in dailies)
    assert date(2026, 11, 27) in dailies  # the half day after Thanksgiving still trades
    assert len(dailies) == 20


def test_zero_dte_is_listed_until_the_close() -> None:
    """Today's expiry is listed at 15:59 ET and gone at 16:00 ET."""
    assert date(2026, 11, 24) in listed_expiries(SPY_LIKE, _ny_us(2026, 11, 24, 15, 59))
    assert date(2026, 11, 24) not in listed_expiries(SPY_LIKE, _ny_us(2026, 11, 24, 16, 0))


def test_monthlies_are_third_fridays() -> None:
    """Standard monthlies fall on each month's third Friday (or the session before)."""
    expiries = set(listed_expiries(STOCK, _ny_us(2026, 11, 2)))
    for third in [date(2026, 11, 20), date(2026, 12, 18), date(2027, 1, 15), date(2027, 2, 19)]:
        assert third in expiries


def test_quarterlies_are_quarter_end_sessions() -> None:
    """Quarterlies are the last session of March, June, September and December."""
    expiries = set(listed_expiries(SPY_LIKE, _ny_us(2026, 11, 2)))
    for quarter_end in [
        date(2026, 12, 31),
        date(2027, 3, 31),
        date(2027, 6, 30),
        date(2027, 9, 30),
    ]:
        assert quarter_end in expiries


def test_leaps_are_january_third_fridays() -> None:
    """LEAPS: the January third Friday of each of the next years."""
    expiries = set(listed_expiries(STOCK, _ny_us(2026, 11, 2)))
    assert {date(2027, 1, 15), date(2028, 1, 21), date(2029, 1, 19)} <= expiries


def test_expiries_are_sorted_unique_and_live() -> None:
    """The list is sorted, has no duplicates and nothing already expired."""
    now = _ny_us(2026, 12, 24, 17, 0)
    expiries = listed_expiries(SPY_LIKE, now)
    assert expiries == sorted(set(expiries))
    assert all(expiry_instant_us(d) > now for d in expiries)
    assert expiries[0] == date(2026, 12, 28)  # the next session after Christmas


@pytest.mark.parametrize(
    ("root", "settle"),
    [("SPX", "AM"), ("NDX", "AM"), ("RUT", "AM"), ("VIX", "AM"), ("DJX", "AM"),
     ("SPXW", "PM"), ("NDXP", "PM"), ("RUTW", "PM"), ("VIXW", "PM"), ("SPY", "PM"),
     ("AAPL", "PM")],
)  # fmt: skip
def test_settlement_per_root(root: str, settle: str) -> None:
    """Standard index monthlies settle AM; their weeklies, equities and ETFs PM."""
    assert settlement(root) == settle


def test_am_settled_expiry_is_the_open_and_pm_the_close() -> None:
    """The December 2026 monthly: SPX expires at 09:30 New York (14:30 UTC), SPXW of
    the same date at the 16:00 close."""
    day = date(2026, 12, 18)
    am = datetime.fromtimestamp(contract_expiry_us("SPX", day) / 1e6, UTC)
    pm = datetime.fromtimestamp(contract_expiry_us("SPXW", day) / 1e6, UTC)
    assert (am.hour, am.minute) == (14, 30)
    assert (pm.hour, pm.minute) == (21, 0)
    assert contract_expiry_us("SPY", day) == expiry_instant_us(day)


def test_an_early_close_moves_pm_but_not_am() -> None:
    """On 2026-11-27 (a 13:00 close) PM expires at 13:00, AM still at the 09:30 open."""
    day = date(2026, 11, 27)
    pm = datetime.fromtimestamp(contract_expiry_us("SPXW", day) / 1e6, NEW_YORK)
    am = datetime.fromtimestamp(contract_expiry_us("SPX", day) / 1e6, NEW_YORK)
    assert (pm.hour, pm.minute) == (13, 0)
    assert (am.hour, am.minute) == (9, 30)


def test_am_settled_options_last_trade_the_session_before() -> None:
    """AM: the previous session (over a weekend and a holiday: Tuesday 2027-01-19 after
    Martin Luther King Day trades last on Friday the 15th); PM: the expiry date."""
    assert last_trading_day("SPX", date(2026, 12, 18)) == date(2026, 12, 17)
    assert last_trading_day("VIX", date(2027, 1, 19)) == date(2027, 1, 15)
    assert last_trading_day("SPXW", date(2026, 12, 18)) == date(2026, 12, 18)
