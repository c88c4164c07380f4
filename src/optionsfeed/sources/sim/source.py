"""The simulator as a Source: paces SimMarket to a target update rate in real time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from ...clock import wall_clock_us
from ..base import SourceBatch
from .market import SimMarket
from .universe import spec_for

STEP_S = 0.01  # one batch every 10 ms: small enough for latency, big enough to vectorize
MAX_OWED_STEPS = 10  # a consumer that falls behind gets at most 10 steps' worth per batch
# ...and never more than this many updates at once, so one batch cannot hold the
# event loop for long whatever `rate` asks for. With the American model (3 solves an
# update: the mark, the bid and the ask) a batch of 3,000 is priced in about 40 ms
# on a loaded core (2,000: 36 ms, 5,000: 52 ms, 20,000: 150-400 ms, which every
# quote behind it waited). Smaller batches pay the fixed cost of a batch more often:
# the service sustains 45,000-56,000 updates/s at `--rate 100000` with 3,000,
# 39,000-43,000 with 2,000, 60,000-82,000 with 20,000.
MAX_BATCH_UPDATES = 3_000


class SimSource:
    """The default source: a simulated market of `underlyings` at `rate` updates/s
    (`rate` is the whole market's: `select` simulates part of it at its share).

    Each step emits the updates owed since the previous one (rate x elapsed), so a
    slow consumer gets bigger batches, never a growing backlog. What is owed is
    capped at `MAX_OWED_STEPS` steps' worth: a simulated market simply makes fewer
    updates when its consumer cannot keep up, so the work per second is bounded by
    `rate` and the memory by one batch (at most `MAX_BATCH_UPDATES` updates).
    """

    name = "sim"

    def __init__(
        self,
        underlyings: list[str],
        *,
        rate: float,
        seed: int,
        clock: Callable[[], int] = wall_clock_us,
        step_s: float = STEP_S,
    ) -> None:
        self.rate = rate
        self.clock = clock
        self.step_s = step_s
        self._max_owed = min(max(rate * step_s * MAX_OWED_STEPS, 1.0), MAX_BATCH_UPDATES)
        self.market = SimMarket([spec_for(u) for u in underlyings], seed=seed, start_us=clock())

    def select(self, underlyings: set[str]) -> None:
        """Simulate only `underlyings` from now on, at their share of `rate` (a processor
        simulates what it prices); one selected again is listed again."""
        self.market.select(underlyings)

    async def batches(self) -> AsyncIterator[SourceBatch]:
        owed = 0.0
        last = self.clock()
        first = SourceBatch(listings=self.market.listings())
        yield first
        loop_start = time.monotonic()
        steps = 0
        while True:
            steps += 1
            # Sleep to the next step boundary on a fixed grid, so pacing does not drift.
            delay = loop_start + steps * self.step_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -self.step_s:
                # Fell behind (a slow consumer): restart the grid instead of racing it.
                loop_start = time.monotonic() - steps * self.step_s
            now = self.clock()
            rate = self.rate * self.market.share()
            owed = min(owed + rate * max(now - last, 0) / 1e6, self._max_owed)
            last = now
            n = int(owed)
            owed -= n
            yield self.market.step(now, n)
