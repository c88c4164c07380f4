"""How long each stage of processing takes, measured against the source's `ts`.

Per publication, three points on the wall clock: the batch taken from the source
(`taken`), priced and turned into publications (`priced`), and applied by the broker
(`published`). Each is observed as its lag behind the publication's `ts` (the newest
source event it carries), so `/metrics` shows where a millisecond goes: waiting for
the processor, pricing, or the broker. Plain bucket counts, bounded by the bucket
list; the collector turns them into Prometheus histograms at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from ..clock import LATENCY_BUCKETS_S

STAGES = ("taken", "priced", "published")


class StageHistogram:
    """Cumulative-ready bucket counts of one stage's lag (seconds)."""

    __slots__ = ("counts", "n", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one is +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, lag_s: float) -> None:
        lag_s = max(lag_s, 0.0)
        self.counts[bisect_left(LATENCY_BUCKETS_S, lag_s)] += 1
        self.total += lag_s
        self.n += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count at or below it) pairs, Prometheus style, +Inf last."""
        out, running = [], 0
        for bound, c in zip((*map(str, LATENCY_BUCKETS_S), "+Inf"), self.counts, strict=True):
            running += c
            out.append((bound, running))
        return out


class StageLatency:
    """The three stages' histograms of one processor."""

    def __init__(self) -> None:
        self.stages = {name: StageHistogram() for name in STAGES}

    def observe(self, ts_us: Iterable[int], taken_us: int, priced_us: int, done_us: int) -> None:
        """One observation per stage for each publication's `ts` (µs, wall clock)."""
        taken, priced, done = (self.stages[s] for s in STAGES)
        for ts in ts_us:
            if ts <= 0:
                continue  # a reset carries no source event
            taken.observe((taken_us - ts) / 1e6)
            priced.observe((priced_us - ts) / 1e6)
            done.observe((done_us - ts) / 1e6)
