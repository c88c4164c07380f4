"""The processing service: source -> processor -> broker, surviving broker outages.

When a publish fails (the broker is unreachable, or its cache is not where the
sequence says it should be), the service keeps consuming the source and keeping
state, drops the publications it cannot deliver (they are superseded anyway),
logs once, and probes the broker with capped exponential backoff. When the broker
answers again, every underlying starts a new epoch with its full state, so the
cache is whole and consumers resnapshot. Nothing is lost silently: a consumer
either sees a continuous sequence or a new epoch.

With leases (`leases=LeaseSettings()`, as `optionsfeed process` runs), several
processors on one broker share it safely: each heartbeats into the broker's
membership, and the placement (placement.py: rendezvous hashing over the live
members) names the underlyings it should own and those it stands by for; it prices
those (a hot standby keeps full state) and no others, publishes only those whose lease
it holds, and the publish script refuses the others (Fenced). A lease gained starts
one new epoch; a lease lost (lapsed, refused on renewal, fenced) stops publishing
that underlying and never starts one: only the owner resets, so two processors never
take turns resetting.
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
from .placement import Placement, PlacementSettings
from .processor import Processor
from .stages import StageLatency

log = logging.getLogger("optionsfeed.processing")

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
PROBE_TIMEOUT_S = 1.0
# With no batch for this long the processor runs an empty one, so contracts of a
# silent feed still get the `stale` flag and a lost broker is still probed.
IDLE_S = 1.0
# The longest one read of peers' notices waits (below the broker's 2 s socket timeout).
NOTICE_WAIT_S = 1.0
# Periodic work (greeks that follow the spot, forwards) runs in slices between
# batches, when no batch is ready; under a load that always has one ready, a slice
# still runs after this many batches. One: batches and slices then alternate, so a
# batch waits for at most one slice, and sweeps keep their pace (with one slice every
# 5 batches, following the five simulated chains fell from 5 sweeps a second to 0.8).
PERIODIC_EVERY = 1


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
    records: int = 0  # records (options, underlying, stats) in the publications applied


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
        placement: PlacementSettings | None = None,
        universe: Sequence[str] = (),
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
        self._leaving = False  # set by leave(): publish nothing, take nothing
        self._wake = asyncio.Event()  # a peer's notice: run the lease loop now
        self.members: list[str] = []  # the live processors, as last read
        # The underlyings this processor prices (it owns or stands by for): the
        # placement's plan, over `universe` and whatever the source lists.
        self.universe = tuple(universe)
        self.placement = Placement(self.owner, placement or PlacementSettings())
        self.process: set[str] = set()
        self._selected: set[str] | None = None  # what the source was last told to produce
        self._planned = False  # the placement has made a plan (self.process is one)
        self._relisting: set[str] = set()  # selected anew, the source's listing to come
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
        skipped = 0  # batches taken while periodic work waited
        try:
            while True:
                if pending is None:
                    pending = cast(
                        "asyncio.Task[SourceBatch]", asyncio.ensure_future(anext(batches))
                    )
                if self.processor.periodic_pending(self.clock(), self._only()):
                    # Fresh events first: a batch the source has ready is taken before
                    # the next slice (one turn of the loop lets a ready source hand it over).
                    await asyncio.sleep(0)
                    if not pending.done() or skipped >= PERIODIC_EVERY:
                        skipped = 0
                        await self._periodic_step()
                        continue
                    skipped += 1
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

    def _only(self) -> set[str] | None:
        """The underlyings priced here (None: all)."""
        return self.process if self.leases is not None else None

    def _select(self) -> set[str] | None:
        """The underlyings to price now (None: all), the source told of any change."""
        if self.leases is None:
            return None
        only = self.process
        select = getattr(self.source, "select", None)
        if select is not None and self._planned and only != self._selected:
            # A source that can produce part of its underlyings (the simulator)
            # produces only those priced here; others are filtered before pricing.
            # It lists a newly selected one again, in a later batch: a lease gained
            # of it waits for that listing, so it starts one epoch, not two. (Before
            # any publication, periodic ones included: one published first would
            # reset it at once, and its listing again.)
            self._relisting |= only - (self._selected if self._selected is not None else only)
            select(set(only))
            self._selected = set(only)
        return only

    async def _step(self, batch: SourceBatch) -> None:
        taken_us = wall_clock_us()
        now_us = self.clock()
        self._relisting -= {li.underlying for li in batch.listings}
        only = self._select()
        # The periodic work waits for `_periodic_step`: this batch's quotes are
        # priced and published without it.
        pubs = self.processor.apply(batch, now_us, only, defer=True)
        await self._deliver(pubs, now_us, (taken_us, wall_clock_us()))

    async def _periodic_step(self) -> None:
        """One slice of the processor's periodic work, published like a batch.

        Not in the stage histograms: they time source events, and the event a slice
        follows (the spot's tick) was timed when its own batch was published.
        """
        now_us = self.clock()
        pubs = self.processor.periodic(now_us, self._select())
        await self._deliver(pubs, now_us, None)

    async def _deliver(
        self, pubs: list[Publication], now_us: int, times: tuple[int, int] | None
    ) -> None:
        """Publish `pubs` (those of held leases), or count them dropped while the broker
        is lost; then let the other tasks on the loop run. `times`: (taken, priced),
        wall clock µs, for the stage histograms (None: not observed)."""
        if self.leases is not None:
            pubs = self._owned_only(self.leases, pubs, now_us)
        if self.status.connected:
            if pubs and await self._publish(pubs) and self._timed and times is not None:
                ts = (p.ts for p in pubs if not p.reset)
                self.stages.observe(ts, *times, wall_clock_us())
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
        held = table.held(now) if not self._leaving else set()
        if not self.status.connected:
            # The reconnection resets every held underlying anyway.
            self._gained.clear()
            return pubs
        gained = self._gained & held & self.processor.chains.keys()
        waiting = gained & self._relisting  # reset with the listing to come
        gained -= waiting
        # A gained underlying not listed yet gets its reset with its listing.
        self._gained = waiting
        out = [p for p in pubs if p.underlying in held and p.underlying not in gained | waiting]
        out += [self.processor.reset(u, now_us) for u in sorted(gained)]
        return out

    async def _keep_leases(self, table: LeaseTable) -> None:
        """Every `take_s` (with jitter), or as soon as a peer leaves a notice (a release,
        a leave, a join): heartbeat into the membership, renew the leases held (every
        `renew_s`), and follow the placement's plan: hand over, take, ask which are
        free. Until cancelled; a broker that cannot be reached lets the leases lapse."""
        st = table.settings
        ttl_ms = int(st.ttl_s * 1000)
        next_renew = 0.0
        failing = False
        watcher = asyncio.create_task(self._watch_notices(), name="lease-notices")
        try:
            while not self._leaving:
                try:
                    if time.monotonic() >= next_renew:
                        next_renew = await self._renew(table, ttl_ms) + st.renew_s
                    await self._follow_plan(table, ttl_ms)
                    if failing:
                        log.warning("leases: the broker answers again")
                    failing = False
                except BrokerUnavailable as exc:
                    if not failing:
                        log.error("leases: cannot renew or take (they lapse meanwhile): %s", exc)
                    failing = True
                    if cancel_requested():
                        raise asyncio.CancelledError from exc
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(st.take_s * random.uniform(0.8, 1.2)):
                        await self._wake.wait()
        finally:
            await cancel_and_wait(watcher)

    async def _renew(self, table: LeaseTable, ttl_ms: int) -> float:
        """Renew the leases held; when the renewal was sent."""
        sent = time.monotonic()
        if mine := table.owned():
            kept = await self.broker.lease("renew", mine, table.owner, ttl_ms)
            # One found lapsed while this renewal was in flight is held again, but its
            # publications meanwhile were dropped: it needs a reset like any gain.
            for u in table.taken(kept, sent):
                log.warning("lease of %s renewed after it lapsed: a new epoch", u)
                self._gained.add(u)
            for u in table.lost(set(mine) - kept):
                log.warning("lease of %s lost (another processor holds it)", u)
        return sent

    async def _follow_plan(self, table: LeaseTable, ttl_ms: int) -> None:
        members = await self.broker.members("join", table.owner, ttl_ms)
        place = self.placement
        place.saw_members(members, time.monotonic())
        self.members = place.live
        universe = set(self.universe) | self.processor.chains.keys()
        plan = place.plan(universe, set(table.owned()), time.monotonic())
        if plan.release:
            # Stop publishing them first (the table), then give them up; a publish
            # already in flight is refused by the broker once the lease is gone.
            table.lost(plan.release)
            done = await self.broker.lease("release", plan.release, table.owner, ttl_ms)
            note = "released " + ",".join(sorted(done))
            await self.broker.members("notify", table.owner, ttl_ms, note)
            log.warning("leases handed over to their preferred processor: %s", note)
        if plan.take and not self._leaving:
            sent = time.monotonic()
            got = await self.broker.lease("take", plan.take, table.owner, ttl_ms)
            for u in table.taken(got, sent):
                log.warning("lease of %s gained: publishing it with a new epoch", u)
                self._gained.add(u)
        if plan.ask_free:
            free = await self.broker.lease("free", plan.ask_free, table.owner, ttl_ms)
            place.saw_free(plan.ask_free, free, time.monotonic())
        self.process = set(plan.process) | set(table.owned())
        self._planned = True

    async def _watch_notices(self) -> None:
        """Wake the lease loop whenever a peer leaves a notice; until cancelled.

        A blocking read of the notices stream rather than a faster poll of every
        lease: a released lease is taken one round trip after the notice, and an idle
        processor costs the broker one waiting read, whatever the underlyings.
        """
        after = "0"
        wait_ms = int(NOTICE_WAIT_S * 1000)
        while True:
            try:
                after, n = await self.broker.notices(after, wait_ms)
            except BrokerUnavailable:
                if cancel_requested():
                    raise asyncio.CancelledError from None
                await asyncio.sleep(NOTICE_WAIT_S)  # the lease loop logs the outage
                continue
            if n:
                self._wake.set()

    async def leave(self, timeout_s: float = 1.0) -> list[str]:
        """Stop publishing now, release every lease held (compare-and-delete) and leave
        the membership, so that a peer takes over at once (the leave is its notice);
        the underlyings released. Safe while `run` still runs: whatever it still sends
        is refused by the broker (no lease), and it takes nothing more. A broker that
        does not answer within `timeout_s` leaves the leases to lapse."""
        if self.leases is None:
            return []
        self._leaving = True
        self._wake.set()
        mine = self.leases.owned()
        self.leases.lost(mine)
        ttl_ms = int(self.leases.settings.ttl_s * 1000)
        done: set[str] = set()
        try:
            async with asyncio.timeout(timeout_s):
                if mine:
                    done = await self.broker.lease("release", mine, self.leases.owner, ttl_ms)
                await self.broker.members("leave", self.leases.owner, ttl_ms)
        except (BrokerUnavailable, TimeoutError) as exc:
            log.warning("leases not released (they lapse within the TTL): %s", exc)
            return sorted(done)
        if mine:
            log.warning("leases released: %s", ", ".join(sorted(done)) or "none")
        return sorted(done)

    async def release_leases(self, timeout_s: float = 1.0) -> list[str]:
        """`leave`, once more after `run` has stopped: releases any lease a take in
        flight gained after the first `leave`."""
        return await self.leave(timeout_s)

    async def _publish(self, pubs: Sequence[Publication]) -> bool:
        """Publish `pubs`; True when the broker applied every one."""
        if not pubs:
            return False
        try:
            await self.broker.publish(pubs, owner=self.owner)
        except Fenced as exc:
            self._fenced(exc)
            self.status.published += len(pubs) - len(exc.underlyings)
            refused = set(exc.underlyings)
            self.status.records += sum(len(p.records) for p in pubs if p.underlying not in refused)
            return False
        except (BrokerUnavailable, SequenceConflict) as exc:
            self._lost(exc)
            return False
        self.status.published += len(pubs)
        self.status.records += sum(len(p.records) for p in pubs)
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
