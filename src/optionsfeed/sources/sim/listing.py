"""A class's listed contracts on a day: every listed expiry x its strike grid x call/put."""

from __future__ import annotations

from ...model.calendar import ExpiryProfile, contract_expiry_us, listed_expiries
from ...model.contract import Contract, Right
from ...model.osi import OptionSymbol
from .strikes import StrikeProfile, strike_grid

_US_PER_DAY = 86_400e6
RIGHTS: tuple[Right, Right] = ("C", "P")


def build_listing(
    underlying: str,
    spot: float,
    expiry_profile: ExpiryProfile,
    strike_profile: StrikeProfile,
    now_us: int,
) -> list[Contract]:
    """The contracts of `underlying` listed at `now_us` around `spot`.

    Sorted by (expiry, strike, right) with the call first; symbols are compact OSI
    (root = underlying); no duplicates; American exercise, as US stock and ETF options are.
    """
    out: list[Contract] = []
    for expiry in listed_expiries(expiry_profile, now_us):
        expiry_us = contract_expiry_us(underlying, expiry)
        dte = (expiry_us - now_us) / _US_PER_DAY
        for strike in strike_grid(spot, dte, strike_profile):
            for right in RIGHTS:
                out.append(
                    Contract(
                        symbol=OptionSymbol(underlying, expiry, right, strike).compact(),
                        underlying=underlying,
                        root=underlying,
                        expiry=expiry,
                        expiry_us=expiry_us,
                        strike=strike / 1000,
                        right=right,
                        exercise="american",  # US single-stock and ETF options
                    )
                )
    return out
