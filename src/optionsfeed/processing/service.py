"""The processing service: source -> processor -> broker, surviving broker outages.

When a publish fails (the broker is unreachable, or its cache is not where the
sequence says it should be), the service keeps consuming the source and keeping
state, drops the publications it cannot deliver (they are superseded anyway),
logs once, and probes the broker with capped exponential backoff. When the broker
answers again, every underlying starts a new epoch with its full state, so the
cache is whole and consumers resnapshot. Nothing is lost silently: a consumer
either sees a continuous sequence or a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from ..aio import cancel_and_wait, cancel_requested
from ..broker.base import Broker
from ..clock import wall_clock_us
from ..errors import BrokerUnavailable, SequenceConflict
from ..model.envelope import Publication
from ..sources.base import Source, SourceBatch
from .processor import Processor

log = logging.getLogger("optionsfeed.processing")

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
PROBE_TIMEOUT_S = 1.0
# With no batch for this long the processor runs an empty one, so contracts of a
# silent feed still get the `stale` flag and a lost broker is still probed.
IDLE_S = 1.0


@dataclass(slots=True)
class PublisherStatus:
    """What readiness and metrics need to know about publishing."""

    connected: bool = True
    reason: str = ""
    lost_since: float = 0.0
    outages: int = 0
    published: int = 0
    dropped: int = 0
    last_publish_us: int = 0


class ProcessingService:
    """Runs `source` through a `Processor` into `broker` until cancelled."""

    def __init__(
        self,
        source: Source,
        broker: Broker,
        *,
        stale_after_us: int = 60_000_000,
        clock: Callable[[], int] = wall_clock_us,
        idle_s: float = IDLE_S,
    ) -> None:
        self.source = source
        self.idle_s = idle_s
        self.broker = broker
        self.processor = Processor(stale_after_us=stale_after_us)
        self.clock = clock
        self.status = PublisherStatus()
        self._backoff = BACKOFF_MIN_S
        self._next_probe = 0.0
        self.ready = asyncio.Event()  # set once the first listings are published

    async def run(self) -> None:
        """Consume the source forever; returns only if the source ends."""
        batches = aiter(self.source.batches())
        pending: asyncio.Task[SourceBatch] | None = None
        try:
            while True:
                if pending is None:
                    pending = cast(
                        "asyncio.Task[SourceBatch]", asyncio.ensure_future(anext(batches))
                    )
                done, _ = await asyncio.wait({pending}, timeout=self.idle_s)
                if done:
                    try:
                        batch = pending.result()
                    except StopAsyncIteration:
                        return
                    pending = None
                else:
                    batch = SourceBatch()  # a silent source: time passes all the same
                await self._step(batch)
        finally:
            if pending is not None:
                await cancel_and_wait(pending)
            close = getattr(batches, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def _step(self, batch: SourceBatch) -> None:
        pubs = self.processor.apply(batch, self.clock())
        if self.status.connected:
            if pubs:
                await self._publish(pubs)
        else:
            self.status.dropped += len(pubs)
            await self._probe()
        # A source that is always ready (a fast feed, a replay at max speed) and a
        # broker that answers without blocking would otherwise never yield: HTTP,
        # timers and health checks on this loop would starve while we fall behind.
        await asyncio.sleep(0)
        if cancel_requested():  # a cancel that redis-py turned into an error
            raise asyncio.CancelledError

    async def _publish(self, pubs: Sequence[Publication]) -> None:
        try:
            await self.broker.publish(pubs)
        except (BrokerUnavailable, SequenceConflict) as exc:
            self._lost(exc)
            return
        self.status.published += len(pubs)
        self.status.last_publish_us = self.clock()
        if not self.ready.is_set() and self.processor.chains:
            self.ready.set()

    def _lost(self, exc: Exception) -> None:
        st = self.status
        st.connected = False
        st.reason = f"broker {self.broker.url}: {exc}"
        st.lost_since = time.monotonic()
        st.outages += 1
        self._backoff = BACKOFF_MIN_S
        self._next_probe = time.monotonic() + self._backoff
        log.error("publishing stopped, will start a new epoch when the broker is back: %s", exc)

    async def _probe(self) -> None:
        now = time.monotonic()
        if now < self._next_probe:
            return
        try:
            await asyncio.wait_for(self.broker.ping(), PROBE_TIMEOUT_S)
            resets = self.processor.reset_all(self.clock())
            await self.broker.publish(resets)
        except (BrokerUnavailable, SequenceConflict, TimeoutError) as exc:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
            self._next_probe = time.monotonic() + self._backoff
            self.status.reason = f"broker {self.broker.url}: {exc or type(exc).__name__}"
            return
        st = self.status
        log.warning(
            "publishing resumed after %.1f s with new epochs for %d underlyings (%d publications dropped)",
            now - st.lost_since, len(resets), st.dropped,
        )  # fmt: skip
        st.connected, st.reason = True, ""
        st.published += len(resets)
        st.last_publish_us = self.clock()
