"""Several `optionsfeed process` on one Redis: throughput with 1 and 2, takeover times.

`python -m benchmarks processors` (or `optionsfeed bench processors`). Real processes
on a throwaway redis-server, the simulator at a rate no processor keeps up with, over
twelve underlyings of equal activity (so that a 6/6 split halves the work):

- throughput: records published per second into Redis by the whole service (the
  processors' `optionsfeed_records_published` counters over a window), with one
  processor, two with a hot standby each (`--standbys 1`, the default: both price
  everything) and two without (`--standbys 0`: each prices only what it owns);
- takeover: from `kill -9` or `SIGTERM` of a processor owning underlyings to the first
  envelope of the new epoch of every one of them (the cache's epoch, polled every
  5 ms), over `runs` takeovers; a new processor joins after each one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import redis

from tests.ports import free_ports

from .redis_server import temporary_redis

UNIVERSE = ["T03", "T06", "T52", "T17", "T55", "T08", "T32", "T01", "T39", "T18", "T49", "T10"]
HIGH_RATE = 60_000
WINDOW_S = 10.0
_RECORDS = re.compile(rb"^optionsfeed_records_published_total (\S+)$", re.M)


class Processor:
    """One `optionsfeed process` subprocess with its HTTP port."""

    def __init__(self, redis_url: str, port: int, rate: float, standbys: int) -> None:
        self.port = port
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "optionsfeed.cli", "process", "--redis", redis_url,
             "--port", str(port), "--rate", str(rate), "--standbys", str(standbys),
             "--underlyings", ",".join(UNIVERSE), "--log-level", "ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                body: bytes = r.read()
                return body
        except urllib.error.HTTPError as e:
            err: bytes = e.read()
            return err
        except OSError:
            return None

    def ready(self) -> dict[str, Any]:
        body = self.get("/readyz")
        try:
            out: dict[str, Any] = json.loads(body) if body else {}
        except ValueError:
            return {}
        return out

    def records(self) -> float:
        m = _RECORDS.search(self.get("/metrics") or b"")
        return float(m.group(1)) if m else 0.0

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def _until(cond: Callable[[], bool], limit_s: float, step_s: float = 0.2) -> bool:
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(step_s)
    return True


def _placed(procs: list[Processor]) -> bool:
    """Every processor sees all of them, and the underlyings are all owned, once."""
    bodies = [p.ready() for p in procs]
    if any("processors" not in b for b in bodies):
        return False
    if any(len(b["processors"]) != len(procs) for b in bodies):
        return False
    owned = sorted(u for b in bodies for u in b["owned"])
    return owned == sorted(UNIVERSE)


def _epochs(r: redis.Redis) -> dict[str, bytes | None]:
    pipe = r.pipeline(transaction=False)
    for u in UNIVERSE:
        pipe.hget(f"of:{{{u}}}:meta", "epoch")
    return dict(zip(UNIVERSE, pipe.execute(), strict=True))


def throughput(redis_url: str, n: int, standbys: int, window_s: float = WINDOW_S) -> float:
    """Records/s the whole service publishes with `n` processors (one window, after
    placement has settled)."""
    procs = [Processor(redis_url, p, HIGH_RATE, standbys) for p in free_ports(n)]
    try:
        if not _until(lambda: _placed(procs), 90):
            raise RuntimeError("the processors did not share the underlyings within 90 s")
        time.sleep(5.0)  # hand-overs done, first full pricing done
        start = [p.records() for p in procs]
        t0 = time.monotonic()
        time.sleep(window_s)
        end = [p.records() for p in procs]
        return (sum(end) - sum(start)) / (time.monotonic() - t0)
    finally:
        for p in procs:
            p.stop()


def takeovers(redis_url: str, how: str, runs: int) -> list[float]:
    """Seconds from the signal to the first new envelope of every underlying the
    victim owned, `runs` times (a new processor joins after each)."""
    r = redis.Redis.from_url(redis_url)
    procs = [Processor(redis_url, p, 2000, 1) for p in free_ports(2)]
    out: list[float] = []
    try:
        for _ in range(runs):
            if not _until(lambda: _placed(procs) and None not in _epochs(r).values(), 90):
                raise RuntimeError("the processors did not share the underlyings within 90 s")
            time.sleep(3.0)  # past the settling time: no hand-over in flight
            victim = max(procs, key=lambda p: len(p.ready().get("owned", [])))
            moved = victim.ready()["owned"]
            before = _epochs(r)
            t0 = time.monotonic()
            if how == "kill":
                victim.popen.kill()
            else:
                victim.popen.send_signal(signal.SIGTERM)
            while True:
                now = _epochs(r)
                if all(now[u] != before[u] for u in moved):
                    break
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("no takeover within 30 s")
                time.sleep(0.005)
            out.append(time.monotonic() - t0)
            victim.popen.wait(15)
            procs.remove(victim)
            procs.append(Processor(redis_url, free_ports(1)[0], 2000, 1))
    finally:
        for p in procs:
            p.stop()
    return out


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def _main(runs: int) -> int:
    async with temporary_redis() as url:
        print(f"processors: {len(UNIVERSE)} simulated underlyings, --rate {HIGH_RATE:,}")
        for n, standbys in ((1, 1), (2, 1), (2, 0)):
            rates = []
            for _ in range(max(1, runs // 2)):
                redis.Redis.from_url(url).flushall()
                rates.append(await asyncio.to_thread(throughput, url, n, standbys))
            print(
                f"  {n} processor(s), --standbys {standbys}: records published/s, "
                f"median {sorted(rates)[len(rates) // 2]:,.0f} "
                f"(runs: {', '.join(f'{x:,.0f}' for x in rates)})"
            )
        for how in ("kill", "term"):
            redis.Redis.from_url(url).flushall()
            times = await asyncio.to_thread(takeovers, url, how, runs)
            name = "kill -9" if how == "kill" else "SIGTERM"
            print(
                f"  takeover after {name}, to the first new envelope of every underlying "
                f"the victim owned, {len(times)} runs: p50 {_pct(times, 0.5):.2f} s, "
                f"p99 {_pct(times, 0.99):.2f} s (all: {', '.join(f'{t:.2f}' for t in times)})"
            )
    return 0


def main(runs: int) -> int:
    """Run the processors benchmark (`runs` takeovers of each kind) and print figures."""
    return asyncio.run(_main(runs))
