"""Fan-out inside one gateway process: one broker subscription per underlying.

A `Fanout` holds the subscription of one underlying for as long as any client
channel of it is open here (reference counted by its members), follows the
envelopes' epoch and seq, heals a lost envelope from the broker's history (or,
when it is gone, sends every member a fresh snapshot), and routes each envelope
to the channels that want part of it. Each channel's update is encoded once; a
client only adds its own `prev`.

Snapshots are consistent: a member is attached (and buffers what the feed routes)
before the cache is read; the snapshot's seq then tells which buffered updates it
already contains. Members waiting for a snapshot are served by one cache read per
round, so a crowd joining at once costs a few reads, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Protocol

import msgspec

from ..aio import cancel_and_wait, cancel_requested
from ..broker.base import Broker, Snapshot
from ..errors import BrokerUnavailable
from ..model.envelope import STATS_FIELD, UNDERLYING_FIELD, ChainInfo, Envelope, decode_envelope
from . import protocol
from .channels import Channel, Kind
from .frames import text_frame
from .pacing import DEFAULT_PACING, Pacer, PacingSettings


class Member(Protocol):
    """What a feed needs of one client channel (session.Member is one).

    Declared here, not imported, so the hub depends on no module above it.
    """

    @property
    def channel(self) -> Channel: ...

    @property
    def buffering(self) -> bool: ...

    def emit(self, upd: ChannelUpdate) -> None:
        """An update of the channel, routed from the feed."""

    def apply_snapshot(self, snap: Snapshot, message: bytes) -> None:
        """A snapshot to serve as its new base: `snap` and its `snapshot` message for
        this channel, encoded once for every member of the channel that takes it."""

    def fail(self, reason: str) -> None:
        """The channel cannot be served: end it."""


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class LatencyMetrics(Protocol):
    """The histograms the hub observes (metrics.GatewayMetrics has them)."""

    @property
    def end_to_end(self) -> Observer: ...

    @property
    def broker_lag(self) -> Observer: ...


log = logging.getLogger("optionsfeed.gateway")

LISTING_TTL_S = 5.0
# Names nobody lists are remembered briefly, and listings at most MAX_LISTINGS at a
# time (least recently used out): clients choose the names, so they must not
# choose how much this process remembers.
UNKNOWN_TTL_S = 1.0
MAX_LISTINGS = 1024
MAX_SHARED_FRAMES = 4096
# Joiners served a snapshot per turn of the event loop. A nearest-expiry snapshot of
# SPY is about 100 KB: a slice is a few milliseconds of socket writes, after which the
# loop runs the live members' flushes and the broker's envelopes before the next slice,
# so a crowd of thousands joining does not stall everyone else for the whole crowd.
JOIN_SLICE = 64
RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0
_NULL = b"null"


class _Key(msgspec.Struct):
    symbol: str


_decode_key = msgspec.json.Decoder(_Key).decode


class ChannelUpdate:
    """One envelope's part for one channel; its message is built once per distinct prev."""

    __slots__ = ("_by_prev", "_head", "_tail", "channel", "epoch", "records", "seq")

    def __init__(self, channel: str, epoch: str, seq: int, records: list[bytes]) -> None:
        self.channel = channel
        self.epoch = epoch
        self.seq = seq
        self.records = records
        self._head: bytes | None = None
        self._tail: bytes | None = None
        self._by_prev: dict[int, bytes] = {}

    def message(self, prev: int) -> bytes:
        msg = self._by_prev.get(prev)
        if msg is None:
            if self._head is None or self._tail is None:
                self._head = protocol.update_head(self.channel, self.epoch)
                self._tail = protocol.update_tail(self.seq, self.records)
            msg = self._head + str(prev).encode() + self._tail
            self._by_prev[prev] = msg
        return msg


def snapshot_message(channel: Channel, snap: Snapshot) -> bytes:
    """The `snapshot` message of `channel` at `snap` (shared by its members)."""
    return protocol.snapshot(channel.name, snap.epoch, snap.seq, channel_records(channel, snap))


def channel_records(channel: Channel, snap: Snapshot) -> list[bytes]:
    """The full records a snapshot of `channel` carries."""
    if channel.kind is Kind.CHAIN:
        return snap.option_records(channel.expiry)
    field = {Kind.OPTION: channel.symbol, Kind.UNDERLYING: UNDERLYING_FIELD}.get(
        channel.kind, STATS_FIELD
    )
    rec = snap.records.get(field or "")
    return [] if rec is None else [rec]


def listed(channel: Channel, info: ChainInfo) -> str | None:
    """None when `channel` exists in the listing `info`, else why not."""
    expiry = channel.expiry
    if channel.kind is Kind.CHAIN and expiry is not None and expiry not in info.expiries:
        return f"{channel.underlying} has no expiry {expiry}"
    if channel.kind is Kind.OPTION and not any(
        channel.symbol in syms for syms in info.expiries.values()
    ):
        return f"no option {channel.symbol}"
    return None


class Fanout:
    """The broker subscription of one underlying and the members it feeds."""

    def __init__(self, hub: Hub, underlying: str) -> None:
        self.hub = hub
        self.underlying = underlying
        self.members: dict[str, set[Member]] = {}
        self.channels: dict[str, Channel] = {}
        self.epoch = ""
        self.seq = 0
        self.generation = 0  # grows at every resync: older snapshot reads are void
        self.ready = asyncio.Event()
        self._expiry_of: dict[str, str] = {}
        self._waiting: list[Member] = []
        self._round: asyncio.Task[None] | None = None
        self.task = asyncio.create_task(self._run(), name=f"feed {underlying}")

    # -- members ---------------------------------------------------------------------

    def add(self, m: Member) -> None:
        self.members.setdefault(m.channel.name, set()).add(m)
        self.channels[m.channel.name] = m.channel

    def remove(self, m: Member) -> bool:
        """Detach `m`; True when no member is left."""
        ms = self.members.get(m.channel.name)
        if ms is not None:
            ms.discard(m)
            if not ms:
                del self.members[m.channel.name]
                del self.channels[m.channel.name]
        return not self.members

    def want_snapshot(self, m: Member) -> None:
        """Serve `m` a snapshot from a cache read issued after this call."""
        self._waiting.append(m)
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._snapshot_round())

    async def _snapshot_round(self) -> None:
        while self._waiting:
            waiting, self._waiting = self._waiting, []
            gen = self.generation
            try:
                snap = await self.hub.broker.snapshot(self.underlying, self._fields(waiting))
            except BrokerUnavailable as exc:
                for m in waiting:
                    m.fail(f"broker unavailable: {exc}")
                continue
            if gen != self.generation:
                self._still_waiting(waiting)
                continue
            if snap is not None and snap.epoch != self.epoch:
                # A new epoch reached the cache before its envelope reached us: the
                # fields were chosen from the old listing. Resync everyone instead.
                await self._resync()
                continue
            # A crowd joining one channel shares one read and one encoded message, and
            # is served JOIN_SLICE members per turn of the loop. Those still waiting
            # buffer what the feed routes meanwhile; the snapshot's seq sorts it out.
            messages: dict[str, bytes] = {}
            for i, m in enumerate(waiting, 1):
                if snap is None:
                    m.fail(f"no data for {self.underlying}")
                    continue
                name = m.channel.name
                if name not in messages:
                    messages[name] = snapshot_message(m.channel, snap)
                m.apply_snapshot(snap, messages[name])
                if i % JOIN_SLICE == 0 and i < len(waiting):
                    await asyncio.sleep(0)  # a turn for the flushes and the live feed
                    if gen != self.generation:
                        self._still_waiting(waiting[i:])
                        break

    def _still_waiting(self, members: list[Member]) -> None:
        """After a resync: `members` it left without a base go to the next round.

        A resync sends every member a newer snapshot, but one made at a new
        subscription leaves those waiting for their first to the snapshot rounds.
        """
        queued = set(self._waiting)
        self._waiting.extend(m for m in members if m.buffering and m not in queued)

    def _fields(self, members: list[Member]) -> list[str] | None:
        """The cache fields `members`' snapshots need (None: the whole chain).

        One expiry of SPY is a few hundred of its ~6,500 records: reading only
        those keeps a crowd of joins from moving megabytes each out of Redis.
        """
        info = self.hub.infos.get(self.underlying)
        fields: set[str] = set()
        for m in members:
            ch = m.channel
            if ch.kind is Kind.CHAIN:
                if ch.expiry is None or info is None:
                    return None
                fields.update(info.expiries.get(ch.expiry, ()))
            elif ch.kind is Kind.OPTION:
                fields.add(ch.symbol or "")
            else:
                fields.add(UNDERLYING_FIELD if ch.kind is Kind.UNDERLYING else STATS_FIELD)
        return sorted(fields)

    # -- the envelope stream -----------------------------------------------------------

    async def _run(self) -> None:
        backoff = RETRY_MIN_S
        while True:
            try:
                async with self.hub.broker.subscribe(self.underlying) as sub:
                    # Members already waiting serve themselves (snapshot or resume) once
                    # ready is set; later resyncs reach every member.
                    await self._resync(waiting_too=False)
                    self.ready.set()
                    backoff = RETRY_MIN_S
                    async for raw in sub:
                        await self._on_envelope(raw)
            except BrokerUnavailable as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                log.warning("feed %s: %s; retrying", self.underlying, exc)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, RETRY_MAX_S)

    async def _on_envelope(self, raw: bytes) -> None:
        try:
            env = decode_envelope(raw)
        except msgspec.DecodeError as exc:
            log.error("feed %s: undecodable envelope dropped (%s); resyncing", self.underlying, exc)
            await self._resync()
            return
        metrics = self.hub.metrics
        if metrics is not None:
            metrics.broker_lag.observe(max(time.time() - env.ts / 1e6, 0.0))
        if env.epoch != self.epoch or env.reset:
            held = env.epoch == self.epoch and env.seq <= self.seq
            if not held and not await self._stale(env):
                await self._resync()
            return
        if env.seq <= self.seq:
            return  # already in the state we hold (a snapshot read after it)
        if env.prev != self.seq:
            await self._heal()
            return
        self._route(env)

    async def _stale(self, env: Envelope) -> bool:
        """True (and counted) for an envelope of an epoch the cache does not show while
        it still shows the feed's own: a late one (a frozen primary that woke up and ran
        a publish that had timed out), dropped rather than resnapshotting everyone."""
        if not self.epoch or env.epoch == self.epoch:
            return False
        try:
            meta = await self.hub.broker.meta(self.underlying)
        except BrokerUnavailable:
            return False  # the resync finds out
        if meta is None or meta.epoch != self.epoch:
            return False
        self.hub.stats["stale_envelopes"] += 1
        log.warning("feed %s: stale envelope %s/%d dropped (cache at %s/%d)",
                    self.underlying, env.epoch, env.seq, meta.epoch, meta.seq)  # fmt: skip
        return True

    async def _heal(self) -> None:
        """Envelopes were lost between us and the broker: replay them from its history."""
        self.hub.stats["gaps_healed"] += 1
        try:
            missed = await self.hub.broker.history(self.underlying, self.epoch, self.seq)
        except BrokerUnavailable:
            missed = None
        if missed is None:
            await self._resync()
            return
        for raw in missed:
            env = decode_envelope(raw)
            if env.seq > self.seq:
                self._route(env)

    async def _resync(self, *, waiting_too: bool = True) -> None:
        """Take the cache as a whole: every member gets a fresh snapshot.

        With `waiting_too` False, members still waiting for their first snapshot
        are left to get it themselves.
        """
        self.generation += 1
        self.hub.stats["resyncs"] += 1
        try:
            snap = await self.hub.broker.snapshot(self.underlying)
        except BrokerUnavailable as exc:
            log.warning("feed %s: resync failed: %s", self.underlying, exc)
            self.epoch, self.seq = "", 0  # the next envelope resyncs again
            return
        if snap is None:
            self.epoch, self.seq = "", 0
            return
        if snap.epoch == self.epoch and snap.seq < self.seq:
            # The cache is behind what this feed routed (a write lost with a failed
            # primary): its snapshot would take clients' seq back within the epoch.
            # The processor answers a lost write with a new epoch, which resyncs.
            log.warning("feed %s: cache at %s/%d is behind the feed (%d): resync skipped",
                        self.underlying, snap.epoch, snap.seq, self.seq)  # fmt: skip
            return
        self.epoch, self.seq = snap.epoch, snap.seq
        self._expiry_of = {s: e for e, syms in snap.info.expiries.items() for s in syms}
        self.hub.infos[self.underlying] = snap.info
        for name, ms in list(self.members.items()):
            message = snapshot_message(self.channels[name], snap)
            for m in list(ms):
                if waiting_too or not m.buffering:
                    m.apply_snapshot(snap, message)

    def _route(self, env: Envelope) -> None:
        self.hub.new_round()
        self.seq = env.seq
        for ch, records in self._parts(env, list(self.channels.values())):
            upd = ChannelUpdate(ch.name, env.epoch, env.seq, records)
            for m in self.members[ch.name]:
                m.emit(upd)
        if self.hub.metrics is not None and self.members:
            # Queued behind the flushes the emits scheduled: runs once they are written.
            asyncio.get_running_loop().call_soon(self.hub.observe_end_to_end, env.ts)

    def records_for(self, env: Envelope, ch: Channel) -> list[bytes]:
        """The part of `env` that `ch` carries (for a replay to one member)."""
        return next((records for _, records in self._parts(env, [ch])), [])

    def _parts(
        self, env: Envelope, channels: list[Channel]
    ) -> Iterator[tuple[Channel, list[bytes]]]:
        """(channel, its records) for each of `channels` that `env` changes."""
        by_expiry: dict[str, list[bytes]] | None = None
        by_symbol: dict[str, bytes] | None = None
        options: list[bytes] = [bytes(r) for r in env.options]
        for ch in channels:
            records: list[bytes]
            if ch.kind is Kind.CHAIN:
                if ch.expiry is None:
                    records = options
                else:
                    if by_expiry is None:
                        by_expiry = self._by_expiry(options)
                    records = by_expiry.get(ch.expiry, [])
            elif ch.kind is Kind.OPTION:
                if by_symbol is None:
                    by_symbol = {_decode_key(r).symbol: r for r in options}
                one = by_symbol.get(ch.symbol or "")
                records = [] if one is None else [one]
            else:
                raw = env.underlying if ch.kind is Kind.UNDERLYING else env.stats
                records = [] if bytes(raw) == _NULL else [bytes(raw)]
            if records:
                yield ch, records

    def _by_expiry(self, options: list[bytes]) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        expiry_of = self._expiry_of
        for r in options:
            exp = expiry_of.get(_decode_key(r).symbol)
            if exp is not None:
                out.setdefault(exp, []).append(r)
        return out


class Hub:
    """The feeds of one gateway process, created and dropped with their members."""

    def __init__(
        self,
        broker: Broker,
        *,
        clock: Callable[[], float] | None = None,
        pacing: PacingSettings = DEFAULT_PACING,
    ) -> None:
        self.broker = broker
        self.feeds: dict[str, Fanout] = {}
        self.infos: dict[str, ChainInfo] = {}
        self.stats: dict[str, int] = {
            "gaps_healed": 0, "resyncs": 0, "buffer_overflows": 0, "join_resnapshots": 0,
            "stale_envelopes": 0,
        }  # fmt: skip
        self.metrics: LatencyMetrics | None = None
        self.clock = clock or time.monotonic
        # underlying -> (when it expires, its listing or None); see MAX_LISTINGS.
        self._listings: OrderedDict[str, tuple[float, ChainInfo | None]] = OrderedDict()
        self._listing_reads: dict[str, asyncio.Future[ChainInfo | None]] = {}
        self.pacer = Pacer(pacing)
        # Frames by the messages they carry, since the last envelope was routed: clients
        # in step on the same channels share one frame object (see frame()).
        self._frames: dict[tuple[bytes, ...], bytes] = {}
        self.flush_delay_s = 0.0  # 0: flush on the next loop turn; else batch (see pace)
        self._closing: set[asyncio.Task[bool]] = set()

    def attach(self, m: Member) -> Fanout:
        u = m.channel.underlying
        feed = self.feeds.get(u)
        if feed is None:
            feed = self.feeds[u] = Fanout(self, u)
        feed.add(m)
        return feed

    def detach(self, m: Member) -> None:
        feed = self.feeds.get(m.channel.underlying)
        if feed is not None and feed.remove(m):
            # The last member left: drop the subscription (reference counted).
            del self.feeds[m.channel.underlying]
            self.infos.pop(m.channel.underlying, None)
            t = asyncio.create_task(cancel_and_wait(feed.task))
            self._closing.add(t)
            t.add_done_callback(self._closing.discard)

    def frame(self, messages: list[bytes]) -> bytes:
        """The WebSocket frame carrying `messages` (one, or a JSON array of several).

        Built once per distinct list of message objects since the last routed
        envelope: the update messages of a channel are shared bytes objects (see
        ChannelUpdate), so the clients in step on a channel get one frame object,
        not a copy each. At most MAX_SHARED_FRAMES are kept.
        """
        key = tuple(messages)
        frame = self._frames.get(key)
        if frame is None:
            payload = messages[0] if len(messages) == 1 else b"[" + b",".join(messages) + b"]"
            frame = text_frame(payload)
            if len(self._frames) >= MAX_SHARED_FRAMES:
                self._frames.clear()
            self._frames[key] = frame
        return frame

    def new_round(self) -> None:
        """A new envelope is routed: frames of older messages will not be asked for again."""
        self._frames.clear()

    def pace(self, cpu_s: float, wall_s: float, lag_s: float) -> None:
        """Choose the flush interval from the load since the last call (see pacing.py)."""
        self.flush_delay_s = self.pacer.observe(cpu_s, wall_s, lag_s)

    def observe_end_to_end(self, ts_us: int) -> None:
        if self.metrics is not None:
            self.metrics.end_to_end.observe(max(time.time() - ts_us / 1e6, 0.0))

    async def listing(self, underlying: str) -> ChainInfo | None:
        """The listing of `underlying` (None: no such underlying); BrokerUnavailable.

        A listing changes only with a new epoch, which a live feed sees and re-reads
        on its resync, so the feed's copy is used while it runs; without a feed the
        broker's is read and kept for LISTING_TTL_S. (A listing is large: SPY's
        holds some 6,500 symbols, so a crowd of subscribes must not each fetch it.)
        """
        feed = self.feeds.get(underlying)
        info = self.infos.get(underlying)
        if info is not None and feed is not None and feed.ready.is_set():
            return info
        cached = self._listings.get(underlying)
        if cached is not None and self.clock() < cached[0]:
            self._listings.move_to_end(underlying)
            return cached[1]
        # Single flight: a crowd subscribing at once shares one read and one decode.
        task = self._listing_reads.get(underlying)
        if task is None:
            task = asyncio.ensure_future(self._read_listing(underlying))
            self._listing_reads[underlying] = task
            task.add_done_callback(lambda _: self._listing_reads.pop(underlying, None))
        return await asyncio.shield(task)

    async def _read_listing(self, underlying: str) -> ChainInfo | None:
        meta = await self.broker.meta(underlying)
        info = None if meta is None else meta.info
        ttl = UNKNOWN_TTL_S if info is None else LISTING_TTL_S
        self._listings[underlying] = (self.clock() + ttl, info)
        self._listings.move_to_end(underlying)
        while len(self._listings) > MAX_LISTINGS:
            self._listings.popitem(last=False)
        return info

    async def aclose(self) -> None:
        for feed in list(self.feeds.values()):
            await cancel_and_wait(feed.task)
        self.feeds.clear()
        for t in list(self._closing):
            await t
