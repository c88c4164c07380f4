"""`optionsfeed bench cluster`: publish -> gateway latency on one Redis and on a Redis Cluster.

Starts a throwaway redis-server and a local Redis Cluster (6 nodes on loopback: 3
primaries, 3 replicas; tests/cluster.py) and, alternating between the two in one run,
has one process publish sequenced envelopes of five underlyings (spread over the
cluster's three shards) at a fixed record rate, while this process receives them
through the broker subscription a gateway uses (`Broker.subscribe`: pub/sub on one
Redis, shard subscriptions with probes on a cluster). An envelope's latency is its
arrival here minus the wall-clock time stamped into it just before `publish`, so it
covers the script, the (S)PUBLISH and the subscriber's read: the broker's share of
publish -> gateway. Records are ~250-byte deltas in envelopes of 10, as the processor
sends them. The publisher also reports the CPU time of a `publish` call (all five
underlyings): the client's own share, which other work on the machine disturbs far
less than the latency tail.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from redis.crc import key_slot

from optionsfeed.broker import open_broker
from optionsfeed.clock import wall_clock_us
from optionsfeed.model.envelope import ChainInfo, Publication
from tests.cluster import NODES, LocalCluster
from tests.ports import free_ports

from .broker_bench import _delta, _full, _symbol
from .redis_server import temporary_redis

UNDERLYINGS = 5
PER_ENVELOPE = 10  # records per envelope
CONTRACTS = 200  # listed per underlying
EXPIRY = "2025-06-20"
WARMUP_S = 1.0
SLOTS = 16384


def spread_underlyings(n: int = UNDERLYINGS, shards: int = 3) -> list[str]:
    """`n` names whose hash slots fall in each of the `shards` even slot ranges in
    turn (the ranges `redis-cli --cluster create` gives the primaries)."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        name = f"CB{i}"
        i += 1
        want = len(out) % shards
        if key_slot(f"of:{{{name}}}:chain".encode()) * shards // SLOTS == want:
            out.append(name)
    return out


class _Head(msgspec.Struct):
    ts: int
    seq: int = 0


def _resets(names: list[str], epoch: str) -> list[Publication]:
    out = []
    for u in names:
        records = [(_symbol(u, i), _full(u, i, 0)) for i in range(CONTRACTS)]
        info = msgspec.json.encode(ChainInfo({EXPIRY: [s for s, _ in records]}))
        payload = b'{"u":"%s","epoch":"%s","prev":0,"seq":1,"ts":0,"reset":true}' % (
            u.encode(), epoch.encode(),
        )  # fmt: skip
        out.append(Publication(u, epoch, 0, 1, 0, payload, records, info, reset=True))
    return out


async def _publish(url: str, names: list[str], rate: float, seconds: float) -> float:
    """Publish `rate` records/s over `names` for `seconds` on an absolute schedule; the
    mean CPU time of a `publish` call (all five underlyings), in µs."""
    epoch = f"cb{wall_clock_us() % 1_000_000:06d}"
    seq = dict.fromkeys(names, 1)
    per_batch = PER_ENVELOPE * len(names)
    interval = per_batch / rate
    sent = 0
    cpu_s = 0.0
    async with open_broker(url) as broker:
        await broker.publish(_resets(names, epoch))
        start = time.perf_counter() + interval
        step = 0
        while (now := time.perf_counter()) < start + seconds:
            delay = start + step * interval - now
            if delay > 0:
                await asyncio.sleep(delay)
            step += 1
            ts = wall_clock_us()
            pubs = []
            for u in names:
                prev = seq[u]
                seq[u] = prev + 1
                first = (step * PER_ENVELOPE) % CONTRACTS
                idx = [(first + k) % CONTRACTS for k in range(PER_ENVELOPE)]
                deltas = b",".join(_delta(u, i, step) for i in idx)
                payload = b'{"u":"%s","epoch":"%s","prev":%d,"seq":%d,"ts":%d,"options":[%s]}' % (
                    u.encode(), epoch.encode(), prev, prev + 1, ts, deltas,
                )  # fmt: skip
                records = [(_symbol(u, i), _full(u, i, step)) for i in idx]
                pubs.append(Publication(u, epoch, prev, prev + 1, ts, payload, records))
            cpu0 = time.process_time()
            await broker.publish(pubs)
            cpu_s += time.process_time() - cpu0
            sent += 1
    return cpu_s / max(sent, 1) * 1e6


def _publisher(url: str, names: list[str], rate: float, seconds: float, out: Connection) -> None:
    out.send(asyncio.run(_publish(url, names, rate, seconds)))


async def _receive(url: str, names: list[str], rate: float, seconds: float) -> dict[str, float]:
    """Subscribe to `names`, run the publisher process, and measure what arrives."""
    lat_ms: list[float] = []
    span_us = [0, 0]  # first and last measured ts
    received = 0
    gaps = 0
    measure_from = 0
    decode = msgspec.json.Decoder(_Head).decode

    async def follow(sub: Any) -> None:
        nonlocal received, gaps
        last = 0
        async for raw in sub:
            now = wall_clock_us()
            head = decode(raw)
            if head.seq <= last:
                continue  # a repeat after a resubscription (the Subscription contract)
            if last and head.seq != last + 1:
                gaps += 1
            last = head.seq
            if head.ts >= measure_from > 0:
                received += 1
                span_us[0] = min(span_us[0] or head.ts, head.ts)
                span_us[1] = max(span_us[1], head.ts)
                lat_ms.append((now - head.ts) / 1000)

    async with open_broker(url) as broker:
        subs = [broker.subscribe(u) for u in names]
        for s in subs:
            await s.__aenter__()
        tasks = [asyncio.create_task(follow(s)) for s in subs]
        try:
            await asyncio.sleep(0.5)  # every subscription in place before the first envelope
            ctx = multiprocessing.get_context("spawn")
            cpu_in, cpu_out = ctx.Pipe(duplex=False)
            args = (url, names, rate, seconds + WARMUP_S, cpu_out)
            proc = ctx.Process(target=_publisher, args=args)
            proc.start()
            await asyncio.sleep(WARMUP_S)
            measure_from = wall_clock_us()
            await asyncio.to_thread(proc.join, seconds + 60)
            await asyncio.sleep(0.2)  # the last envelopes in flight
            publish_cpu_us = cpu_in.recv() if cpu_in.poll() else float("nan")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in subs:
                await s.__aexit__(None, None, None)
    q = np.percentile(np.array(lat_ms or [float("nan")]), [50, 99, 100])
    return {
        "envelopes": float(received),
        "records_per_s": received * PER_ENVELOPE / max((span_us[1] - span_us[0]) / 1e6, 1e-3),
        "gaps": float(gaps),
        "p50_ms": float(q[0]),
        "p99_ms": float(q[1]),
        "max_ms": float(q[2]),
        "publish_cpu_us": publish_cpu_us,
    }


def _start_cluster(workdir: Path) -> LocalCluster:
    executable, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if executable is None or cli is None:
        raise SystemExit("bench cluster: redis-server and redis-cli must be on PATH")
    ports = free_ports(2 * NODES)
    cluster = LocalCluster(
        executable, cli, workdir, list(zip(ports[::2], ports[1::2], strict=True))
    )
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def main(*, runs: int, rate: float = 5000.0, seconds: float = 10.0) -> int:
    """Alternate one Redis and the cluster `runs` times; print each run and the medians."""
    names = spread_underlyings()

    async def both() -> None:
        results: dict[str, list[dict[str, float]]] = {"redis": [], "cluster": []}
        with tempfile.TemporaryDirectory() as tmp:
            cluster = _start_cluster(Path(tmp) / "cluster")
            try:
                async with temporary_redis() as single:
                    for i in range(runs):
                        for kind, url in (("redis", single), ("cluster", cluster.url)):
                            r = await _receive(url, names, rate, seconds)
                            results[kind].append(r)
                            print(f"cluster bench run {i + 1} {kind}: "
                                  + ", ".join(f"{k}={v:.3g}" for k, v in r.items()), flush=True)  # fmt: skip
            finally:
                cluster.stop()
        med = {
            k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in results.items()
        }
        for kind, m in med.items():
            print(f"median {kind} ({runs} runs, {rate:,.0f} records/s): "
                  + ", ".join(f"{k}={v:.3g}" for k, v in m.items()), flush=True)  # fmt: skip
        ratio = med["cluster"]["p99_ms"] / med["redis"]["p99_ms"]
        print(f"cluster p99 / one Redis p99 = {ratio:.2f} (target <= 1.5)", flush=True)

    asyncio.run(both())
    return 0
