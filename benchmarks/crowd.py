"""A crowd joining a live feed: live clients steady, then many more join at once.

Two loads run side by side against the same gateways, each in its own generator
processes (so the crowd's handshakes do not delay the live clients' callbacks in
the generator itself): the live clients from `start_at`, timed, and the crowd,
whose clients all begin connecting `crowd_after_s` after the live clients' warm-up.
The live clients' latency samples are then cut by receive wall time into a steady
window (before the crowd's first connect) and the join window (from it until the
last crowd snapshot, plus `JOIN_TAIL_S`).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from .loadgen import LoadConfig, LoadResult, percentiles, run_load

JOIN_TAIL_S = 1.0  # the join window runs this long past the last crowd snapshot
SPAWN_S = 2.0  # time given to the generator processes to start before `start_at`


def join_window(
    joins: list[tuple[float, float]], crowd_start: float, live_end: float
) -> tuple[float, float]:
    """(start, end) wall times of the join window: from the crowd's first connect
    (`crowd_start` when no crowd client got as far as a snapshot) to its last
    snapshot plus `JOIN_TAIL_S`, never past `live_end`. With no snapshot at all the
    window runs to `live_end`."""
    if not joins:
        return crowd_start, live_end
    start = min(began for began, _ in joins)
    return start, min(max(at for _, at in joins) + JOIN_TAIL_S, live_end)


def crowd_figures(
    live: LoadResult, crowd: LoadResult, crowd_clients: int, crowd_start: float, live_end: float
) -> dict[str, Any]:
    """The crowd's and the live clients' figures of one run, rounded for a report
    line: the crowd's counts and times from connect begun to first snapshot, the
    live clients' latency in the steady and the join window, and the ratio of
    their p99s (join over steady)."""
    start, end = join_window(crowd.joins, crowd_start, live_end)
    steady = [ms for at, ms in live.timed_ms if at < start]
    during = [ms for at, ms in live.timed_ms if start <= at <= end]
    s50, s99, _ = percentiles(steady)
    j50, j99, _ = percentiles(during)
    waits = [at - began for began, at in crowd.joins]
    w50, w99, wmax = percentiles(waits)
    # The same from the handshake's end (as scenario E counts it): the rest of
    # the wait was the TCP connect and the upgrade.
    h50, _, hmax = percentiles(crowd.snapshot_s)
    ratio = j99 / s99 if s99 > 0 else math.nan
    return {
        "crowd": crowd_clients, "crowd_connected": crowd.connected,
        "crowd_connect_errors": crowd.connect_errors, "crowd_snapshots": crowd.snapshots,
        "crowd_gaps": crowd.gaps, "crowd_snapshot_p50_s": round(w50, 3),
        "crowd_snapshot_p99_s": round(w99, 3), "crowd_snapshot_max_s": round(wmax, 3),
        "crowd_after_handshake_p50_s": round(h50, 3), "crowd_after_handshake_max_s": round(hmax, 3),
        "join_window_s": round(end - start, 2),
        "live_steady_p50_ms": round(s50, 2), "live_steady_p99_ms": round(s99, 2),
        "live_join_p50_ms": round(j50, 2), "live_join_p99_ms": round(j99, 2),
        "live_join_p99_ratio": round(ratio, 2),
        "live_steady_samples": len(steady), "live_join_samples": len(during),
    }  # fmt: skip


def run_crowd(
    live: LoadConfig, crowd: LoadConfig, crowd_after_s: float
) -> tuple[LoadResult, LoadResult, float, float]:
    """Run `live` (timed) and `crowd` side by side; the crowd begins connecting
    `crowd_after_s` after the live clients' warm-up and stays until they end.
    Returns (live result, crowd result, crowd start, live end), times as wall times."""
    start_at = time.time() + SPAWN_S
    crowd_start = start_at + live.warmup_s + crowd_after_s
    live_end = start_at + live.warmup_s + live.seconds
    live = replace(live, start_at=start_at, timed=True)
    crowd = replace(crowd, start_at=crowd_start, warmup_s=0.0, seconds=live_end - crowd_start)
    with ThreadPoolExecutor(2) as pool:
        live_res, crowd_res = pool.submit(run_load, live), pool.submit(run_load, crowd)
        return live_res.result(), crowd_res.result(), crowd_start, live_end
