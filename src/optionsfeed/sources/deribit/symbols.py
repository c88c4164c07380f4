"""Deribit instrument and channel names, parsed and formatted. Pure: no I/O, no clock.

An inverse (coin-settled) option is named ``{CURRENCY}-{D}{MON}{YY}-{STRIKE}-{C|P}``,
e.g. ``BTC-27DEC25-100000-C`` or ``ETH-3JAN26-3500-P``: the day has no leading zero,
the month is English upper case, the strike is in USD (a ``d`` stands for the
decimal point in the rare fractional strike, ``0d5``). Linear (USDC) options carry
an underscore in the currency part (``BTC_USDC-...``) and do not parse here.

Every option expires at 08:00 UTC on its expiry date (`expiry_instant_us`); the
venue also gives the instant in `expiration_timestamp`, which a listing checks
against the name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Literal

from ...errors import InvalidSymbol

Right = Literal["C", "P"]

EXPIRY_TIME_UTC = time(8, 0)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_NUMBER = {m: i + 1 for i, m in enumerate(MONTHS)}
_NAME_RE = re.compile(
    r"([A-Z]{2,10})-([1-9][0-9]?)([A-Z]{3})([0-9]{2})-([0-9]+(?:d[0-9]+)?)-([CP])"
)
TICKER_PREFIX = "ticker."
INDEX_PREFIX = "deribit_price_index."
TRADES_PREFIX = "trades.option."
TICKER_INTERVAL = "100ms"


@dataclass(frozen=True, slots=True)
class InstrumentName:
    """The parts of an option's instrument name."""

    currency: str
    expiry: date
    strike: float
    right: Right

    def format(self) -> str:
        """The venue's spelling, e.g. ``BTC-3JAN26-100000-C``."""
        return format_name(self.currency, self.expiry, self.strike, self.right)


def parse_name(name: str) -> InstrumentName:
    """Parse an inverse option's instrument name.

    Raises InvalidSymbol (with the reason) for anything else: a future, a perpetual,
    a linear option, an impossible date, a zero strike, a non-canonical spelling.
    """
    m = _NAME_RE.fullmatch(name)
    if m is None:
        raise InvalidSymbol(name, "not CURRENCY-DMMMYY-STRIKE-C|P")
    currency, day, mon, yy, strike_text, right_text = m.groups()
    month = _MONTH_NUMBER.get(mon)
    if month is None:
        raise InvalidSymbol(name, f"unknown month {mon!r}")
    try:
        expiry = date(2000 + int(yy), month, int(day))
    except ValueError as exc:
        raise InvalidSymbol(name, f"no such date: {exc}") from exc
    strike = float(strike_text.replace("d", "."))
    if strike <= 0:
        raise InvalidSymbol(name, "the strike must be positive")
    right: Right = "C" if right_text == "C" else "P"
    parsed = InstrumentName(currency, expiry, strike, right)
    if parsed.format() != name:
        # E.g. a strike with leading zeros: two spellings of one contract would
        # make two rows of it.
        raise InvalidSymbol(name, f"not in canonical form ({parsed.format()})")
    return parsed


def format_name(currency: str, expiry: date, strike: float, right: Right) -> str:
    """The instrument name of an inverse option (the inverse of `parse_name`)."""
    whole = strike == int(strike)
    strike_text = str(int(strike)) if whole else repr(strike).replace(".", "d")
    return f"{currency}-{expiry.day}{MONTHS[expiry.month - 1]}{expiry:%y}-{strike_text}-{right}"


def expiry_instant_us(expiry: date) -> int:
    """The venue's expiry instant of `expiry` (08:00 UTC), in µs since the Unix epoch."""
    return int(datetime.combine(expiry, EXPIRY_TIME_UTC, UTC).timestamp()) * 1_000_000


def utc_date_of_ms(timestamp_ms: int) -> date:
    """The UTC date of a venue timestamp (milliseconds since the Unix epoch)."""
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).date()


def ticker_channel(instrument: str, interval: str = TICKER_INTERVAL) -> str:
    """``ticker.{instrument}.{interval}``: the instrument's whole ticker (100ms: aggregated)."""
    return f"{TICKER_PREFIX}{instrument}.{interval}"


def index_name(currency: str) -> str:
    """The USD price index of `currency`, e.g. ``btc_usd``."""
    return f"{currency.lower()}_usd"


def index_channel(currency: str) -> str:
    """``deribit_price_index.{currency}_usd``: the index the options are priced on."""
    return f"{INDEX_PREFIX}{index_name(currency)}"


def trades_channel(currency: str, interval: str = TICKER_INTERVAL) -> str:
    """``trades.option.{currency}.{interval}``: every option trade of `currency`."""
    return f"{TRADES_PREFIX}{currency}.{interval}"


def instrument_of_ticker_channel(channel: str) -> str | None:
    """The instrument of a ``ticker.{instrument}.{interval}`` channel, else None."""
    if not channel.startswith(TICKER_PREFIX):
        return None
    name, dot, interval = channel[len(TICKER_PREFIX) :].rpartition(".")
    return name if dot and name and interval else None
