"""Which option contracts to stream: strikes around the money, nearest expiries first.

Massive streams the quotes of at most 1,000 option contracts per connection, while
an underlying like SPY lists several thousand, so the adapter streams a window of
them. Pure: contracts, spot and time in, a `Window` out.

The window (`choose_window`):

- up to `max_expiries` expiries, the nearest first; an expiry whose instant has
  passed is never chosen;
- every chosen expiry gets the same budget of `max_contracts // n` contracts (n
  expiries). It is filled with the strikes nearest the centre (ties: the lower
  strike), each strike with every contract listed at it (its call and its put: 2;
  a second root or an adjusted contract at the same strike counts too), and stops
  at the first strike that does not fit, so the strikes stay contiguous. On a
  standard chain this is the k = `max_contracts // (2 n)` strikes nearest spot per
  expiry;
- n is lowered while the budget of an expiry would hold fewer than `min_strikes`
  strikes, so each expiry keeps a usable smile (down to one expiry);
- never more than `max_contracts` contracts in all. Budget an expiry cannot use
  (it lists fewer strikes) is left unused.

The centre is spot; with no spot known (NaN) the middle listed strike of the
nearest expiry stands in.

When to move it (`Window.needs_move`): for each chosen expiry, the distance d from
the centre to the window's upper edge (lower edge); the window moves when spot
passes the middle of the nearest such distance: spot > centre + d_up / 2 or
spot < centre - d_down / 2. An edge that is the expiry's last listed strike has
nothing beyond it to show and never triggers. The next window is centred on the
new spot, so going back needs another half distance in the other direction: a spot
that wavers around a trigger does not make the window flap. The window is also
chosen again once its nearest expiry passes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ...model.contract import Contract

DEFAULT_MAX_EXPIRIES = 8
DEFAULT_MIN_STRIKES = 5
_NEVER_US = 2**62


@dataclass(frozen=True, slots=True)
class Window:
    """The contracts to stream and when to choose again.

    `contracts` are sorted by (expiry, strike, right: call first, symbol).
    `move_below` / `move_above`: spot outside (move_below, move_above) moves the
    window (-inf / +inf: that side never triggers). `until_us`: the nearest chosen
    expiry's instant; at or after it the window is chosen again.
    """

    contracts: tuple[Contract, ...]
    center: float
    move_below: float
    move_above: float
    until_us: int

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols of `contracts`."""
        return frozenset(c.symbol for c in self.contracts)

    def needs_move(self, spot: float, now_us: int) -> bool:
        """Whether to choose the window again at `spot` (NaN: no) and `now_us`."""
        return now_us >= self.until_us or spot > self.move_above or spot < self.move_below


def _order(c: Contract) -> tuple[int, float, int, str]:
    return (c.expiry_us, c.strike, 0 if c.right == "C" else 1, c.symbol)


def choose_window(
    listed: Iterable[Contract],
    spot: float,
    now_us: int,
    *,
    max_contracts: int,
    max_expiries: int = DEFAULT_MAX_EXPIRIES,
    min_strikes: int = DEFAULT_MIN_STRIKES,
) -> Window:
    """The window of `listed` around `spot` at `now_us` (see the module docstring).

    Raises ValueError when `max_contracts` or `max_expiries` is below 1. An empty
    listing (or one whose expiries have all passed) gives an empty window that
    never moves.
    """
    if max_contracts < 1 or max_expiries < 1:
        raise ValueError("max_contracts and max_expiries must be at least 1")
    by_expiry: dict[int, dict[float, list[Contract]]] = defaultdict(lambda: defaultdict(list))
    for c in listed:
        if c.expiry_us > now_us:
            by_expiry[c.expiry_us][c.strike].append(c)
    expiries = sorted(by_expiry)[:max_expiries]
    if not expiries:
        return Window((), spot, -math.inf, math.inf, _NEVER_US)
    center = spot
    if not math.isfinite(center):
        first = sorted(by_expiry[expiries[0]])
        center = first[len(first) // 2]
    n = len(expiries)
    while n > 1 and max_contracts // n < 2 * min_strikes:
        n -= 1
    budget = max(max_contracts // n, 1)
    chosen: list[Contract] = []
    move_above, move_below = math.inf, -math.inf
    for expiry_us in expiries[:n]:
        strikes = by_expiry[expiry_us]
        nearest = sorted(strikes, key=lambda s: (abs(s - center), s))
        taken: list[float] = []
        used = 0
        for s in nearest:
            group = strikes[s]
            if used + len(group) > budget:
                break
            taken.append(s)
            used += len(group)
            chosen.extend(group)
        if not taken:
            # A single strike lists more contracts than the budget: take what fits.
            group = sorted(strikes[nearest[0]], key=_order)[:budget]
            chosen.extend(group)
            taken.append(nearest[0])
        lo, hi = min(taken), max(taken)
        if any(s > hi for s in strikes):
            move_above = min(move_above, center + max(hi - center, 0.0) / 2)
        if any(s < lo for s in strikes):
            move_below = max(move_below, center - max(center - lo, 0.0) / 2)
    chosen.sort(key=_order)
    return Window(tuple(chosen[:max_contracts]), center, move_below, move_above, expiries[0])
