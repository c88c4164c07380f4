"""The clock of the data: `ts` values are microseconds since the Unix epoch.

Components take a clock as a parameter (defaulting to `wall_clock_us`) rather than
reading the time deep inside, so tests and replays can pass their own.
"""

from __future__ import annotations

import time


def wall_clock_us() -> int:
    """Microseconds since the Unix epoch (the `ts` clock)."""
    return time.time_ns() // 1000


# Bucket bounds (seconds) of every latency histogram measured against `ts` (processing
# and gateway alike), fine enough below 20 ms that a quantile read from them
# (histogram_quantile) tells a 2 ms stage from a 4 ms one.
LATENCY_BUCKETS_S = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
