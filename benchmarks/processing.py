"""`optionsfeed bench`: processing, pricing and encoding figures, as medians of runs.

Every figure runs in this one process on one core (the Redis server, when used,
runs in its own process). See docs/benchmarks.md for the recorded figures.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from optionsfeed.aio import cancel_and_wait
from optionsfeed.broker import open_broker
from optionsfeed.broker.base import Broker
from optionsfeed.clock import wall_clock_us
from optionsfeed.model.envelope import decode_envelope
from optionsfeed.pricing import iv_and_greeks
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import SourceBatch
from optionsfeed.sources.sim.market import SimMarket
from optionsfeed.sources.sim.source import SimSource
from optionsfeed.sources.sim.universe import DEFAULT_UNDERLYINGS, spec_for

from .redis_server import temporary_redis

WARMUP_S = 1.0  # the first batches carry the listings and catch-up; they are not steady state

REFERENCE_START = int(
    datetime(2026, 11, 25, 11, 0, tzinfo=ZoneInfo("America/New_York")).timestamp() * 1e6
)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def bench_pricing(runs: int, n: int = 10_000) -> float:
    """Median ms of iv_and_greeks over `n` contracts (mixed strikes, 1 day to 2 years)."""
    rng = np.random.default_rng(0)
    spot = np.full(n, 100.0)
    strike = rng.uniform(60, 160, n)
    t = rng.uniform(1 / 365, 2.0, n)
    vol = rng.uniform(0.1, 1.0, n)
    is_call = rng.random(n) < 0.5
    from optionsfeed.pricing import bsm_price

    price = bsm_price(is_call, spot, strike, t, 0.04, 0.01, vol)
    times = []
    for _ in range(runs * 10):
        t0 = time.perf_counter()
        iv_and_greeks(price, is_call, spot, strike, t, 0.04, 0.01)
        times.append((time.perf_counter() - t0) * 1e3)
    return _median(times)


def bench_american_pricing(runs: int, n: int = 10_000) -> tuple[float, float, float, float, float]:
    """(median ms, first call ms, median CPU ms, warm median ms, warm-state median ms)
    of American IV + greeks over `n` contracts.

    The contracts of `bench_pricing`, priced first by the American model. The first
    call solves the rows of the boundary tables the IV search and rho need (the
    prices' own were solved when they were made); it is reported on its own, and
    the medians are over `max(runs, 3)` calls after it. The CPU time (the process's)
    moves much less than the wall time when other work shares the cores.

    Those calls start cold, from the European IV. The warm figures are the data
    path's usual case: the same contracts a moment later (spot up 0.05 %, each
    volatility moved by up to 0.5 % of itself), each search starting from the IV
    found before (as from a row's published IV), and also from the state the cold
    call left (`pricing.american.Warm`, as the processor keeps per row); the two
    alternate.
    """
    from optionsfeed.pricing.american import (
        american_iv_and_greeks,
        american_iv_greeks_warm,
        american_price,
    )

    rng = np.random.default_rng(0)
    strike, t = rng.uniform(60, 160, n), rng.uniform(1 / 365, 2.0, n)
    vol, is_call = rng.uniform(0.1, 1.0, n), rng.random(n) < 0.5
    price = american_price(is_call, 100.0, strike, t, 0.04, 0.01, vol)
    times, cpu = [], []
    for _ in range(max(runs, 3) + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        iv, _, state = american_iv_greeks_warm(price, is_call, 100.0, strike, t, 0.04, 0.01)
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    moved = american_price(is_call, 100.05, strike, t, 0.04, 0.01,
                           vol * (1.0 + rng.uniform(-0.005, 0.005, n)))  # fmt: skip
    warm: list[float] = []
    from_state: list[float] = []
    for _ in range(max(runs, 3)):
        for out, kw in ((warm, {}), (from_state, {"warm": state})):
            t0 = time.perf_counter()
            american_iv_and_greeks(moved, is_call, 100.05, strike, t, 0.04, 0.01, guess=iv, **kw)
            out.append((time.perf_counter() - t0) * 1e3)
    return _median(times[1:]), times[0], _median(cpu[1:]), _median(warm), _median(from_state)


def make_batches(
    steps: int, per_step: int, step_us: int = 10_000
) -> tuple[SourceBatch, list[tuple[int, SourceBatch]]]:
    """The listing batch and `steps` simulated batches of `per_step` updates (`step_us` apart)."""
    market = SimMarket([spec_for(u) for u in DEFAULT_UNDERLYINGS], seed=1, start_us=REFERENCE_START)
    first = SourceBatch(listings=market.listings())
    out = []
    for i in range(steps):
        now = REFERENCE_START + (i + 1) * step_us
        out.append((now, market.step(now, per_step)))
    return first, out


def bench_follow(rate: int, seconds: float) -> dict[str, tuple[float, float, float]]:
    """Option updates the processor publishes with and without greeks following the
    underlying (once a second, the default; and off), over the same simulator run.

    `seconds` of simulated time at `rate` updates/s in 100 ms steps. Per variant:
    (option updates per simulated second, payload bytes per simulated second,
    processing seconds on one core for the whole run).
    """
    steps = int(seconds * 10)
    first, batches = make_batches(steps, rate // 10, step_us=100_000)
    out: dict[str, tuple[float, float, float]] = {}
    for name, follow_us in (("off", 0), ("1 s", 1_000_000)):
        proc = Processor(follow_interval_us=follow_us)
        proc.apply(first, REFERENCE_START)
        updates = size = 0
        t0 = time.perf_counter()
        for now, batch in batches:
            for pub in proc.apply(batch, now):
                updates += len(decode_envelope(pub.payload).options)
                size += len(pub.payload)
        out[name] = (updates / seconds, size / seconds, time.perf_counter() - t0)
    return out


def bench_sim(runs: int, steps: int = 100, per_step: int = 1000) -> float:
    """Median updates/s the simulator generates on one core."""
    rates = []
    for _ in range(runs):
        market = SimMarket(
            [spec_for(u) for u in DEFAULT_UNDERLYINGS], seed=1, start_us=REFERENCE_START
        )
        t0 = time.perf_counter()
        for i in range(steps):
            market.step(REFERENCE_START + (i + 1) * 10_000, per_step)
        rates.append(steps * per_step / (time.perf_counter() - t0))
    return _median(rates)


async def throughput(broker_factory: Callable[[], Broker], runs: int, per_step: int) -> float:
    first, batches = make_batches(100, per_step)
    updates = sum(b.event_count() for _, b in batches)
    rates = []
    for _ in range(runs):
        async with broker_factory() as broker:
            proc = Processor()
            await broker.publish(proc.apply(first, REFERENCE_START))
            t0 = time.perf_counter()
            for now, batch in batches:
                await broker.publish(proc.apply(batch, now))
            rates.append(updates / (time.perf_counter() - t0))
    return _median(rates)


async def latency(
    url: str, rate: float, seconds: float, warmup_s: float = WARMUP_S
) -> dict[str, tuple[float, ...]]:
    """Latency percentiles (p50, p99, max) in ms, per update, at `rate` updates/s.

    "publish -> cache": from handing a batch's publications to the broker until the
    broker confirms the cache, stream and channel hold them (the broker's share).
    "event -> cache": from the source event's `ts` to the same point (generation,
    processing and publishing together).
    Batches in the first `warmup_s` seconds are processed but not recorded.
    """
    pub: list[float] = []
    e2e: list[float] = []
    async with open_broker(url) as broker:
        source = SimSource(list(DEFAULT_UNDERLYINGS), rate=rate, seed=1)
        proc = Processor()
        measure_from = time.monotonic() + warmup_s
        end = measure_from + seconds
        async for batch in source.batches():
            pubs = proc.apply(batch, wall_clock_us())
            oldest = min((int(q.ts.min()) for q in batch.quotes), default=None)
            start = wall_clock_us()
            await broker.publish(pubs)
            done = wall_clock_us()
            if oldest is not None and not batch.listings and time.monotonic() >= measure_from:
                n = batch.event_count()
                pub.extend([(done - start) / 1e3] * n)
                e2e.extend([(done - oldest) / 1e3] * n)
            if time.monotonic() > end:
                break
    out: dict[str, tuple[float, ...]] = {}
    for name, values in (("publish -> cache", pub), ("event -> cache", e2e)):
        q = np.percentile(np.array(values), [50, 99, 100])
        out[name] = tuple(float(v) for v in q)
    return out


async def pipeline(url: str, rate: float, seconds: float) -> tuple[float, int]:
    """Updates/s the whole service (simulator -> processing -> broker) sustains at `rate`.

    Runs `ProcessingService` as `optionsfeed process` does and counts the source
    updates it consumed after a warm-up; also returns how many publications it had
    to drop (0 unless the broker failed).
    """
    from optionsfeed.processing.service import ProcessingService

    async with open_broker(url) as broker:
        svc = ProcessingService(SimSource(list(DEFAULT_UNDERLYINGS), rate=rate, seed=1), broker)
        task = asyncio.create_task(svc.run())
        try:
            await asyncio.sleep(WARMUP_S)
            n0, t0 = svc.processor.updates_in, time.perf_counter()
            await asyncio.sleep(seconds)
            n1, t1 = svc.processor.updates_in, time.perf_counter()
        finally:
            await cancel_and_wait(task)
    return (n1 - n0) / (t1 - t0), svc.status.dropped


def bench_encode(runs: int, n: int = 5000) -> dict[str, float]:
    """µs per full option record, from column values to JSON bytes, by route.

    Each route pays what the data path pays: build the record from column values,
    then encode it. Routes: a msgspec Struct built positionally (what the processor
    does), a dict encoded by msgspec, a dict encoded by orjson (when installed).
    """
    import msgspec

    from optionsfeed.model.records import OptionRecord

    rng = np.random.default_rng(0)
    cols = [rng.random(n).round(4).tolist() for _ in range(11)]
    cols[4][::7] = [float("nan")] * len(cols[4][::7])  # some iv_failed rows: NaN -> null
    syms = [f"SPY261218C{i:08d}" for i in range(n)]
    enc = msgspec.json.Encoder()

    def row(i: int) -> dict[str, Any]:
        c = [col[i] for col in cols]
        return {
            "symbol": syms[i], "underlying": "SPY", "root": "SPY", "expiry": "2026-12-18",
            "strike": 650.0, "right": "C", "multiplier": 100, "bid": c[0], "ask": c[1],
            "bid_size": 10, "ask_size": 12, "mark": c[2], "last": c[3], "last_size": 1,
            "volume": 100, "open_interest": 5000, "iv": c[4], "delta": c[5], "gamma": c[6],
            "theta": c[7], "vega": c[8], "rho": c[9], "underlying_price": c[10],
            "ts": 1764086400000000, "flags": [],
        }  # fmt: skip

    def struct() -> None:
        for i in range(n):
            c = [col[i] for col in cols]
            enc.encode(
                OptionRecord(
                    syms[i], "SPY", "SPY", "2026-12-18", 650.0, "C", 100, c[0], c[1], 10, 12,
                    c[2], c[3], 1, 100, 5000, c[4], c[5], c[6], c[7], c[8], c[9], c[10],
                    1764086400000000, [],
                )
            )  # fmt: skip

    def dict_msgspec() -> None:
        for i in range(n):
            enc.encode(row(i))

    cands: dict[str, Callable[[], None]] = {"msgspec Struct": struct, "msgspec dict": dict_msgspec}
    try:
        import orjson

        def dict_orjson() -> None:
            for i in range(n):
                orjson.dumps(row(i))

        cands["orjson dict"] = dict_orjson
    except ImportError:
        pass
    return {k: _median([_time(f) for _ in range(runs)]) / n * 1e6 for k, f in cands.items()}


def _time(f: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main(what: str, *, redis: str | None, runs: int) -> int:
    """Run the benchmarks named by `what` ("processing", "encode", "venues", "follow"
    or "all"; "all" leaves out "venues" and "follow") and print figures."""
    if what == "venues":
        from .venues import main as venues_main

        return venues_main(runs)
    if what == "follow":
        print("greeks following the underlying: option updates published, same simulator run")
        for sim_rate, seconds in ((2_000, 60.0), (20_000, 20.0)):
            res = bench_follow(sim_rate, seconds)
            for name, (ups, size, cpu) in res.items():
                print(f"  --rate {sim_rate:>6,}, follow {name:4s}: {ups:9,.0f} option updates/s,"
                      f" {size / 1e6:6.2f} MB/s of envelopes, processing {cpu:5.1f} s"
                      f" for {seconds:.0f} s")  # fmt: skip
        return 0
    if what in ("encode", "all"):
        print("encode: µs per full option record, built from values and encoded (median)")
        for name, us in bench_encode(runs).items():
            print(f"  {name:16s} {us:6.2f} µs")
    if what in ("processing", "all"):
        print(f"pricing: IV + greeks of 10,000 contracts: {bench_pricing(runs):.2f} ms (median)")
        am, first, cpu, warm, from_state = bench_american_pricing(runs)
        print(
            f"pricing, American: IV + greeks of 10,000 contracts: {am:.1f} ms (median;"
            f" CPU {cpu:.1f} ms; first call {first:.0f} ms); warm, each from its IV a"
            f" moment before: {warm:.1f} ms; from where its search ended: {from_state:.1f} ms"
        )
        print(f"simulator: {bench_sim(runs):,.0f} updates/s generated on one core (median)")
        for per_step in (500, 1000):
            mem = asyncio.run(throughput(lambda: open_broker("memory://"), runs, per_step))
            print(
                f"processing -> memory broker: {mem:,.0f} updates/s ({per_step} per batch, median)"
            )
        rate, _ = asyncio.run(pipeline("memory://", 100_000, 10.0))
        print(f"pipeline at --rate 100000 -> memory broker: {rate:,.0f} updates/s sustained")
        asyncio.run(_with_redis(redis, runs))
    return 0


async def _with_redis(url: str | None, runs: int) -> None:
    if url is None:
        if shutil.which("redis-server") is None:
            print("processing -> redis: skipped (no --redis and no redis-server on PATH)")
            return
        async with temporary_redis() as tmp:
            await _with_redis(tmp, runs)
        return
    # Latency first, on a Redis not yet holding the throughput runs' data.
    for name, (p50, p99, mx) in (await latency(url, 5000, 10.0)).items():
        print(
            f"{name} (Redis, 5,000 updates/s): p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {mx:.2f} ms"
        )
    for per_step in (500, 1000):
        rate = await throughput(lambda: open_broker(url), runs, per_step)
        print(f"processing -> redis: {rate:,.0f} updates/s ({per_step} per batch, median)")
    rate, dropped = await pipeline(url, 100_000, 10.0)
    print(f"pipeline at --rate 100000 -> redis: {rate:,.0f} updates/s sustained, {dropped} dropped")
