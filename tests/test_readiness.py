"""/readyz's answer: a source in trouble, a silent feed, fresh data, market hours."""

from __future__ import annotations

from datetime import datetime

from optionsfeed.app import _noted, assess, readiness
from optionsfeed.broker.memory import MemoryBroker
from optionsfeed.config import Settings
from optionsfeed.model.calendar import NEW_YORK, market_session
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import SourceBatch
from optionsfeed.sources.health import LinkWatch, Verdict
from optionsfeed.sources.sim.market import SimMarket
from optionsfeed.sources.sim.universe import spec_for

START = 1_780_000_000_000_000


async def test_readiness_names_the_source_then_the_silence() -> None:
    """A source's trouble is the reason once it has lasted the grace (here 0: at once);
    data older than fresh_within_s is the reason when the source says nothing; fresh
    data is ready."""
    settings = Settings.load({"fresh_within_s": "5"}, {})
    market = SimMarket([spec_for("SPY")], seed=1, start_us=START)
    proc = Processor()
    async with MemoryBroker() as broker:
        await broker.publish(proc.apply(SourceBatch(listings=market.listings()), START))
        trouble: list[str | None] = ["deribit: disconnected (reset), retrying in 2.0 s"]
        assert (
            await readiness(broker, settings, source_health=lambda: trouble[0], grace_s=0,
                            clock=lambda: START)
            == trouble[0]
        )  # fmt: skip
        trouble[0] = None
        assert (
            await readiness(broker, settings, source_health=lambda: None, clock=lambda: START)
            is None
        )
        later = START + 6_000_000
        reason = await readiness(broker, settings, source_health=lambda: None, clock=lambda: later)
        assert reason == "SPY: newest data is 6.0 s old (limit 5 s)"


async def test_a_brief_disconnect_is_noted_and_a_long_one_fails() -> None:
    """Trouble first seen now, with fresh data: ready, the trouble in the body; the same
    trouble 5 s (fresh_within_s) later: not ready; gone: ready, no note."""
    settings = Settings.load({"fresh_within_s": "5"}, {})
    market = SimMarket([spec_for("SPY")], seed=1, start_us=START)
    async with MemoryBroker() as broker:
        await broker.publish(Processor().apply(SourceBatch(listings=market.listings()), START))
        trouble: list[str | None] = ["massive: disconnected (reset); retrying in 0.3 s"]
        watch = LinkWatch(lambda: trouble[0])
        now = [START]

        async def verdict() -> Verdict:
            return await assess(broker, settings, link=watch, clock=lambda: now[0])

        assert await verdict() == Verdict(True, trouble[0])
        now[0] = START + 4_900_000
        trouble[0] = None
        assert await verdict() == Verdict(True, None)
        trouble[0] = "massive: disconnected (reset); reconnecting"
        now[0] = START + 5_000_000
        assert (await verdict()).ready
        now[0] = START + 10_000_000
        assert await verdict() == Verdict(False, trouble[0])


async def test_a_quiet_us_feed_is_ready_while_the_market_is_closed() -> None:
    """Data an hour old on a Saturday (Massive's NYSE hours): ready, and /readyz's body
    says "market closed"; the same data on a Wednesday at 11:00 is not ready."""
    settings = Settings.load({"fresh_within_s": "10"}, {})
    saturday = int(datetime(2026, 11, 28, 11, tzinfo=NEW_YORK).timestamp()) * 1_000_000
    wednesday = int(datetime(2026, 11, 25, 11, tzinfo=NEW_YORK).timestamp()) * 1_000_000
    hour = 3_600_000_000

    async def verdict_at(now: int) -> Verdict:
        async with MemoryBroker() as broker:
            market = SimMarket([spec_for("SPY")], seed=1, start_us=now - hour)
            batch = SourceBatch(listings=market.listings())
            await broker.publish(Processor().apply(batch, now - hour))
            return await assess(broker, settings, hours=market_session, clock=lambda: now)

    assert await verdict_at(saturday) == Verdict(True, "market closed")
    assert await verdict_at(wednesday) == Verdict(
        False, "SPY: newest data is 3600.0 s old (limit 10 s)"
    )
    note = {"note": "market closed"}
    assert _noted(lambda: {"role": "active"}, note)() == {"role": "active", "note": "market closed"}
    assert _noted(None, {})() == {}
