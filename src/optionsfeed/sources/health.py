"""Whether a feed's data is as fresh as it should be: `/readyz`'s judgment, pure.

Inputs: the time, the newest data's time, the venue link as the source reports it
(a problem, and since when) and the venue's market hours. The rules, in order:

1. A link problem (a disconnect, refused subscriptions) that has lasted
   `grace_s` is not ready, whatever the data says: the feed will not recover by
   itself. A shorter one is only a note: a socket that drops and is back within a
   second, while the data is still fresh, must not take the process out of a load
   balancer (and put it back a probe later).
2. No data at all is not ready.
3. Outside the venue's market hours a quiet feed is the market's, not the feed's:
   ready, noted "market closed". So is the first `open_margin_s` after the open,
   before the first quotes have had time to arrive. A venue without market hours
   (Deribit trades around the clock) is always judged.
4. Data older than `fresh_within_s` is not ready.

`LinkWatch` turns a source's `health()` (None or a one-line problem, whose wording
changes as it retries) into the problem and when it began.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

OPEN_MARGIN_S = 60.0  # after the open, before staleness counts: quotes take a moment

# now (µs) -> the session it falls in, (open, close) in µs, or None while closed.
MarketHours = Callable[[int], tuple[int, int] | None]


@dataclass(frozen=True, slots=True)
class Link:
    """A venue link in trouble: `problem` (one line) since `since_us`."""

    problem: str
    since_us: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """`ready`, and why not; or, when ready, a note (a brief disconnect, market closed)."""

    ready: bool
    reason: str | None = None


def judge(
    now_us: int,
    newest: tuple[str, int] | None,
    link: Link | None,
    *,
    hours: MarketHours | None,
    fresh_within_s: float,
    grace_s: float,
    open_margin_s: float = OPEN_MARGIN_S,
) -> Verdict:
    """The verdict at `now_us` (see the module docstring for the rules).

    `newest`: (underlying, time of its newest data) of the underlying whose data is
    oldest, None when there is no data. `link`: the venue link's problem, None when
    well (or when this process runs no source). `hours`: the venue's market hours,
    None for a venue that never closes.
    """
    if link is not None and now_us - link.since_us >= grace_s * 1e6:
        return Verdict(False, link.problem)
    notes = [link.problem] if link is not None else []
    if newest is None:
        return Verdict(False, "no data yet")
    if hours is not None:
        session = hours(now_us)
        if session is None:
            return Verdict(True, "; ".join(["market closed", *notes]))
        if now_us < session[0] + open_margin_s * 1e6:
            return Verdict(True, "; ".join(["market just opened", *notes]))
    name, newest_us = newest
    age = (now_us - newest_us) / 1e6
    if age > fresh_within_s:
        return Verdict(
            False, f"{name}: newest data is {age:.1f} s old (limit {fresh_within_s:g} s)"
        )
    return Verdict(True, "; ".join(notes) or None)


class LinkWatch:
    """A source's `health()` over time: `observe` gives its problem and since when.

    A problem's wording changes while it lasts ("retrying in 2.0 s", "reconnecting"):
    any problem after another continues it; only a None ends it. It is seen when
    observed, so a problem is dated at most one observation late.
    """

    def __init__(self, health: Callable[[], str | None]) -> None:
        self._health = health
        self._since_us: int | None = None

    def observe(self, now_us: int) -> Link | None:
        """The link's problem now and when it began (the first observation of it), or None."""
        problem = self._health()
        if problem is None:
            self._since_us = None
            return None
        if self._since_us is None:
            self._since_us = now_us
        return Link(problem, self._since_us)
