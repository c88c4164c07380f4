"""Listed expiries: kinds, holidays moving to the previous session, the 16:00 ET instant."""

from __future__ import annotations

from datetime import UTC, date, datetime

from optionsfeed.model.calendar import (
    NEW_YORK,
    ExpiryProfile,
    expiry_instant_us,
    listed_expiries,
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
