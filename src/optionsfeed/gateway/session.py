"""One client connection: its channels, its outgoing frames, its limits.

Outgoing messages are queued and written as one frame per flush (a JSON array
when there are several): the first message schedules a flush for the next turn
of the event loop, so an idle connection gets each update at once and a busy one
gets them batched. When the socket stops draining (write buffer above
`Limits.high_water`), updates are no longer written but merged per record and
field (`conflate.Pending`), so memory stays bounded by the subscribed records;
once the buffer is below `low_water` again the merged updates go out. A client
that stays above the mark for `slow_close_s` is closed with 4008.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..broker.base import Snapshot
from ..clock import wall_clock_us
from ..errors import BrokerUnavailable
from ..model.envelope import decode_envelope
from . import protocol
from .auth import EVERYTHING, Entitlements
from .channels import Channel, InvalidChannel, parse_channel
from .conflate import Pending
from .frames import text_frame
from .hub import ChannelUpdate, Hub, listed


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits and timings (PROTOCOL.md `limits` and close codes)."""

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
    buffer_limit: int = 10_000  # updates buffered while a snapshot is read


DEFAULT_LIMITS = Limits()


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


class Member:
    """One channel of one session: where the client stands in its sequence."""

    __slots__ = (
        "buffer",
        "buffering",
        "channel",
        "closed",
        "epoch",
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
        self.pending: Pending | None = None
        self.next_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False


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
        entitlements: Entitlements = EVERYTHING,
    ) -> None:
        self.hub = hub
        self.entitlements = entitlements
        self.transport = transport
        self._close = close
        self.limits = limits
        self.node = node
        self.clock = clock
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
        self._tasks: set[asyncio.Task[None]] = set()
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
            self.flush()
            self.closed = True
            self._close(code, reason)
        self.release()

    def release(self) -> None:
        """Drop every channel (the connection is gone)."""
        self.closed = True
        for m in list(self.members.values()):
            self._drop(m)
        for t in self._tasks:
            t.cancel()

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
        if isinstance(req, protocol.Ping):
            self.send(protocol.pong(req.id, wall_clock_us()))
        elif isinstance(req, protocol.Unsubscribe):
            for name in req.channels:
                m = self.members.pop(name, None)
                if m is not None:
                    self._drop(m)
            self.send(protocol.ack(req.id, [protocol.ok(n) for n in req.channels]))
        else:
            self._spawn(self._subscribe(req))

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

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _subscribe(self, req: protocol.Subscribe) -> None:
        results: list[dict[str, Any]] = []
        accepted: list[Channel] = []
        held = set(self.members)
        for name in req.channels:
            try:
                ch = parse_channel(name)
            except InvalidChannel as exc:
                results.append(protocol.refused(name, "invalid_channel", str(exc)))
                continue
            if not self.entitlements.allows(ch.underlying):
                msg = f"this token may not see {ch.underlying}"
                results.append(protocol.refused(name, "not_entitled", msg))
                continue
            if name not in held and len(held) >= self.limits.max_channels:
                msg = f"at most {self.limits.max_channels} channels per connection"
                results.append(protocol.refused(name, "too_many_channels", msg))
                continue
            try:
                info = await self.hub.listing(ch.underlying)
            except BrokerUnavailable as exc:
                results.append(protocol.refused(name, "internal", f"broker unavailable: {exc}"))
                continue
            why = f"no underlying {ch.underlying}" if info is None else listed(ch, info)
            if why is not None:
                results.append(protocol.refused(name, "unknown_symbol", why))
                continue
            held.add(name)
            results.append(protocol.ok(name))
            accepted.append(ch)
        if self.closed:
            return
        self.send(protocol.ack(req.id, results))
        for ch in accepted:
            await self._start(ch, req.throttle_ms, req.resume.get(ch.name))

    async def _start(
        self, ch: Channel, throttle_ms: int, resume: protocol.ResumePoint | None
    ) -> None:
        old = self.members.pop(ch.name, None)
        if old is not None:
            self._drop(old)
        m = Member(self, ch, throttle_ms)
        self.members[ch.name] = m
        feed = self.hub.attach(m)
        await feed.ready.wait()
        if m.closed or not m.buffering:
            return  # the feed's first resync already served it
        if resume is not None and resume.epoch == feed.epoch:
            gen = feed.generation
            try:
                missed = await self.hub.broker.history(ch.underlying, resume.epoch, resume.seq)
            except BrokerUnavailable:
                missed = None
            if m.closed or not m.buffering:
                return
            if missed is not None and gen == feed.generation:
                m.epoch, m.position, m.sent = resume.epoch, resume.seq, resume.seq
                for raw in missed:
                    env = decode_envelope(raw)
                    if env.seq > m.position:
                        records = feed.records_for(env, ch)
                        if records:
                            self._write_update(m, env.seq, records)
                        m.position = env.seq
                self._go_live(m)
                return
        feed.want_snapshot(m)

    # -- from the feed ---------------------------------------------------------------

    def apply_snapshot(self, m: Member, snap: Snapshot, records: list[bytes]) -> None:
        if m.closed:
            return
        m.epoch, m.position, m.sent = snap.epoch, snap.seq, snap.seq
        m.pending = None
        self.send(protocol.snapshot(m.channel.name, snap.epoch, snap.seq, records))
        self._go_live(m)

    def channel_failed(self, m: Member, reason: str) -> None:
        """The channel could not be served: tell the client and drop it (it may retry)."""
        if m.closed:
            return
        self.send(protocol.error("internal", f"{m.channel.name}: {reason}"))
        if self.members.get(m.channel.name) is m:
            del self.members[m.channel.name]
        self._drop(m)

    def _go_live(self, m: Member) -> None:
        buffered, m.buffer = m.buffer, []
        m.buffering = False
        for upd in buffered:
            self.emit(m, upd)

    def emit(self, m: Member, upd: Any) -> None:
        """An update of `m`'s channel (a hub.ChannelUpdate) arrives."""
        if m.buffering:
            if len(m.buffer) >= self.limits.buffer_limit:
                m.buffer.clear()  # the snapshot being read will be followed by a resync
                self.hub.stats["buffer_overflows"] += 1
            m.buffer.append(upd)
            return
        if upd.epoch != m.epoch or upd.seq <= m.position:
            return
        m.position = upd.seq
        if m.throttle_ms or self.slow_since is not None or m.pending is not None:
            if m.pending is None:
                m.pending = Pending(m.sent)
            m.pending.add(upd.seq, upd.records)
            self.conflated += len(upd.records)
            if m.throttle_ms and m.timer is None and self.slow_since is None:
                delay = max(0.0, m.next_due - self.clock())
                m.timer = asyncio.get_running_loop().call_later(delay, self._throttled, m)
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
                asyncio.get_running_loop().call_later(delay, self.flush)
            else:
                asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self.out or self.transport.is_closing():
            self.out.clear()
            return
        out, self.out = self.out, []
        payload = out[0] if len(out) == 1 else b"[" + b",".join(out) + b"]"
        frame = text_frame(payload)
        self.transport.write(frame)
        self.frames_out += 1
        self.bytes_out += len(frame)
        self.last_send = self.clock()
        if (
            self.slow_since is None
            and self.transport.get_write_buffer_size() > self.limits.high_water
        ):
            self.slow_since = self.last_send

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
            self.send(protocol.heartbeat(wall_clock_us()))
