"""Whole listings: contract counts per class, well-formed unique symbols, ordering."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from optionsfeed.model.calendar import NEW_YORK
from optionsfeed.sources.sim.listing import build_listing
from optionsfeed.sources.sim.strikes import profiles_for

OSI = re.compile(r"^[A-Z][A-Z0-9]{0,5}\d{6}[CP]\d{8}$")
DAYS = ["2026-11-25", "2026-12-24", "2027-03-25", "2027-06-30", "2027-09-17"]


def _now(day: str) -> int:
    return int(datetime.fromisoformat(f"{day}T10:30").replace(tzinfo=NEW_YORK).timestamp() * 1e6)


@pytest.mark.parametrize("day", DAYS)
@pytest.mark.parametrize(
    ("underlying", "spot", "low", "high"),
    [
        ("SPY", 680.0, 4000, 8000),
        ("QQQ", 610.0, 1000, 8000),
        ("AAPL", 275.0, 1000, 5000),
        ("TSLA", 420.0, 1000, 5000),
        ("NVDA", 180.0, 1000, 5000),
        ("ZZZ", 21.0, 1000, 5000),
        ("ZZZ", 35.0, 1000, 5000),
        ("ZZZ", 480.0, 1000, 5000),
    ],
)
def test_contract_counts(underlying: str, spot: float, low: int, high: int, day: str) -> None:
    """SPY lists >= 4,000 contracts and every other class >= 1,000, on any day."""
    exp, strikes = profiles_for(underlying, spot)
    n = len(build_listing(underlying, spot, exp, strikes, _now(day)))
    assert low <= n < high


def test_symbols_are_osi_unique_and_sorted() -> None:
    """Compact OSI symbols, unique; sorted by expiry, strike, then call before put."""
    exp, strikes = profiles_for("SPY", 680.0)
    contracts = build_listing("SPY", 680.0, exp, strikes, _now("2026-11-25"))
    assert all(OSI.match(c.symbol) for c in contracts)
    assert len({c.symbol for c in contracts}) == len(contracts)
    keys = [(c.expiry, c.strike, c.right) for c in contracts]
    assert keys == sorted(keys)
    first = contracts[0]
    assert first.symbol == f"SPY{first.expiry:%y%m%d}C{round(first.strike * 1000):08d}"
    assert first.root == first.underlying == "SPY"
    assert first.multiplier == 100


def test_each_strike_lists_a_call_and_a_put() -> None:
    """Every (expiry, strike) has exactly one call and one put."""
    exp, strikes = profiles_for("AAPL", 275.0)
    contracts = build_listing("AAPL", 275.0, exp, strikes, _now("2026-11-25"))
    pairs: dict[tuple[object, float], set[str]] = {}
    for c in contracts:
        pairs.setdefault((c.expiry, c.strike), set()).add(c.right)
    assert all(rights == {"C", "P"} for rights in pairs.values())


def test_an_early_close_expiry_expires_at_the_close() -> None:
    """On 2026-12-24 (13:00 close) the 0DTE contracts expire at 13:00 ET, not 16:00."""
    exp, strikes = profiles_for("SPY", 680.0)
    contracts = build_listing("SPY", 680.0, exp, strikes, _now("2026-12-24"))
    today = [c for c in contracts if c.expiry.isoformat() == "2026-12-24"]
    assert today
    for c in today:
        at = datetime.fromtimestamp(c.expiry_us / 1e6, NEW_YORK)
        assert (at.hour, at.minute) == (13, 0)
