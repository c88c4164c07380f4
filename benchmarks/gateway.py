"""`optionsfeed bench gateway`: the fan-out scenarios of docs/benchmarks.md.

Starts the whole deployment as separate processes on this machine (a throwaway
redis-server, `optionsfeed process`, `optionsfeed gateway --workers N`), calibrates
the simulator's total rate so that each nearest-expiry chain channel carries the
wanted updates/s, then runs the load generator against the gateway and reports
latency (receive time minus record `ts`), records/s, gaps, connect errors, time to
first snapshot, and the gateway processes' CPU and memory. A scenario with a crowd
(J) also has that many more clients join at once mid-run (benchmarks/crowd.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optionsfeed.sources.sim.universe import DEFAULT_UNDERLYINGS
from tests.ports import free_port

from .crowd import crowd_figures, run_crowd
from .loadgen import LoadConfig, LoadResult, run_load, summary
from .redis_server import temporary_redis
from .spawn import cpu_seconds, optionsfeed_proc
from .stages import scrape, stage_table, wait_http

CALIBRATE_RATE = 20_000.0
CALIBRATE_S = 4.0


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    workers: int
    channels: int  # nearest-expiry chains of this many underlyings
    per_channel: float  # record updates/s each channel carries
    slow_fraction: float = 0.0
    seconds: float = 15.0
    crowd: int = 0  # clients that join at once mid-run, besides the `clients` live ones
    crowd_after_s: float = 5.0  # the live clients' steady window before the crowd joins


SCENARIOS = {
    "A": Scenario("100 clients, 1 gateway process, 1 channel at 2,000/s", 100, 1, 1, 2000),
    "B": Scenario("2,000 clients, 2 processes, 5 channels at 400/s", 2000, 2, 5, 400),
    "C": Scenario("5,000 clients, 2 processes, 5 channels at 400/s", 5000, 2, 5, 400),
    "D": Scenario("2,000 clients as B, 10% slow readers", 2000, 2, 5, 400, slow_fraction=0.1),
    # All clients connect and subscribe at once to a feed that is already running:
    # the figure is the time from connect to first snapshot.
    "E": Scenario("2,000 clients joining a running feed", 2000, 2, 5, 400, seconds=5.0),
    # A load this machine sustains: where latency is the pipeline's, not a queue's.
    "M": Scenario("2,000 clients, 2 processes, 5 channels at 80/s", 2000, 2, 5, 80),
    # A crowd joins a live feed: what it does to the clients already there.
    "J": Scenario("500 clients as M, then 2,000 more join at once", 500, 2, 5, 80, crowd=2000),
    # Smoke runs of the whole bench (seconds, not a figure).
    "S": Scenario("20 clients, 1 process, 2 channels at 50/s", 20, 1, 2, 50, seconds=2.0),
    "JS": Scenario("S, then 50 join at once", 20, 1, 2, 50, seconds=3, crowd=50, crowd_after_s=1),
}


_cpu_s = cpu_seconds


def _cpu_sum(pids: list[int]) -> tuple[float, float]:
    user, system = zip(*(_cpu_s(p) for p in pids), strict=True)
    return sum(user), sum(system)


def pin_split(gateway_cores: int = 1) -> tuple[set[int], set[int]]:
    """(gateway cores, the other cores): the last `gateway_cores` of this process's
    cores for the gateways, the rest for everything else (processor, Redis, the load
    generator). At least one core must be left for the rest."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) <= gateway_cores:
        raise SystemExit(
            f"--pin needs more than {gateway_cores} core(s); this process has {len(cores)}"
        )
    return set(cores[-gateway_cores:]), set(cores[:-gateway_cores])


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


async def _nearest_channels(http_base: str, n: int) -> list[str]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as s:
        for u in DEFAULT_UNDERLYINGS[:n]:
            for _ in range(100):
                async with s.get(f"{http_base}/api/v1/underlyings") as r:
                    listed = {x["symbol"]: x for x in (await r.json())["underlyings"]}
                if u in listed:
                    break
                await asyncio.sleep(0.1)
            exp = min(listed[u]["expiries"])
            out.append(f"chain.{u}.{exp.replace('-', '')}")
    return out


def _run_scenario(sc: Scenario, procs: int, pin: bool = False) -> dict[str, Any]:
    # Only the underlyings whose channels are watched: the others would only load
    # the processor (which shares this machine) without reaching any client.
    underlyings = ",".join(DEFAULT_UNDERLYINGS[: sc.channels])

    gw_cores, rest_cores = pin_split() if pin else (set(), set())
    mask = os.sched_getaffinity(0)
    if pin:
        # Every process started from here on (Redis, the processor, the load
        # generator) inherits this; the gateways are moved to their own core below.
        os.sched_setaffinity(0, rest_cores)

    async def main() -> dict[str, Any]:
        async with temporary_redis() as url:
            return await asyncio.to_thread(_with_redis, url)

    def _with_redis(url: str) -> dict[str, Any]:
        port = free_port()
        # Calibrate: per-channel record rate at a known total rate scales linearly.
        with optionsfeed_proc(["process", "--redis", url, "--rate", str(CALIBRATE_RATE),
                    "--underlyings", underlyings, "--port", "0"]), \
             optionsfeed_proc(["gateway", "--redis", url, "--port", str(port)]) as gw:  # fmt: skip
            assert gw.stdout is not None
            gw.stdout.readline()
            channels = asyncio.run(_nearest_channels(f"http://127.0.0.1:{port}", sc.channels))
            cal = run_load(LoadConfig([f"ws://127.0.0.1:{port}/ws"], channels, len(channels),
                                      CALIBRATE_S, procs=1, warmup_s=1.0, measure_every=1))  # fmt: skip
        per_channel = cal.records / CALIBRATE_S / len(channels)
        rate = CALIBRATE_RATE * sc.per_channel / max(per_channel, 1e-9)
        port, proc_port = free_port(), free_port()
        with optionsfeed_proc(["process", "--redis", url, "--rate", f"{rate:.0f}",
                    "--underlyings", underlyings, "--port", str(proc_port)]), \
             optionsfeed_proc(["gateway", "--redis", url, "--port", str(port),
                    "--workers", str(sc.workers)]) as gw:  # fmt: skip
            assert gw.stdout is not None
            for _ in range(sc.workers):
                gw.stdout.readline()
            time.sleep(1.0)
            pids = [gw.pid, *_children(gw.pid)]
            for p in pids if pin else ():
                os.sched_setaffinity(p, gw_cores)
            # One gateway process's histograms (with --workers N a scrape reaches one).
            pages = (f"http://127.0.0.1:{proc_port}/metrics", f"http://127.0.0.1:{port}/metrics")
            wait_http(pages[0])  # the processor's server may start after the gateway's
            stages0 = scrape(*pages)
            cpu0 = _cpu_sum(pids)
            rss0 = sum(_rss_kb(p) for p in pids)
            t0 = time.monotonic()
            cfg = LoadConfig([f"ws://127.0.0.1:{port}/ws"], channels, sc.clients, sc.seconds,
                             procs=procs, slow_fraction=sc.slow_fraction)  # fmt: skip
            joined: dict[str, Any] = {}
            if sc.crowd:
                # Only the live clients' latency is reported: one crowd client decodes
                # records, the others only message heads.
                crowd_cfg = replace(cfg, clients=sc.crowd, measure_every=sc.crowd)
                res, crowd, crowd_start, live_end = run_crowd(cfg, crowd_cfg, sc.crowd_after_s)
                joined = crowd_figures(res, crowd, sc.crowd, crowd_start, live_end)
                # The gateways' CPU and memory went to the crowd's frames and
                # connections too, and the generator's to its clients.
                both = LoadResult(seconds=res.seconds)
                both.merge(res)
                both.merge(crowd)
            else:
                res = both = run_load(cfg)
            wall = time.monotonic() - t0
            cpu1 = _cpu_sum(pids)
            cpu = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
            rss = sum(_rss_kb(p) for p in pids)
            stages = stage_table(stages0, scrape(*pages))
        out = _report(
            sc, res, rate, sum(cpu) / wall, rss, (rss - rss0) / max(both.connected, 1),
            both.cpu_s / wall,
        )  # fmt: skip
        out.update(joined)
        out.update(_cost(replace(res, frames=both.frames), cpu, wall),
                   pinned=sorted(gw_cores) if pin else None)  # fmt: skip
        # Each stage's [p50, p99] lag behind the source ts, in ms; the client's last.
        out["stages_ms"] = {**stages, "at_client": [out["p50_ms"], out["p99_ms"]]}
        return out

    try:
        return asyncio.run(main())
    finally:
        os.sched_setaffinity(0, mask)


def _cost(r: LoadResult, cpu: tuple[float, float], wall: float) -> dict[str, float]:
    """Gateway CPU per delivered frame and per delivered record, user and system.

    CPU and frames are counted over the whole run (connect and warm-up included);
    records only after the warm-up, by the measuring clients (every client of a
    channel gets the same), so they are scaled from the measured span to the run."""
    frames = r.frames
    records = r.records / max(r.measuring, 1) * r.connected * wall / max(r.seconds, 1e-9)
    user, system = cpu
    return {
        "cpu_us_per_frame_user": round(user / max(frames, 1) * 1e6, 2),
        "cpu_us_per_frame_system": round(system / max(frames, 1) * 1e6, 2),
        "cpu_us_per_record": round((user + system) / max(records, 1) * 1e6, 3),
    }


def _report(
    sc: Scenario, r: LoadResult, rate: float, cpu: float, rss_kb: int, kb_per_conn: float,
    load_cpu: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "scenario": sc.name, "total_rate": round(rate), **summary(r),
        "gateway_cpu_cores": round(cpu, 2), "loadgen_cpu_cores": round(load_cpu, 2),
        "gateway_rss_mb": round(rss_kb / 1024),
        # Growth of the gateways' RSS over the run per connection: an upper bound
        # (freed Python memory is rarely returned to the OS).
        "gateway_kb_per_connection": round(kb_per_conn, 1),
    }  # fmt: skip


KNEE_P99_MS = 100.0
KNEE_STEPS = (500, 1000, 2000, 3000, 4000, 5000, 6000, 8000)


def knee(per_client: float, *, procs: int, pin: bool, seconds: float = 10.0) -> int:
    """The most clients one gateway process holds with p99 <= 100 ms, each client on
    one of 5 nearest-expiry chains at `per_client` records/s: clients go up in
    steps until p99 passes the bound (or a client misses its snapshot or sees a gap)."""
    best = 0
    for n in KNEE_STEPS:
        sc = Scenario(f"knee: {n} clients at {per_client:g}/s, 1 process", n, 1, 5, per_client,
                      seconds=seconds)  # fmt: skip
        out = _run_scenario(sc, procs, pin)
        print("knee " + ", ".join(f"{k}={v}" for k, v in out.items()), flush=True)
        whole = out["connected"] == n and out["snapshots"] == n and out["gaps"] == 0
        if not whole or out["p99_ms"] > KNEE_P99_MS:
            break
        best = n
    print(f"knee: {best} clients at {per_client:g} records/s each with p99 <= "
          f"{KNEE_P99_MS:g} ms{' (gateway pinned to its own core)' if pin else ''}", flush=True)  # fmt: skip
    return best


def main(names: list[str], *, runs: int, procs: int, pin: bool = False) -> int:
    for name in names:
        sc = SCENARIOS[name]
        for i in range(runs):
            out = _run_scenario(sc, procs, pin)
            print(
                f"{name} run {i + 1}: " + ", ".join(f"{k}={v}" for k, v in out.items()), flush=True
            )
    return 0
