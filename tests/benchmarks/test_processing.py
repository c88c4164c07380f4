"""The benchmark command's pieces run and report sane figures (no timing is asserted)."""

from __future__ import annotations

import math

from benchmarks.processing import (
    bench_american_pricing,
    bench_encode,
    bench_pricing,
    latency,
    pipeline,
    throughput,
)
from optionsfeed.broker import open_broker


def test_encode_and_pricing_report_positive_figures() -> None:
    """Encode routes and pricing return finite positive figures."""
    routes = bench_encode(1, n=50)
    assert {"msgspec Struct", "msgspec dict"} <= set(routes)
    assert all(v > 0 and math.isfinite(v) for v in routes.values())
    assert bench_pricing(1, n=200) > 0


def test_american_pricing_reports_wall_first_call_cpu_and_warm() -> None:
    """The American figure: median wall time, the first call, the median CPU time, and
    the warm medians (searches from the IVs found before, and from the state left)."""
    figures = bench_american_pricing(1, n=200)
    assert len(figures) == 5
    assert all(v > 0 and math.isfinite(v) for v in figures)


async def test_throughput_and_latency_run_on_the_memory_broker() -> None:
    """Throughput and both latency figures come out of a short run."""
    assert await throughput(lambda: open_broker("memory://"), 1, 50) > 0
    figures = await latency("memory://", 2000, 0.5, warmup_s=0.2)
    assert set(figures) == {"publish -> cache", "event -> cache"}
    for p50, p99, mx in figures.values():
        assert 0 <= p50 <= p99 <= mx


async def test_pipeline_reports_the_sustained_rate() -> None:
    """The whole service sustains a modest rate on the memory broker, dropping nothing."""
    rate, dropped = await pipeline("memory://", 2000, 0.5)
    assert rate > 0
    assert dropped == 0
