"""How long a gateway process lets frames gather before writing them. Pure: numbers in.

Writing a frame costs about 6-7 µs, most of it in the kernel, whatever it carries:
the number of frames, not their size, is what a busy gateway spends its CPU on. An
idle process writes each update at once (interval 0: the next turn of the loop).
When the process works more than `target` of the time, or its event loop runs
late, the interval grows (x1.5 per observation, from `MIN_INTERVAL_S`) up to
`max_interval_s`, so each frame carries several envelopes' updates and the writes
per second fall exactly when CPU is short; when the load goes, it shrinks (x0.7)
back to 0. Latency then grows smoothly with load instead of as a queue.

A session's own `throttle_ms` and slow-consumer merging apply on top.

Off by default (`max_interval_s` 0): in the fan-out bench's scenario B on a 2-core
machine (docs/benchmarks.md) it wrote 17% fewer frames but raised p99 from about
125 ms to about 190 ms, because there the loop runs late for want of a core the
load generator holds, not for the gateway's own work. Turn it on with
`--max-flush-ms` where gateways have cores of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_INTERVAL_S = 0.002
GROW = 1.5
SHRINK = 0.7
# Below this share of the target the interval shrinks; between it and the target it
# holds (hysteresis: no flapping around the target).
CALM_SHARE = 0.8
# An event loop this late is short of CPU whatever this process's own CPU time says
# (another process may have the core); this early, it is not.
LATE_S = 0.005
ON_TIME_S = 0.001


@dataclass(frozen=True, slots=True)
class PacingSettings:
    """`target`: the share of one core the process aims to stay under (0-1);
    `max_interval_s`: the longest a frame waits for company (0: pacing off)."""

    target: float = 0.7
    max_interval_s: float = 0.0


DEFAULT_PACING = PacingSettings()


class Pacer:
    """The flush interval, chosen from each observation of load.

    Feed it, every few tens of milliseconds, the CPU seconds the process used and
    the wall seconds that passed since the last call, and how late the loop ran.
    """

    def __init__(self, settings: PacingSettings = DEFAULT_PACING) -> None:
        if not 0 < settings.target <= 1:
            raise ValueError(f"pacing target must be in (0, 1], got {settings.target}")
        if settings.max_interval_s < 0:
            raise ValueError(f"max interval must be >= 0, got {settings.max_interval_s}")
        self.settings = settings
        self.interval_s = 0.0
        self.utilization = 0.0

    def observe(self, cpu_s: float, wall_s: float, lag_s: float) -> float:
        """One observation; the interval to use until the next one."""
        self.utilization = cpu_s / wall_s if wall_s > 0 else 0.0
        target = self.settings.target
        if self.utilization > target or lag_s > LATE_S:
            grown = max(MIN_INTERVAL_S, self.interval_s * GROW)
            self.interval_s = min(self.settings.max_interval_s, grown)
        elif self.utilization < target * CALM_SHARE and lag_s < ON_TIME_S:
            shrunk = self.interval_s * SHRINK
            self.interval_s = shrunk if shrunk >= MIN_INTERVAL_S else 0.0
        return self.interval_s
