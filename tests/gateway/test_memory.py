"""Client input must not grow gateway memory without bound: unknown names are not kept.

Every `subscribe` to `chain.X` makes the hub look up X's listing (`Hub.listing`).
A hostile client asks for a million names that do not exist; what the hub keeps
about them must stay bounded. The lookups are driven in-process, straight at
`Hub.listing` over the session's real Redis: through sockets, a million names
take hundreds of subscribe messages of a few thousand names each under the rate
limit, several minutes on a small machine, and test nothing more about memory.
"""

from __future__ import annotations

import asyncio
import gc
import re
from pathlib import Path

import pytest

from optionsfeed.broker.redis import RedisBroker
from optionsfeed.gateway.hub import Hub

NAMES = 1_000_000
BATCH = 100  # concurrent lookups, as from a hundred clients (within the Redis pool)
CHECK_EVERY = 50_000
RSS_LIMIT_MIB = 32


def rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert m is not None
    return int(m[1])


@pytest.mark.timeout(240)
async def test_a_million_unknown_underlyings_leave_memory_flat(redis_url: str) -> None:
    """1,000,000 distinct unknown names looked up: RSS grows by less than 32 MiB.

    Stops at the first check past the limit, so a leak fails in seconds, not minutes.
    """
    async with RedisBroker(redis_url) as broker:
        hub = Hub(broker)
        # Warm up: the connection pool, the code paths, the allocator's arenas.
        for k in range(0, 20_000, BATCH):
            infos = await asyncio.gather(*(hub.listing(f"W{i:07d}") for i in range(k, k + BATCH)))
            assert infos == [None] * BATCH
        gc.collect()
        before = rss_kib()
        for k in range(0, NAMES, BATCH):
            await asyncio.gather(*(hub.listing(f"Z{i:07d}") for i in range(k, k + BATCH)))
            if (k + BATCH) % CHECK_EVERY == 0:
                gc.collect()
                growth_mib = (rss_kib() - before) / 1024
                assert growth_mib < RSS_LIMIT_MIB, (
                    f"after {k + BATCH:,} unknown names RSS grew {growth_mib:.1f} MiB "
                    f"({before} kB before)"
                )
        await hub.aclose()
