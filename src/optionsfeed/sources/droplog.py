"""Counting dropped provider data, and logging it without flooding the log.

A venue that sends garbage at a high rate must not turn the log into a copy of
its feed: per reason, the first drop is reported at once, later ones at most once
per interval, with how many were dropped meanwhile. Bounded: one entry per reason
(reasons are a closed list in each adapter).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable


class DropCounter:
    """Counts drops by reason and says when to report them. Pure: time comes in."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()
        self._unreported: Counter[str] = Counter()
        self._next: dict[str, float] = {}

    def add(self, reason: str, now: float) -> int | None:
        """Count one drop at `now` (seconds): the drops to report now (this one and
        those held back since the last report), or None to stay quiet."""
        self.counts[reason] += 1
        self._unreported[reason] += 1
        if now < self._next.get(reason, -math.inf):
            return None
        self._next[reason] = now + self.interval_s
        return self._unreported.pop(reason)


class DropLog:
    """A DropCounter that writes its reports to `logger` as `{venue}: dropped ...`."""

    def __init__(
        self,
        logger: logging.Logger,
        venue: str,
        *,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.venue = venue
        self.clock = clock
        self.counter = DropCounter(every_s)

    def note(self, reason: str, detail: str) -> None:
        """One more message dropped for `reason`; logged unless one was logged recently."""
        n = self.counter.add(reason, self.clock())
        if n is None:
            return
        more = f" ({n - 1} more since the last report)" if n > 1 else ""
        self.logger.warning("%s: dropped a message (%s): %s%s", self.venue, reason, detail, more)
