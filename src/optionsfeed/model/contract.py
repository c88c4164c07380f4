"""The static description of a listed option contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

Right = Literal["C", "P"]


@dataclass(frozen=True, slots=True)
class Contract:
    """One listed option contract, as a source lists it.

    `symbol` is the compact OSI symbol for US equity options, or the venue's own
    instrument name elsewhere. `expiry_us` is the expiry instant (16:00
    America/New_York on `expiry` for US equity options) in microseconds since the
    Unix epoch; pricing measures time to expiry to it.
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
