"""`optionsfeed bench stages`: the processing service's stage lags at a moderate load.

Runs `optionsfeed process` (the simulator, American listings, greeks that follow the
spot) against a throwaway Redis at `RATE` updates/s and reads its `/metrics` stage
histograms (benchmarks/stages.py) over `SECONDS` after a warm-up: how long a source
event waits to be taken, to be priced, and to be in Redis. No gateway and no
clients, so the figures are the processor's alone.

With `srcs` (source trees, e.g. an older commit's `src` exported by `git archive`),
each run starts one processor per tree, in turn, so that variants measured on a
shared, noisy machine alternate within one command.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import urllib.request
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port

from .redis_server import temporary_redis
from .spawn import busy_processes, cpu_seconds, optionsfeed_proc
from .stages import scrape, stage_table, wait_http

RATE = 4200  # updates/s: about 80 records/s on each of 5 nearest-expiry chains
UNDERLYINGS = "SPY,QQQ,AAPL,TSLA,NVDA"
WARMUP_S = 8.0  # listings, the first whole-chain pricing and forwards are not steady state
SECONDS = 20.0
PROCESSING_STAGES = ("taken", "priced", "in_redis")
COUNTERS = ("optionsfeed_records_published_total",)


def _counters(page: str) -> dict[str, float]:
    with urllib.request.urlopen(page, timeout=5) as r:
        text = r.read().decode()
    return {
        s.name: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in COUNTERS
    }


def measure(url: str, src: str | None, rate: float, seconds: float) -> dict[str, list[float]]:
    """[p50, p99] ms per processing stage of one `optionsfeed process` run on `url`
    (`src`: a source tree put first on its path; None: the installed package), and
    ["cpu"]: [cores the processor used, records it published per second]."""
    port = free_port()
    args = ["process", "--redis", url, "--rate", f"{rate:.0f}", "--underlyings", UNDERLYINGS,
            "--port", str(port)]  # fmt: skip
    with optionsfeed_proc(args, pythonpath=src) as p:
        page = f"http://127.0.0.1:{port}/metrics"
        wait_http(page)
        time.sleep(WARMUP_S)
        before, n0, cpu0, t0 = scrape(page), _counters(page), cpu_seconds(p.pid), time.monotonic()
        time.sleep(seconds)
        table = stage_table(before, scrape(page))
        n1, cpu1, wall = _counters(page), cpu_seconds(p.pid), time.monotonic() - t0
    out = {k: v for k, v in table.items() if k in PROCESSING_STAGES}
    records = n1.get(COUNTERS[0], 0.0) - n0.get(COUNTERS[0], 0.0)
    out["cpu"] = [round((sum(cpu1) - sum(cpu0)) / wall, 2), round(records / wall)]
    return out


def main(runs: int, srcs: Sequence[str] = (), rate: float = RATE, hogs: int = 0) -> int:
    """Print each run's stage lags per variant, then the medians over the runs.
    `hogs`: processes spinning beside the processor meanwhile (a shared machine)."""
    variants: list[str | None] = list(srcs) or [None]
    got: dict[str | None, list[dict[str, list[float]]]] = {v: [] for v in variants}

    async def run() -> None:
        for i in range(runs):
            for v in variants:
                # A fresh Redis per run: none inherits another's cache.
                async with temporary_redis() as url:
                    with busy_processes(hogs):
                        res = await asyncio.to_thread(measure, url, v, rate, SECONDS)
                got[v].append(res)
                print(f"run {i + 1} {v or 'installed'}: {res}", flush=True)

    print(f"processing stages at --rate {rate:.0f} ({UNDERLYINGS}), {SECONDS:.0f} s a run,"
          f" {hogs} busy processes beside; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    asyncio.run(run())
    for v, results in got.items():
        cells = []
        for stage in PROCESSING_STAGES:
            p50 = statistics.median(r[stage][0] for r in results if stage in r)
            p99 = statistics.median(r[stage][1] for r in results if stage in r)
            cells.append(f"{stage} {p50:.1f} / {p99:.1f}")
        cores = statistics.median(r["cpu"][0] for r in results)
        recs = statistics.median(r["cpu"][1] for r in results)
        print(f"median p50 / p99 ms, {v or 'installed'}: " + ", ".join(cells)
              + f"; processor {cores:.2f} cores, {recs:.0f} records/s")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0
