"""The load generator runs against a real gateway and reports sane figures (no timing asserted)."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.loadgen import LoadConfig, percentiles, run_load

from ..gateway.conftest import start_system


async def test_the_load_generator_counts_records_and_finds_no_gap() -> None:
    system, stop = await start_system(rate=3000)
    try:
        cfg = LoadConfig(
            [system.url], ["chain.SPY", "stats.QQQ"], clients=6, seconds=1.5, procs=2,
            slow_fraction=0.0, warmup_s=0.5, measure_every=1,
        )  # fmt: skip
        res = await asyncio.to_thread(run_load, cfg)
    finally:
        await stop()
    assert res.connected == 6
    assert res.connect_errors == 0
    assert res.snapshots == 6
    assert res.gaps == 0
    assert res.records > 0
    p50, p99, mx = percentiles(res.fast_ms)
    assert 0 <= p50 <= p99 <= mx


def test_pinning_leaves_a_core_to_the_rest_and_costs_divide_by_what_was_delivered() -> None:
    import os

    from benchmarks.gateway import _cost, pin_split
    from benchmarks.loadgen import LoadResult

    cores = os.sched_getaffinity(0)
    if len(cores) > 1:
        gw, rest = pin_split()
        assert gw
        assert rest
        assert not gw & rest
        assert gw | rest == cores
    # 1,000 frames, 4 measuring clients of 100 got 500 records each in a 10 s window of
    # a 12 s run: 50,000 records measured, 60,000 over the run.
    r = LoadResult(frames=1000, records=2000, measuring=4, connected=100, seconds=10.0)
    cost = _cost(r, (0.006, 0.002), wall=12.0)
    assert cost["cpu_us_per_frame_user"] == 6.0
    assert cost["cpu_us_per_frame_system"] == 2.0
    assert cost["cpu_us_per_record"] == round(0.008 / 60_000 * 1e6, 3)


def test_the_join_window_runs_from_the_crowds_first_connect_to_its_last_snapshot() -> None:
    from benchmarks.crowd import JOIN_TAIL_S, crowd_figures, join_window
    from benchmarks.loadgen import LoadResult

    joins = [(100.0, 100.2), (100.1, 100.9), (100.05, 100.3)]
    assert join_window(joins, crowd_start=99.0, live_end=200.0) == (100.0, 100.9 + JOIN_TAIL_S)
    assert join_window(joins, crowd_start=99.0, live_end=101.0) == (100.0, 101.0)
    # No crowd client got a snapshot: the window runs to the end of the live run.
    assert join_window([], crowd_start=99.0, live_end=110.0) == (99.0, 110.0)

    # Live samples: 10 ms before the crowd, 30 ms while it joins, 50 ms after it.
    live = LoadResult(
        timed_ms=[(95.0 + i / 10, 10.0) for i in range(40)]
        + [(100.0 + i / 10, 30.0) for i in range(19)]
        + [(102.5 + i / 10, 50.0) for i in range(10)]
    )
    crowd = LoadResult(connected=3, snapshots=3, joins=joins)
    out = crowd_figures(live, crowd, 3, crowd_start=99.0, live_end=110.0)
    assert out["live_steady_samples"] == 40
    assert out["live_join_samples"] == 19
    assert out["live_steady_p99_ms"] == 10.0
    assert out["live_join_p99_ms"] == 30.0
    assert out["live_join_p99_ratio"] == 3.0
    assert out["crowd_snapshots"] == 3
    assert out["crowd_snapshot_max_s"] == 0.8


@pytest.mark.timeout(180)
def test_the_crowd_smoke_scenario_connects_and_snapshots_everyone_without_a_gap() -> None:
    from benchmarks.gateway import SCENARIOS, _run_scenario

    sc = SCENARIOS["JS"]
    out = _run_scenario(sc, procs=1)
    assert out["connected"] == sc.clients
    assert out["snapshots"] == sc.clients
    assert out["crowd_connected"] == sc.crowd
    assert out["crowd_snapshots"] == sc.crowd
    assert out["connect_errors"] == out["crowd_connect_errors"] == 0
    assert out["gaps"] == out["crowd_gaps"] == 0
    # The live clients were measured both before and while the crowd joined.
    assert out["live_steady_samples"] > 0
    assert out["live_join_samples"] > 0
