"""Two processing services on one memory broker share the underlyings (in-process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from optionsfeed.aio import cancel_and_wait
from optionsfeed.app import leases_owned
from optionsfeed.broker.base import Broker
from optionsfeed.broker.memory import MemoryBroker, MemorySubscription
from optionsfeed.processing.leases import LeaseSettings
from optionsfeed.processing.metrics import ProcessorMetrics
from optionsfeed.processing.placement import PlacementSettings, spread
from optionsfeed.processing.service import ProcessingService
from optionsfeed.sources.sim.source import SimSource

NAMES = ["T03", "T06", "T52", "T17"]
TTL_S = 1.5


def service(broker: Broker, standbys: int = 1) -> ProcessingService:
    return ProcessingService(
        SimSource(NAMES, rate=200, seed=1),
        broker,
        leases=LeaseSettings.for_ttl(TTL_S),
        placement=PlacementSettings.for_ttl(TTL_S, standbys),
        universe=NAMES,
    )


async def until(cond: Callable[[], bool], limit_s: float, what: str) -> float:
    t0 = time.monotonic()
    async with asyncio.timeout(limit_s):
        # Ownership is the services' state, not an event: poll it.
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert cond(), what
    return time.monotonic() - t0


async def test_two_services_split_and_one_leaving_hands_all_over() -> None:
    """Each owns its share and, with no standby, prices only it; /readyz and /metrics say
    so; after one leaves, the other owns everything within a second."""
    broker = MemoryBroker()
    a, b = service(broker, standbys=0), service(broker, standbys=0)
    share = spread(NAMES, sorted([a.owner, b.owner]))
    tasks = [asyncio.create_task(s.run()) for s in (a, b)]
    try:

        def placed() -> bool:
            return all(sorted(s.leases.owned()) == sorted(share[s.owner]) for s in (a, b))  # type: ignore[union-attr]

        await until(placed, 20, "each owns its share")
        # Alone at first, each priced everything; that lingers a little, then stops.
        await until(lambda: a.process == set(share[a.owner]), 10, "a prices its own only")
        fields = leases_owned(a)
        assert fields["owned"] == sorted(share[a.owner])
        assert fields["processors"] == sorted([a.owner, b.owner])
        assert fields["standby_for"] == []  # no standbys: it prices what it owns
        text = ProcessorMetrics(a).render().decode()
        assert "optionsfeed_processors 2.0" in text
        assert "optionsfeed_records_published_total" in text
        moved = share[a.owner]
        subs = [broker.subscribe(u) for u in moved]
        for sub in subs:
            await sub.__aenter__()
        resets = dict.fromkeys(moved, 0)

        async def count(u: str, sub: MemorySubscription) -> None:
            async for payload in sub:
                resets[u] += b'"reset":true' in payload

        counters = [asyncio.create_task(count(u, s)) for u, s in zip(moved, subs, strict=True)]
        await a.leave()
        took = await until(lambda: sorted(b.leases.owned()) == sorted(NAMES), 5, "b owns all")  # type: ignore[union-attr]
        assert took < 1.0, took
        # b did not simulate them (no standbys): it lists them again, and their one new
        # epoch waits for that listing (not a reset of stale state, then another).
        await until(lambda: all(resets[u] for u in moved), 5, "each moved one published")
        await asyncio.sleep(1.0)
        assert resets == dict.fromkeys(moved, 1)
        for t in counters:
            await cancel_and_wait(t)
        for sub in subs:
            await sub.__aexit__(None, None, None)
    finally:
        for t in tasks:
            await cancel_and_wait(t)
