"""/readyz's answer: a source in trouble, a silent feed, fresh data."""

from __future__ import annotations

from optionsfeed.app import readiness
from optionsfeed.broker.memory import MemoryBroker
from optionsfeed.config import Settings
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import SourceBatch
from optionsfeed.sources.sim.market import SimMarket
from optionsfeed.sources.sim.universe import spec_for

START = 1_780_000_000_000_000


async def test_readiness_names_the_source_then_the_silence() -> None:
    """A source that reports trouble is the reason first; data older than
    fresh_within_s is the reason when the source says nothing; fresh data is ready."""
    settings = Settings.load({"fresh_within_s": "5"}, {})
    market = SimMarket([spec_for("SPY")], seed=1, start_us=START)
    proc = Processor()
    async with MemoryBroker() as broker:
        await broker.publish(proc.apply(SourceBatch(listings=market.listings()), START))
        trouble: list[str | None] = ["deribit: disconnected (reset), retrying in 2.0 s"]
        assert (
            await readiness(broker, settings, source_health=lambda: trouble[0], clock=lambda: START)
            == trouble[0]
        )
        trouble[0] = None
        assert (
            await readiness(broker, settings, source_health=lambda: None, clock=lambda: START)
            is None
        )
        later = START + 6_000_000
        reason = await readiness(broker, settings, source_health=lambda: None, clock=lambda: later)
        assert reason == "SPY: newest data is 6.0 s old (limit 5 s)"
