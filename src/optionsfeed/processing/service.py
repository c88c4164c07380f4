"""The processing service: source -> processor -> broker, surviving broker outages.

When a publish fails (the broker is unreachable, or its cache is not where the
sequence says it should be), the service keeps consuming the source and keeping
state, drops the publications it cannot deliver (they are superseded anyway),
logs once, and probes the broker with capped exponential backoff. When the broker
answers again, every underlying starts a new epoch with its full state, so the
cache is whole and consumers resnapshot. Nothing is lost silently: a consumer
either sees a continuous sequence or a new epoch.

With leases (`leases=LeaseSettings()`, as `optionsfeed process` runs), several
processors on one broker share it safely: each processes every underlying its source
gives (a hot standby) but publishes only those whose lease it holds, and the publish
script refuses the others (Fenced). A lease gained starts one new epoch; a lease lost
(lapsed, refused on renewal, fenced) stops publishing that underlying and never starts
one: only the owner resets, so two processors never take turns resetting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from ..aio import cancel_and_wait, cancel_requested
from ..broker.base import Broker
from ..clock import wall_clock_us
from ..errors import BrokerUnavailable, Fenced, SequenceConflict
from ..model.envelope import Publication
from ..sources.base import Source, SourceBatch
from .leases import LeaseSettings, LeaseTable, new_owner_id
from .processor import Processor
from .stages import StageLatency

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
    fenced: int = 0  # publications the broker refused for want of the lease


class ProcessingService:
    """Runs `source` through a `Processor` into `broker` until cancelled."""

    def __init__(
        self,
        source: Source,
        broker: Broker,
        *,
        stale_after_us: int = 60_000_000,
        follow_interval_us: int = 1_000_000,
        clock: Callable[[], int] = wall_clock_us,
        idle_s: float = IDLE_S,
        leases: LeaseSettings | None = None,
        owner: str | None = None,
    ) -> None:
        self.source = source
        self.idle_s = idle_s
        self.broker = broker
        self.processor = Processor(
            stale_after_us=stale_after_us, follow_interval_us=follow_interval_us
        )
        self.clock = clock
        self.status = PublisherStatus()
        self._backoff = BACKOFF_MIN_S
        self._next_probe = 0.0
        self.ready = asyncio.Event()  # set once the first listings are published
        # Without leases the service publishes everything, unfenced (one processor).
        self.leases = LeaseTable(owner or new_owner_id(), leases) if leases is not None else None
        self._gained: set[str] = set()  # leases gained since the last step: reset these
        self.stages = StageLatency()
        # Stage lags compare the wall clock with `ts`: a replay's clock is its recording's.
        self._timed = clock is wall_clock_us

    @property
    def owner(self) -> str:
        """This processor's lease id ("" without leases)."""
        return self.leases.owner if self.leases is not None else ""

    async def run(self) -> None:
        """Consume the source forever; returns only if the source ends."""
        batches = aiter(self.source.batches())
        pending: asyncio.Task[SourceBatch] | None = None
        keeper: asyncio.Task[None] | None = None
        if self.leases is not None:
            keeper = asyncio.create_task(self._keep_leases(self.leases), name="leases")
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
            if keeper is not None:
                await cancel_and_wait(keeper)
            if pending is not None:
                await cancel_and_wait(pending)
            close = getattr(batches, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def _step(self, batch: SourceBatch) -> None:
        taken_us = wall_clock_us()
        now_us = self.clock()
        pubs = self.processor.apply(batch, now_us)
        priced_us = wall_clock_us()
        if self.leases is not None:
            pubs = self._owned_only(self.leases, pubs, now_us)
        if self.status.connected:
            if pubs and await self._publish(pubs) and self._timed:
                ts = (p.ts for p in pubs if not p.reset)
                self.stages.observe(ts, taken_us, priced_us, wall_clock_us())
        else:
            self.status.dropped += len(pubs)
            await self._probe()
        # A source that is always ready (a fast feed, a replay at max speed) and a
        # broker that answers without blocking would otherwise never yield: HTTP,
        # timers and health checks on this loop would starve while we fall behind.
        await asyncio.sleep(0)
        if cancel_requested():  # a cancel that redis-py turned into an error
            raise asyncio.CancelledError

    def _owned_only(
        self, table: LeaseTable, pubs: list[Publication], now_us: int
    ) -> list[Publication]:
        """`pubs` of the underlyings held now, a reset first for each one just gained."""
        now = time.monotonic()
        for u in table.lapsed(now):
            log.warning("lease of %s lapsed (no renewal in time): stopped publishing it", u)
        held = table.held(now)
        if not self.status.connected:
            # The reconnection resets every held underlying anyway.
            self._gained.clear()
            return pubs
        gained = self._gained & held & self.processor.chains.keys()
        # A gained underlying not listed yet gets its reset with its listing.
        self._gained.clear()
        out = [p for p in pubs if p.underlying in held and p.underlying not in gained]
        out += [self.processor.reset(u, now_us) for u in sorted(gained)]
        return out

    async def _keep_leases(self, table: LeaseTable) -> None:
        """Renew the leases held every `renew_s`, try to take the others every `take_s`
        (with jitter); until cancelled. A broker that cannot be reached lets them lapse."""
        st = table.settings
        ttl_ms = int(st.ttl_s * 1000)
        next_renew = 0.0
        failing = False
        while True:
            try:
                if time.monotonic() >= next_renew and (mine := table.owned()):
                    sent = time.monotonic()
                    kept = await self.broker.lease("renew", mine, table.owner, ttl_ms)
                    table.taken(kept, sent)
                    for u in table.lost(set(mine) - kept):
                        log.warning("lease of %s lost (another processor holds it)", u)
                    next_renew = sent + st.renew_s
                held = set(table.owned())
                free = [u for u in sorted(self.processor.chains) if u not in held]
                if free:
                    sent = time.monotonic()
                    got = await self.broker.lease("take", free, table.owner, ttl_ms)
                    for u in table.taken(got, sent):
                        log.warning("lease of %s gained: publishing it with a new epoch", u)
                        self._gained.add(u)
                if failing:
                    log.warning("leases: the broker answers again")
                failing = False
            except BrokerUnavailable as exc:
                if not failing:
                    log.error("leases: cannot renew or take (they lapse meanwhile): %s", exc)
                failing = True
                if cancel_requested():
                    raise asyncio.CancelledError from exc
            await asyncio.sleep(st.take_s * random.uniform(0.8, 1.2))

    async def release_leases(self, timeout_s: float = 1.0) -> list[str]:
        """Give up every lease held (compare-and-delete) so a peer takes over at once;
        the underlyings released. Call after `run` has stopped (nothing publishes then).
        A broker that does not answer within `timeout_s` leaves them to lapse."""
        if self.leases is None:
            return []
        mine = self.leases.owned()
        self.leases.lost(mine)
        if not mine:
            return []
        ttl_ms = int(self.leases.settings.ttl_s * 1000)
        try:
            async with asyncio.timeout(timeout_s):
                done = await self.broker.lease("release", mine, self.leases.owner, ttl_ms)
        except (BrokerUnavailable, TimeoutError) as exc:
            log.warning("leases not released (they lapse within the TTL): %s", exc)
            return []
        log.warning("leases released: %s", ", ".join(sorted(done)) or "none")
        return sorted(done)

    async def _publish(self, pubs: Sequence[Publication]) -> bool:
        """Publish `pubs`; True when the broker applied every one."""
        if not pubs:
            return False
        try:
            await self.broker.publish(pubs, owner=self.owner)
        except Fenced as exc:
            self._fenced(exc)
            self.status.published += len(pubs) - len(exc.underlyings)
            return False
        except (BrokerUnavailable, SequenceConflict) as exc:
            self._lost(exc)
            return False
        self.status.published += len(pubs)
        self.status.last_publish_us = self.clock()
        if not self.ready.is_set() and self.processor.chains:
            self.ready.set()
        return True

    def _fenced(self, exc: Fenced) -> None:
        # Stop, never reset: the holder of the lease is the one writer.
        self.status.fenced += len(exc.underlyings)
        lost = self.leases.lost(exc.underlyings) if self.leases is not None else []
        for u in lost:
            log.warning(
                "lease of %s lost (publish fenced: %s): stopped publishing it", u, exc.detail
            )

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
            if self.leases is not None:
                held = self.leases.held(time.monotonic())
                resets = [p for p in resets if p.underlying in held]
                self._gained.clear()
            try:
                await self.broker.publish(resets, owner=self.owner)
            except Fenced as exc:
                self._fenced(exc)
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
