"""Strike grids as US exchanges list them: fine near the money, coarser further out.

A grid has two bands around spot. The near band (about `near_sd` standard
deviations of the expiry's move, at least `near_min` of spot) uses the class's fine
increment ($1 for SPY and QQQ, by price band for stocks); the wide band (about
`far_sd` standard deviations, at least `far_min` of spot, more room below spot than
above, where put demand is) uses the coarse increment. Expiries beyond `far_dte`
days list only the coarse increment, and LEAPS (beyond `leaps_dte`) twice it, as
long-dated series are listed sparser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...model.calendar import ExpiryProfile
from .universe import spec_for

# Classes that list dailies, quarterlies and $1 strikes throughout the near band.
INDEX_ETFS = frozenset({"SPY", "QQQ", "IWM", "DIA"})

# Standard strike increments, in dollars. A stock's fine increment is the smallest
# that gives about `_FINE_PER_SPOT` strikes per spot-width near the money (so $1
# at $150, $2.50 at $275, $5 at $600) and its coarse one about a third as many.
INCREMENTS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0)
_FINE_PER_SPOT = 200.0
_COARSE_PER_SPOT = 60.0


def _increment(spot: float, per_spot: float) -> float:
    return next((i for i in INCREMENTS if i >= spot / per_spot), INCREMENTS[-1])


@dataclass(frozen=True, slots=True)
class StrikeProfile:
    """How one class lists strikes; increments in dollars, widths as noted."""

    vol: float  # annualized volatility assumed for the bands' widths
    fine: float
    coarse: float
    near_sd: float
    near_min: float  # fraction of spot
    far_sd: float
    far_min: float  # fraction of spot
    far_dte: float = 70.0
    leaps_dte: float = 270.0


def _multiples(lo: float, hi: float, step_thousandths: int) -> range:
    first = max(math.ceil(lo * 1000 / step_thousandths), 1)
    last = math.floor(hi * 1000 / step_thousandths)
    return range(first * step_thousandths, last * step_thousandths + 1, step_thousandths)


def strike_grid(spot: float, dte: float, profile: StrikeProfile) -> list[int]:
    """Sorted, unique, positive strikes (in thousandths of a dollar) for an expiry `dte` days out."""
    sd = profile.vol * math.sqrt(max(dte, 1.0) / 365.0)
    fine, coarse = profile.fine, profile.coarse
    if dte > profile.leaps_dte:
        fine = coarse = coarse * 2
    elif dte > profile.far_dte:
        fine = coarse
    near = max(profile.near_sd * sd, profile.near_min)
    far = max(profile.far_sd * sd, profile.far_min)
    strikes: set[int] = set()
    strikes.update(_multiples(spot * math.exp(-near), spot * math.exp(near), round(fine * 1000)))
    # More room below spot than above: the put wing is where demand (and listing) is.
    wide = _multiples(spot * math.exp(-far), spot * math.exp(0.7 * far), round(coarse * 1000))
    strikes.update(wide)
    return sorted(strikes)


def profiles_for(underlying: str, spot: float) -> tuple[ExpiryProfile, StrikeProfile]:
    """The expiry and strike listing rules of `underlying` trading at `spot`."""
    vol = max(spec_for(underlying).atm_vol, 0.15)
    if underlying in INDEX_ETFS:
        expiries = ExpiryProfile(
            dailies=True, daily_weeks=4, weeklies=0, monthlies=9, quarterlies=6, leaps_years=3
        )
        strikes = StrikeProfile(
            vol=vol, fine=1.0, coarse=5.0, near_sd=2.0, near_min=0.03, far_sd=4.0, far_min=0.12
        )
        return expiries, strikes
    fine, coarse = _increment(spot, _FINE_PER_SPOT), _increment(spot, _COARSE_PER_SPOT)
    expiries = ExpiryProfile(
        dailies=False, daily_weeks=0, weeklies=6, monthlies=9, quarterlies=0, leaps_years=3
    )
    strikes = StrikeProfile(
        vol=vol, fine=fine, coarse=coarse, near_sd=2.0, near_min=0.12, far_sd=4.0, far_min=0.4
    )
    return expiries, strikes
