"""Client input must not grow gateway memory without bound: unknown names are not kept.

Every `subscribe` to `chain.X` makes the hub look up X's listing (`Hub.listing`).
A hostile client asks for hundreds of thousands of names that do not exist; what
the hub keeps about them must stay bounded. The lookups are driven in-process, straight at
`Hub.listing` over the session's real Redis: through sockets, so many names
take hundreds of subscribe messages of a few thousand names each under the rate
limit, several minutes on a small machine, and test nothing more about memory.

They run on uvloop, the gateway's own event loop (`app.py`), which does them
about half again as fast as asyncio's. Each is a round trip to Redis: 5,000 to
17,000 a second on a loaded 2-core machine, so a million took 1.5 to 3 minutes;
300,000 (300 times the listing cache, past where a leak of the cache fails) fit
in a minute at the slowest.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from optionsfeed.broker.redis import RedisBroker
from optionsfeed.gateway.hub import MAX_LISTINGS, Hub

NAMES = 300_000
# Concurrent lookups, as from a crowd of clients: twice the broker's 64 pooled
# connections, so half of them wait for one (the pool queues them).
WORKERS = 128
WARM_UP = 20_000
CHECK_EVERY = 50_000
RSS_LIMIT_MIB = 32


def rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert m is not None
    return int(m[1])


async def look_up(hub: Hub, names: Iterator[str]) -> None:
    """Look up every name of `names` with WORKERS lookups in flight; each is unknown."""

    async def worker() -> None:
        for name in names:
            assert await hub.listing(name) is None, name

    await asyncio.gather(*(worker() for _ in range(WORKERS)))


async def unknown_names(redis_url: str) -> None:
    async with RedisBroker(redis_url) as broker:
        hub = Hub(broker)
        # Warm up: the connection pool, the code paths, the allocator's arenas.
        await look_up(hub, (f"W{i:07d}" for i in range(WARM_UP)))
        gc.collect()
        before = rss_kib()
        started = time.monotonic()
        growth: list[float] = []
        for k in range(0, NAMES, CHECK_EVERY):
            await look_up(hub, (f"Z{i:07d}" for i in range(k, k + CHECK_EVERY)))
            assert len(hub._listings) <= MAX_LISTINGS
            assert not hub._listing_reads
            gc.collect()
            growth.append((rss_kib() - before) / 1024)
            # Checked at every step: a leak fails at the first check past the limit.
            assert growth[-1] < RSS_LIMIT_MIB, (
                f"after {k + CHECK_EVERY:,} unknown names RSS grew {growth[-1]:.1f} MiB "
                f"({before} kB before; per {CHECK_EVERY:,}: {[f'{g:.1f}' for g in growth]})"
            )
        elapsed = time.monotonic() - started
        await hub.aclose()
    print(
        f"{NAMES:,} unknown names in {elapsed:.1f} s ({NAMES / elapsed:,.0f}/s), "
        f"RSS {before} kB, growth per {CHECK_EVERY:,} (MiB): {[f'{g:.1f}' for g in growth]}"
    )


@pytest.mark.timeout(150)
def test_300_000_unknown_underlyings_leave_memory_flat(redis_url: str) -> None:
    """300,000 distinct unknown names looked up: RSS grows by less than 32 MiB."""
    uvloop.run(unknown_names(redis_url))
