"""Publish throughput and latency of the Redis broker with realistic publications.

Measures the broker alone: the publications (full records ~550 bytes of JSON, delta
records ~250 bytes inside the envelope) are built before the clock starts. Keys use
the prefix `ofbench` and are deleted afterwards, so a shared Redis is left as found.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import msgspec
import numpy as np
import redis.asyncio as aioredis

from optionsfeed.broker.redis import RedisBroker
from optionsfeed.model.envelope import ChainInfo, Publication

PREFIX = "ofbench"
CONTRACTS = 2000  # listed per underlying; each batch touches a rotating slice
EXPIRY = "2025-06-20"


def _symbol(u: str, i: int) -> str:
    return f"{u:<6}250620{'C' if i % 2 else 'P'}{100_000 + i * 500:08d}"


def _full(u: str, i: int, step: int) -> bytes:
    """A full record as the cache keeps it: about 550 bytes of JSON."""
    p = 1.0 + (i % 97) * 0.37 + step * 0.0001
    rec = {
        "s": _symbol(u, i), "u": u, "expiry": EXPIRY, "strike": 100.0 + i * 0.5,
        "type": "call" if i % 2 else "put", "bid": round(p, 4), "ask": round(p + 0.05, 4),
        "bid_size": 12, "ask_size": 30, "last": round(p + 0.02, 4), "last_size": 1,
        "mark": round(p + 0.025, 4), "volume": 1200 + step, "open_interest": 45_210,
        "iv": 0.18342, "delta": 0.51234, "gamma": 0.012345, "theta": -0.04321,
        "vega": 0.21234, "rho": 0.08765, "underlying_price": 512.3456, "rate": 0.0431,
        "dividend_yield": 0.0123, "multiplier": 100, "currency": "USD", "flags": [],
        "quote_ts": 1_750_000_000_000_000 + step, "trade_ts": 1_750_000_000_000_000,
        "ts": 1_750_000_000_000_000 + step, "exchange": "OPRA", "halted": False,
    }  # fmt: skip
    return msgspec.json.encode(rec)


def _delta(u: str, i: int, step: int) -> bytes:
    """A delta record as the envelope carries it: about 250 bytes of JSON."""
    p = 1.0 + (i % 97) * 0.37 + step * 0.0001
    rec = {
        "s": _symbol(u, i), "bid": round(p, 4), "ask": round(p + 0.05, 4), "bid_size": 12,
        "ask_size": 30, "mark": round(p + 0.025, 4), "iv": 0.18342, "delta": 0.51234,
        "gamma": 0.012345, "theta": -0.04321, "vega": 0.21234, "rho": 0.08765,
        "underlying_price": 512.3456, "ts": 1_750_000_000_000_000 + step,
    }  # fmt: skip
    return msgspec.json.encode(rec)


class _Feed:
    """Sequenced publications of a few underlyings, `per_pub` records each."""

    def __init__(self, underlyings: list[str], per_pub: int) -> None:
        self.underlyings = underlyings
        self.per_pub = per_pub
        self.seq = dict.fromkeys(underlyings, 0)
        self.step = 0

    def resets(self) -> list[Publication]:
        out = []
        for u in self.underlyings:
            self.seq[u] = 1
            records = [(_symbol(u, i), _full(u, i, 0)) for i in range(CONTRACTS)]
            info = msgspec.json.encode(ChainInfo({EXPIRY: [s for s, _ in records]}))
            payload = (
                b'{"u":"%s","epoch":"bench","prev":0,"seq":1,"ts":0,"reset":true}' % u.encode()
            )
            out.append(Publication(u, "bench", 0, 1, 0, payload, records, info, reset=True))
        return out

    def batch(self) -> list[Publication]:
        self.step += 1
        out = []
        for u in self.underlyings:
            prev = self.seq[u]
            self.seq[u] = seq = prev + 1
            first = (self.step * self.per_pub) % CONTRACTS
            idx = [(first + k) % CONTRACTS for k in range(self.per_pub)]
            records = [(_symbol(u, i), _full(u, i, self.step)) for i in idx]
            deltas = b",".join(_delta(u, i, self.step) for i in idx)
            payload = b'{"u":"%s","epoch":"bench","prev":%d,"seq":%d,"ts":%d,"options":[%s]}' % (
                u.encode(), prev, seq, self.step, deltas,
            )  # fmt: skip
            out.append(Publication(u, "bench", prev, seq, self.step, payload, records))
        return out


async def bench_redis_publish(
    url: str,
    *,
    records_per_batch: int,
    batches: int,
    records_per_publication: int = 100,
    runs: int = 5,
    paced_rate: float = 5000.0,
) -> dict[str, float]:
    """Measure `RedisBroker.publish` into the Redis at `url`.

    A batch is `records_per_batch` records split into publications of
    `records_per_publication` (one underlying each), as the processor hands them
    over. Throughput: `runs` runs of `batches` batches back to back; the median
    records/s. Latency: `batches` batches paced at `paced_rate` records/s on an
    absolute schedule; p50/p99/max of one publish() call in ms. Takes about
    `batches * records_per_batch / paced_rate` seconds plus the throughput runs.
    """
    n_pubs = max(1, -(-records_per_batch // records_per_publication))
    feed = _Feed([f"BENCH{i}" for i in range(n_pubs)], records_per_publication)
    rates: list[float] = []
    lat_ms: list[float] = []
    sample: list[Publication] = []
    async with RedisBroker(url, prefix=PREFIX) as broker:
        try:
            await broker.publish(feed.resets())
            records = n_pubs * records_per_publication
            for _ in range(runs):
                work = [feed.batch() for _ in range(batches)]
                t0 = time.perf_counter()
                for pubs in work:
                    await broker.publish(pubs)
                rates.append(batches * records / (time.perf_counter() - t0))
            work = [feed.batch() for _ in range(batches)]
            sample = work[0]
            interval = records / paced_rate
            start = time.perf_counter() + interval
            for i, pubs in enumerate(work):
                # Absolute schedule: a slow call does not push the later ones back.
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t0 = time.perf_counter()
                await broker.publish(pubs)
                lat_ms.append((time.perf_counter() - t0) * 1e3)
        finally:
            await _cleanup(url, broker, feed.underlyings)
    q = np.percentile(np.array(lat_ms), [50, 99, 100])
    full = [len(r) for p in sample for _, r in p.records]
    return {
        "records_per_s": statistics.median(rates),
        "records_per_s_min": min(rates),
        "records_per_s_max": max(rates),
        "publications_per_batch": float(n_pubs),
        "records_per_batch": float(records),
        "full_record_bytes": statistics.mean(full),
        "payload_bytes": statistics.mean(len(p.payload) for p in sample),
        "paced_records_per_s": paced_rate,
        "publish_p50_ms": float(q[0]),
        "publish_p99_ms": float(q[1]),
        "publish_max_ms": float(q[2]),
    }


async def _cleanup(url: str, broker: RedisBroker, underlyings: list[str]) -> None:
    async with aioredis.Redis.from_url(url) as r:
        keys = [broker.key(u, k) for u in underlyings for k in ("meta", "chain", "hist")]
        await r.delete(*keys)
        await r.srem(f"{PREFIX}:underlyings", *underlyings)
