"""The load generator runs against a real gateway and reports sane figures (no timing asserted)."""

from __future__ import annotations

import asyncio

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
