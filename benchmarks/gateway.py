"""`optionsfeed bench gateway`: the fan-out scenarios of docs/benchmarks.md.

Starts the whole deployment as separate processes on this machine (a throwaway
redis-server, `optionsfeed process`, `optionsfeed gateway --workers N`), calibrates
the simulator's total rate so that each nearest-expiry chain channel carries the
wanted updates/s, then runs the load generator against the gateway and reports
latency (receive time minus record `ts`), records/s, gaps, connect errors, time to
first snapshot, and the gateway processes' CPU and memory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optionsfeed.sources.sim.universe import DEFAULT_UNDERLYINGS

from .loadgen import LoadConfig, LoadResult, run_load, summary
from .redis_server import temporary_redis

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


SCENARIOS = {
    "A": Scenario("100 clients, 1 gateway process, 1 channel at 2,000/s", 100, 1, 1, 2000),
    "B": Scenario("2,000 clients, 2 processes, 5 channels at 400/s", 2000, 2, 5, 400),
    "C": Scenario("5,000 clients, 2 processes, 5 channels at 400/s", 5000, 2, 5, 400),
    "D": Scenario("2,000 clients as B, 10% slow readers", 2000, 2, 5, 400, slow_fraction=0.1),
    # All clients connect and subscribe at once to a feed that is already running:
    # the figure is the time from connect to first snapshot.
    "E": Scenario("2,000 clients joining a running feed", 2000, 2, 5, 400, seconds=5.0),
}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@contextmanager
def _proc(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(
        [sys.executable, "-m", "optionsfeed.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        yield p
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


def _run_scenario(sc: Scenario, procs: int) -> dict[str, Any]:
    # Only the underlyings whose channels are watched: the others would only load
    # the processor (which shares this machine) without reaching any client.
    underlyings = ",".join(DEFAULT_UNDERLYINGS[: sc.channels])

    async def main() -> dict[str, Any]:
        async with temporary_redis() as url:
            return await asyncio.to_thread(_with_redis, url)

    def _with_redis(url: str) -> dict[str, Any]:
        port = _free_port()
        # Calibrate: per-channel record rate at a known total rate scales linearly.
        with _proc(["process", "--redis", url, "--rate", str(CALIBRATE_RATE),
                    "--underlyings", underlyings, "--port", "0"]), \
             _proc(["gateway", "--redis", url, "--port", str(port)]) as gw:  # fmt: skip
            assert gw.stdout is not None
            gw.stdout.readline()
            channels = asyncio.run(_nearest_channels(f"http://127.0.0.1:{port}", sc.channels))
            cal = run_load(LoadConfig([f"ws://127.0.0.1:{port}/ws"], channels, len(channels),
                                      CALIBRATE_S, procs=1, warmup_s=1.0, measure_every=1))  # fmt: skip
        per_channel = cal.records / CALIBRATE_S / len(channels)
        rate = CALIBRATE_RATE * sc.per_channel / max(per_channel, 1e-9)
        port = _free_port()
        with _proc(["process", "--redis", url, "--rate", f"{rate:.0f}",
                    "--underlyings", underlyings, "--port", "0"]), \
             _proc(["gateway", "--redis", url, "--port", str(port),
                    "--workers", str(sc.workers)]) as gw:  # fmt: skip
            assert gw.stdout is not None
            for _ in range(sc.workers):
                gw.stdout.readline()
            time.sleep(1.0)
            pids = [gw.pid, *_children(gw.pid)]
            cpu0 = sum(_cpu_s(p) for p in pids)
            rss0 = sum(_rss_kb(p) for p in pids)
            t0 = time.monotonic()
            cfg = LoadConfig([f"ws://127.0.0.1:{port}/ws"], channels, sc.clients, sc.seconds,
                             procs=procs, slow_fraction=sc.slow_fraction)  # fmt: skip
            res = run_load(cfg)
            wall = time.monotonic() - t0
            cpu = sum(_cpu_s(p) for p in pids) - cpu0
            rss = sum(_rss_kb(p) for p in pids)
        return _report(sc, res, rate, cpu / wall, rss, rss - rss0, res.cpu_s / wall)

    return asyncio.run(main())


def _report(
    sc: Scenario, r: LoadResult, rate: float, cpu: float, rss_kb: int, grew_kb: int,
    load_cpu: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "scenario": sc.name, "total_rate": round(rate), **summary(r),
        "gateway_cpu_cores": round(cpu, 2), "loadgen_cpu_cores": round(load_cpu, 2),
        "gateway_rss_mb": round(rss_kb / 1024),
        # Growth of the gateways' RSS over the run per connection: an upper bound
        # (freed Python memory is rarely returned to the OS).
        "gateway_kb_per_connection": round(grew_kb / max(r.connected, 1), 1),
    }  # fmt: skip


def main(names: list[str], *, runs: int, procs: int) -> int:
    for name in names:
        sc = SCENARIOS[name]
        for i in range(runs):
            out = _run_scenario(sc, procs)
            print(
                f"{name} run {i + 1}: " + ", ".join(f"{k}={v}" for k, v in out.items()), flush=True
            )
    return 0
