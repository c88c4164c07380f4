"""The static description of a listed option contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

Right = Literal["C", "P"]
Exercise = Literal["american", "european"]


@dataclass(frozen=True, slots=True)
class Contract:
    """One listed option contract, as a source lists it.

    `symbol` is the compact OSI symbol for US equity options, or the venue's own
    instrument name elsewhere. `expiry_us` is the expiry instant (for US options of
    a PM-settled root the exchange's close on `expiry`: 16:00 America/New_York, 13:00
    on an early-close day; of an AM-settled root, `model.calendar.AM_SETTLED_ROOTS`,
    the open of that session) in microseconds since the Unix epoch; pricing
    measures time to expiry to it. `exercise`: "american" for
    US single-stock and ETF options (exercisable any day to expiry), "european" for
    cash-settled indices and Deribit; pricing follows it.
    """

    symbol: str
    underlying: str
    root: str
    expiry: date
    expiry_us: int
    strike: float
    right: Right
    multiplier: int = 100
    currency: str | None = None
    exercise: Exercise = "european"
