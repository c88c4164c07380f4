"""`--source replay:FILE`: a recording played back as a source.

At `speed` N the batches come with their recorded spacing divided by N; at
`max` as fast as they are consumed. Processing runs on the recording's clock
(`clock()` is the current batch's recorded time), so the same file gives the same
seqs and values every time, whatever the speed or the day it is replayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from .base import SourceBatch
from .record import read_recording


class ReplaySource:
    """Replays the recording at `path`; ends after its last batch."""

    name = "replay"

    def __init__(self, path: Path, *, speed: float | None = 1.0) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for as fast as possible)")
        self.path = path
        self.speed = speed
        self.header, self._batches = read_recording(path)
        self._now_us = int(self.header["started_us"])

    def clock(self) -> int:
        """The recording's time: when the batch being processed was produced."""
        return self._now_us

    async def batches(self) -> AsyncIterator[SourceBatch]:
        start_wall: float | None = None
        start_t = 0
        for t_us, batch in self._batches:
            if start_wall is None:
                start_wall, start_t = time.monotonic(), t_us
            elif self.speed is not None:
                due = start_wall + (t_us - start_t) / 1e6 / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._now_us = t_us
            yield batch


def parse_speed(text: str) -> float | None:
    """`max` -> None (no pacing); else a positive factor."""
    if text == "max":
        return None
    value = float(text)
    if not value > 0:
        raise ValueError("speed must be a positive number or 'max'")
    return value
