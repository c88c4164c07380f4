"""One client connection: its channels, its outgoing frames, its limits.

Outgoing messages are queued and written as one frame per flush (a JSON array
when there are several): the first message schedules a flush for the next turn
of the event loop, so an idle connection gets each update at once and a busy one
gets them batched. When the socket stops draining (write buffer above
`Limits.high_water`), updates are no longer written but merged per record and
field (`conflate.MergedUpdates`), so memory stays bounded by the subscribed records;
once the buffer is below `low_water` again the merged updates go out. A client
that stays above the mark for `slow_close_s`, or whose unread bytes pass
`max_unread`, is closed with 4008.

Requests are answered in the order they came, one at a time (a subscribe waits
for the broker; an unsubscribe sent after it must not overtake it); at most
`max_queued_requests` wait, beyond that a request is answered `rate_limited`.

The session reads no clock and owns no timer of its own: `clock`, `wall_us` and
`scheduler` come in, so tests drive it without sockets or sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..broker.base import Snapshot
from ..clock import wall_clock_us
from ..errors import BrokerUnavailable
from ..model.envelope import ChainInfo, decode_envelope
from ..sources.droplog import DropCounter
from . import protocol
from .auth import EVERYTHING, Entitlements
from .channels import Channel, InvalidChannel, parse_channel
from .conflate import MergedUpdates
from .hub import ChannelUpdate, Fanout, Hub, listed

log = logging.getLogger("optionsfeed.gateway")
# Failures caused by one client's input must not flood the log: per kind, the first
# is logged with its traceback, later ones at most every 10 s with a count.
_failures = DropCounter(10.0)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits and timings (docs/protocol.md: `limits` and close codes)."""

    max_channels: int = 500
    max_message_bytes: int = 65536
    heartbeat_ms: int = 10_000
    rate_per_s: float = 50.0  # inbound messages, token bucket
    burst: int = 100
    flood_close_after: int = 200  # rate-limited messages within `flood_window_s` -> 4029
    flood_window_s: float = 10.0
    high_water: int = 256 * 1024  # bytes not yet taken by the socket
    low_water: int = 32 * 1024
    slow_close_s: float = 10.0
    max_unread: int = 32 * 1024 * 1024  # bytes the socket has not taken: 4008 at once
    buffer_limit: int = 10_000  # updates buffered while a snapshot is read
    max_queued_requests: int = 16  # requests waiting for their replies


DEFAULT_LIMITS = Limits()


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What a session needs of an event loop (asyncio's loop is one)."""

    def call_soon(self, callback: Callable[[], object], /) -> object: ...

    def call_later(self, delay: float, callback: Callable[[], object], /) -> Timer: ...


class Member:
    """One channel of one session: where the client stands in its sequence."""

    __slots__ = (
        "buffer",
        "buffering",
        "channel",
        "closed",
        "dropped",
        "epoch",
        "feed",
        "next_due",
        "pending",
        "position",
        "sent",
        "session",
        "throttle_ms",
        "timer",
    )  # fmt: skip

    def __init__(self, session: Session, channel: Channel, throttle_ms: int) -> None:
        self.session = session
        self.channel = channel
        self.throttle_ms = throttle_ms
        self.epoch = ""
        self.position = 0  # the seq this member's state is current as of
        self.sent = 0  # the seq of the last update the client got (its next prev)
        self.buffering = True  # until its snapshot (or resume) is sent
        self.buffer: list[Any] = []
        # (epoch, seq) of the newest update dropped from a full buffer: the base it
        # goes live on must contain it, else it needs a newer one.
        self.dropped: tuple[str, int] | None = None
        self.pending: MergedUpdates | None = None
        self.next_due = 0.0
        self.timer: Timer | None = None
        self.closed = False
        self.feed: Fanout | None = None

    # What the feed calls (hub.Member): each is the session's, for this channel.

    def emit(self, upd: ChannelUpdate) -> None:
        self.session.emit(self, upd)

    def apply_snapshot(self, snap: Snapshot, message: bytes) -> None:
        self.session.apply_snapshot(self, snap, message)

    def fail(self, reason: str) -> None:
        self.session.channel_failed(self, reason)


class Session:
    """The protocol state of one WebSocket connection."""

    def __init__(
        self,
        hub: Hub,
        transport: Transport,
        close: Callable[[int, str], None],
        *,
        limits: Limits = DEFAULT_LIMITS,
        node: str = "gw",
        clock: Callable[[], float] = time.monotonic,
        wall_us: Callable[[], int] = wall_clock_us,
        scheduler: Scheduler | None = None,
        entitlements: Entitlements = EVERYTHING,
    ) -> None:
        """`clock`: seconds for limits and timers; `wall_us`: Unix microseconds for
        `pong` and `heartbeat`; `scheduler`: the running asyncio loop by default."""
        self.hub = hub
        self.entitlements = entitlements
        self.transport = transport
        self._close = close
        self.limits = limits
        self.node = node
        self.clock = clock
        self.wall_us = wall_us
        self.scheduler: Scheduler = scheduler or asyncio.get_running_loop()
        self.id = "c-" + secrets.token_hex(4)
        self.members: dict[str, Member] = {}
        self.out: list[bytes] = []
        self._flush_scheduled = False
        self.last_send = clock()
        self.slow_since: float | None = None
        self.closed = False
        self._tokens = float(limits.burst)
        self._refilled = clock()
        self._flood: list[float] = []
        self._requests: deque[protocol.Request] = deque()
        self._worker: asyncio.Task[None] | None = None
        self.frames_out = 0
        self.bytes_out = 0
        self.conflated = 0  # record updates merged rather than sent (throttle, slow)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        lim = self.limits
        limits = {"max_channels": lim.max_channels, "max_message_bytes": lim.max_message_bytes}
        self.send(protocol.welcome(self.id, self.node, lim.heartbeat_ms, limits))

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._write_out()
            self._close(code, reason)
        self.release()

    def release(self) -> None:
        """Drop every channel (the connection is gone)."""
        self.closed = True
        for m in list(self.members.values()):
            self._drop(m)
        self.members.clear()
        self._requests.clear()
        if self._worker is not None:
            self._worker.cancel()

    async def wait_released(self) -> None:
        """After `release()`: return once the request worker it cancelled has ended."""
        worker = self._worker
        if worker is not None:
            await asyncio.wait([worker])

    # -- inbound ---------------------------------------------------------------------

    def on_binary(self) -> None:
        if self._admit():
            self.send(
                protocol.error("bad_request", "binary frames are not accepted; send JSON text")
            )

    def on_text(self, data: str) -> None:
        if not self._admit():
            return
        try:
            req = protocol.decode_request(data)
        except protocol.ProtocolError as exc:
            self.send(protocol.error(exc.code, exc.message, exc.id))
            return
        if not self._requests and not isinstance(req, protocol.Subscribe):
            self._answer(req)  # nothing ahead of it: at once
            return
        if len(self._requests) >= self.limits.max_queued_requests:
            msg = f"more than {self.limits.max_queued_requests} requests await their replies"
            self.send(protocol.error("rate_limited", msg, req.id))
            return
        self._requests.append(req)
        if self._worker is None:
            self._worker = asyncio.create_task(self._serve(), name=f"session {self.id}")

    def _admit(self) -> bool:
        """The inbound rate limit: a token bucket, then 4029 for a flood."""
        now = self.clock()
        lim = self.limits
        self._tokens = min(lim.burst, self._tokens + (now - self._refilled) * lim.rate_per_s)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._flood = [t for t in self._flood if now - t < lim.flood_window_s]
        self._flood.append(now)
        if len(self._flood) > lim.flood_close_after:
            self.close(4029, "rate limited")
        else:
            self.send(protocol.error("rate_limited", f"more than {lim.rate_per_s:g} messages/s"))
        return False

    def admit_ping(self) -> bool:
        """A WebSocket ping counts against the same rate limit as a message."""
        return self._admit()

    async def _serve(self) -> None:
        """Answer the queued requests in order, each exactly once."""
        try:
            while self._requests and not self.closed:
                req = self._requests[0]
                try:
                    if isinstance(req, protocol.Subscribe):
                        await self._subscribe(req)
                    else:
                        self._answer(req)
                except Exception as exc:  # a bug: still one reply, and the connection lives
                    _report("request", exc)
                    self.send(protocol.error("internal", "the request failed", req.id))
                self._requests.popleft()
        finally:
            self._worker = None

    def _answer(self, req: protocol.Request) -> None:
        """A ping or an unsubscribe (a subscribe awaits the broker: `_subscribe`)."""
        if isinstance(req, protocol.Ping):
            self.send(protocol.pong(req.id, self.wall_us()))
        elif isinstance(req, protocol.Unsubscribe):
            for name in req.channels:
                m = self.members.pop(name, None)
                if m is not None:
                    self._drop(m)
            self.send(protocol.ack(req.id, [protocol.ok(n) for n in req.channels]))

    async def _subscribe(self, req: protocol.Subscribe) -> None:
        results: list[dict[str, Any]] = []
        accepted: dict[str, Channel] = {}
        held = set(self.members)
        for name in req.channels:
            if name in accepted:  # named twice in one request: one subscription
                results.append(protocol.ok(name))
                continue
            try:
                found = await self._check(name, held)
            except Exception as exc:
                _report("subscribe check", exc)
                found = protocol.refused(name, "internal", "could not check this channel")
            if isinstance(found, Channel):
                held.add(name)
                accepted[name] = found
                results.append(protocol.ok(name))
            else:
                results.append(found)
        if self.closed:
            return
        # The new members buffer from before the ack: for a channel already held, no
        # update goes out between the ack and its new base (snapshot or resumed updates).
        joined = [self._join(ch, req.throttle_ms) for ch in accepted.values()]
        self.send(protocol.ack(req.id, results))
        for m, feed in joined:
            try:
                await self._start(m, feed, req.resume.get(m.channel.name))
            except Exception as exc:
                _report("subscribe start", exc)
                self.channel_failed(m, "internal error")

    async def _check(self, name: str, held: set[str]) -> Channel | dict[str, Any]:
        """`name`'s channel when it may be subscribed, else the refused result."""
        try:
            ch = parse_channel(name)
        except InvalidChannel as exc:
            return protocol.refused(name, "invalid_channel", str(exc))
        if not self.entitlements.allows(ch.underlying):
            msg = f"this token may not see {ch.underlying}"
            return protocol.refused(name, "not_entitled", msg)
        if name not in held and len(held) >= self.limits.max_channels:
            msg = f"at most {self.limits.max_channels} channels per connection"
            return protocol.refused(name, "too_many_channels", msg)
        try:
            info: ChainInfo | None = await self.hub.listing(ch.underlying)
        except BrokerUnavailable as exc:
            return protocol.refused(name, "internal", f"broker unavailable: {exc}")
        why = f"no underlying {ch.underlying}" if info is None else listed(ch, info)
        if why is not None:
            return protocol.refused(name, "unknown_symbol", why)
        return ch

    def _join(self, ch: Channel, throttle_ms: int) -> tuple[Member, Fanout]:
        """A new member for `ch`, replacing one held, attached to its feed and buffering."""
        m = Member(self, ch, throttle_ms)
        # Attached before the old member leaves, so the feed (and its broker
        # subscription) lives on rather than being dropped and made anew.
        m.feed = feed = self.hub.attach(m)
        old = self.members.get(ch.name)
        if old is not None:
            self._drop(old)
        self.members[ch.name] = m
        return m, feed

    async def _start(self, m: Member, feed: Fanout, resume: protocol.ResumePoint | None) -> None:
        """Serve `m` its base: the missed updates from `resume`, else a snapshot."""
        await feed.ready.wait()
        if m.closed or not m.buffering:
            return  # the feed's first resync already served it
        # A point past the feed's own position was never published, and seq 0 is before
        # the epoch's first envelope (a reset, never sent as an update): a snapshot.
        if resume is not None and resume.epoch == feed.epoch and 0 < resume.seq <= feed.seq:
            gen = feed.generation
            try:
                missed = await self.hub.broker.history(
                    m.channel.underlying, resume.epoch, resume.seq
                )
            except BrokerUnavailable:
                missed = None
            if m.closed or not m.buffering:
                return
            if missed is not None and gen == feed.generation:
                m.epoch, m.position, m.sent = resume.epoch, resume.seq, resume.seq
                for raw in missed:
                    env = decode_envelope(raw)
                    if env.seq > m.position:
                        records = feed.records_for(env, m.channel)
                        if records:
                            self._write_update(m, env.seq, records)
                        m.position = env.seq
                self._go_live(m)
                return
        feed.want_snapshot(m)

    # -- from the feed ---------------------------------------------------------------

    def apply_snapshot(self, m: Member, snap: Snapshot, message: bytes) -> None:
        """`message`: the channel's `snapshot` message at `snap` (hub.snapshot_message)."""
        if m.closed:
            return
        m.epoch, m.position, m.sent = snap.epoch, snap.seq, snap.seq
        m.pending = None
        self.send(message)
        self._go_live(m)

    def channel_failed(self, m: Member, reason: str) -> None:
        """The channel could not be served: tell the client and drop it (it may retry)."""
        if m.closed:
            return
        self.send(protocol.channel_error(m.channel.name, "internal", reason))
        if self.members.get(m.channel.name) is m:
            del self.members[m.channel.name]
        self._drop(m)

    def _go_live(self, m: Member) -> None:
        """`m` has its base: the updates buffered meanwhile follow, or a newer base."""
        buffered, m.buffer = m.buffer, []
        dropped, m.dropped = m.dropped, None
        if dropped is not None and (dropped[0] != m.epoch or dropped[1] > m.position):
            # The full buffer lost updates that this base does not contain: sending the
            # rest would hide them behind a good-looking prev. A newer base instead.
            self.hub.stats["join_resnapshots"] += 1
            if m.feed is not None:
                m.feed.want_snapshot(m)
            return
        m.buffering = False
        for upd in buffered:
            self.emit(m, upd)

    def emit(self, m: Member, upd: Any) -> None:
        """An update of `m`'s channel (a hub.ChannelUpdate) arrives."""
        if m.buffering:
            if len(m.buffer) >= self.limits.buffer_limit:
                last = m.buffer[-1]
                m.dropped = (last.epoch, last.seq)
                m.buffer.clear()
                self.hub.stats["buffer_overflows"] += 1
            m.buffer.append(upd)
            return
        if upd.epoch != m.epoch or upd.seq <= m.position:
            return
        m.position = upd.seq
        if m.throttle_ms or self.slow_since is not None or m.pending is not None:
            if m.pending is None:
                m.pending = MergedUpdates(m.sent)
            m.pending.add(upd.seq, upd.records)
            self.conflated += len(upd.records)
            if m.throttle_ms and m.timer is None and self.slow_since is None:
                delay = max(0.0, m.next_due - self.clock())
                m.timer = self.scheduler.call_later(delay, lambda: self._throttled(m))
            return
        self.send(upd.message(m.sent))
        m.sent = upd.seq

    def _throttled(self, m: Member) -> None:
        m.timer = None
        if m.closed or self.slow_since is not None:
            return
        self._send_pending(m)
        m.next_due = self.clock() + m.throttle_ms / 1000

    def _send_pending(self, m: Member) -> None:
        p, m.pending = m.pending, None
        if p:
            self.send(p.message(m.channel.name, m.epoch))
            m.sent = p.seq

    def _write_update(self, m: Member, seq: int, records: list[bytes]) -> None:
        self.send(ChannelUpdate(m.channel.name, m.epoch, seq, records).message(m.sent))
        m.sent = seq

    def _drop(self, m: Member) -> None:
        m.closed = True
        if m.timer is not None:
            m.timer.cancel()
            m.timer = None
        self.hub.detach(m)

    # -- outbound --------------------------------------------------------------------

    def send(self, msg: bytes) -> None:
        if self.closed:
            return
        self.out.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            delay = self.hub.flush_delay_s
            if delay:
                self.scheduler.call_later(delay, self.flush)
            else:
                self.scheduler.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.closed:
            self.out.clear()
            return
        self._write_out()
        unread = self.transport.get_write_buffer_size()
        if unread > self.limits.max_unread:
            self.close(4008, f"slow consumer: {unread} bytes unread")
        elif self.slow_since is None and unread > self.limits.high_water:
            self.slow_since = self.last_send

    def _write_out(self) -> None:
        """Everything queued, as one frame."""
        if not self.out or self.transport.is_closing():
            self.out.clear()
            return
        out, self.out = self.out, []
        frame = self.hub.frame(out)
        self.transport.write(frame)
        self.frames_out += 1
        self.bytes_out += len(frame)
        self.last_send = self.clock()

    def tick(self, now: float) -> None:
        """Called a few times a second: drain conflated updates, heartbeat, slow close."""
        if self.closed:
            return
        if self.slow_since is not None:
            if self.transport.get_write_buffer_size() <= self.limits.low_water:
                self.slow_since = None
                for m in self.members.values():
                    if m.pending and not m.throttle_ms:
                        self._send_pending(m)
                    elif m.pending and m.timer is None:
                        self._throttled(m)
            elif now - self.slow_since > self.limits.slow_close_s:
                self.close(4008, "slow consumer")
                return
        if (now - self.last_send) * 1000 >= self.limits.heartbeat_ms:
            self.send(protocol.heartbeat(self.wall_us()))


def _report(what: str, exc: Exception) -> None:
    """Log a failure in serving a request, without letting a client flood the log."""
    n = _failures.add(what, time.monotonic())
    if n is not None:
        more = f" ({n - 1} more since the last report)" if n > 1 else ""
        log.error("%s failed%s", what, more, exc_info=exc)
