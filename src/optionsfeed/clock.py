"""The clock of the data: `ts` values are microseconds since the Unix epoch.

Components take a clock as a parameter (defaulting to `wall_clock_us`) rather than
reading the time deep inside, so tests and replays can pass their own.
"""

from __future__ import annotations

import time


def wall_clock_us() -> int:
    """Microseconds since the Unix epoch (the `ts` clock)."""
    return time.time_ns() // 1000
