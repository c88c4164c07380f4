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
