"""The live side of the Redis broker: one pub/sub link per subscribed underlying.

On one Redis the link SUBSCRIBEs `{prefix}:{U}:live`; on a Redis Cluster it
SSUBSCRIBEs on the primary serving the channel's slot (the script SPUBLISHes there).
Client libraries re-route a shard subscription only when their slot map happens to
be refreshed, and a frozen primary leaves a link open and silent for good, so this
module decides itself when a link is dead and where to open the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from redis.asyncio.client import PubSub
from redis.exceptions import ClusterDownError, MovedError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..aio import cancel_requested
from ..errors import BrokerUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class LinkOwner(Protocol):
    """What a subscription needs of its broker (redis.RedisBroker is one); declared
    here so that this module does not import the broker that creates it."""

    @property
    def url(self) -> str: ...

    @property
    def sharded(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def subscriber_idle_s(self) -> float: ...

    def key(self, underlying: str, kind: str) -> str: ...

    async def subscriber_for(self, underlying: str) -> aioredis.Redis: ...

    def subscriber_at(self, host: str, port: int) -> aioredis.Redis: ...

    async def probe(self, underlying: str, payload: bytes) -> tuple[int | None, int]: ...

    async def newest(self, underlying: str) -> bytes | None: ...


log = logging.getLogger("optionsfeed.broker")

RESUBSCRIBE_MIN_S = 0.05
RESUBSCRIBE_MAX_S = 2.0
MAX_REDIRECTS = 3
# Probes are published on the live channel itself, so every subscriber of it sees
# them: a payload an envelope (a JSON object) can never start with.
PROBE_PREFIX = b"~probe "

_UNAVAILABLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


class Drop(Exception):
    """The link is no longer trusted; the message says why (logged, kept in `last_drop`)."""


_SUBSCRIBE_FAILED: tuple[type[BaseException], ...] = (BrokerUnavailable, Drop, *_UNAVAILABLE)


class RedisSubscription:
    """Envelopes from `{prefix}:{U}:live`, over a link that is replaced when it dies.

    Entering subscribes (SUBSCRIBE, or SSUBSCRIBE on the slot's primary of a cluster)
    and waits for Redis's confirmation, so every envelope published afterwards is
    delivered (BrokerUnavailable when Redis cannot be reached then).

    Bounded: one message is read from the socket per iteration step, so nothing queues
    here beyond redis-py's read buffer; a consumer that lags lets Redis's
    `client-output-buffer-limit pubsub` disconnect it, which is a drop like any other.

    Drops: the link is given up when it fails (connection error, MOVED), when Redis
    unsubscribes it (a failover or slot migration sends `sunsubscribe`), when a probe
    is not echoed, or when `meta.seq` moved while nothing arrived. A probe is
    published on the channel (through the command client, which routes it to the
    slot's current primary) after `subscriber_idle_s` without traffic; it must come
    back within `2 * subscriber_idle_s` and reach at least one subscriber. The
    iterator does not end at a drop: it waits (capped, jittered exponential backoff
    RESUBSCRIBE_MIN_S..RESUBSCRIBE_MAX_S), finds the slot's primary again (a command
    through the cluster client refreshes its slot map; MOVED replies are followed) and
    subscribes there. Envelopes published meanwhile are lost; to make that visible at
    once, the newest envelope of the history stream is delivered right after a
    resubscribe (it may repeat one already delivered: a consumer ignores an envelope
    with `seq <=` its own). The consumer then sees the loss in prev/seq (or a new
    epoch) and heals from `history` or a snapshot.

    `subscriptions` counts successful subscribes (1 after entry), `drops` the links
    given up (`last_drop` says why); `wait()` awaits them. Iteration ends when the
    subscription is exited; it raises BrokerUnavailable once the broker is closed.
    """

    def __init__(self, broker: LinkOwner, underlying: str) -> None:
        self._broker = broker
        self.underlying = underlying
        self.channel = broker.key(underlying, "live")
        self._channel_b = self.channel.encode()
        self._sharded = broker.sharded
        self._message = "smessage" if self._sharded else "message"
        self._unsubscribed = "sunsubscribe" if self._sharded else "unsubscribe"
        self._link: PubSub | None = None
        self.node = ""  # host:port of the link, "" when there is none
        self._exited = False
        self.subscriptions = 0
        self.drops = 0
        self.last_drop = ""
        self._changed = asyncio.Condition()
        self._token = PROBE_PREFIX + secrets.token_hex(6).encode() + b" "
        self._probe_n = itertools.count(1)
        self._pending: tuple[bytes, int | None, float] | None = None  # payload, seq, sent
        self._baseline: int | None = None  # meta.seq at the last echo with nothing between
        self._quiet_since = 0.0

    async def __aenter__(self) -> Self:
        try:
            await self._subscribe()
        except _SUBSCRIBE_FAILED as exc:
            raise BrokerUnavailable(
                f"redis {self._broker.url}: subscribe {self.channel}: {exc}"
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exited = True
        await self._close()

    async def wait(self, *, subscriptions: int = 0, drops: int = 0) -> None:
        """Return once both counters reach the given values (subscriptions=2: resubscribed)."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.subscriptions >= subscriptions and self.drops >= drops
            )

    # -- the link ------------------------------------------------------------------------

    async def _subscribe(self) -> None:
        broker = self._broker
        if broker.closed:
            raise BrokerUnavailable("broker closed")
        client = await broker.subscriber_for(self.underlying)
        for _ in range(MAX_REDIRECTS):
            try:
                await self._open(client)
                break
            except MovedError as moved:
                # The slot map we routed by is behind the cluster: go where Redis says.
                client = broker.subscriber_at(moved.host, int(moved.port))
        else:
            raise Drop(f"more than {MAX_REDIRECTS} MOVED redirects")
        async with self._changed:
            self.subscriptions += 1
            self._changed.notify_all()

    async def _open(self, client: aioredis.Redis) -> None:
        pubsub = client.pubsub()
        timeout = self._broker.timeout_s
        try:
            if self._sharded:
                await pubsub.ssubscribe(self.channel)
            else:
                await pubsub.subscribe(self.channel)
            async with asyncio.timeout(timeout):
                while True:
                    msg = await pubsub.get_message(timeout=timeout)
                    if msg is not None and msg["type"] in ("subscribe", "ssubscribe"):
                        break
        except BaseException:
            await pubsub.aclose()
            raise
        kw = client.connection_pool.connection_kwargs
        self.node = f"{kw.get('host', kw.get('path', ''))}:{kw.get('port', '')}"
        self._link = pubsub
        self._pending, self._baseline = None, None
        self._quiet_since = time.monotonic()

    async def _close(self) -> None:
        pubsub, self._link = self._link, None
        self.node = ""
        if pubsub is not None:
            await pubsub.aclose()

    async def _drop(self, reason: str) -> None:
        if not self._exited:
            log.warning("subscription %s on %s dropped: %s", self.channel, self.node, reason)
        await self._close()
        async with self._changed:
            self.drops += 1
            self.last_drop = reason
            self._changed.notify_all()

    # -- iteration -----------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[bytes]:
        backoff = RESUBSCRIBE_MIN_S
        idle = self._broker.subscriber_idle_s
        while not self._exited:
            link = self._link
            if link is None:
                # Always wait before resubscribing: a server that accepts and then drops
                # us at once (a lagging consumer over the output limit) must not spin.
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
                try:
                    await self._subscribe()
                except _SUBSCRIBE_FAILED as exc:
                    if self._broker.closed:
                        raise BrokerUnavailable("broker closed") from exc
                    log.info("subscription %s: resubscribe failed: %s", self.channel, exc)
                    continue
                newest = await self._newest()
                log.info("subscription %s: subscribed again on %s", self.channel, self.node)
                if newest is not None:
                    yield newest
                continue
            pending = self._pending
            deadline = pending[2] + 2 * idle if pending is not None else self._quiet_since + idle
            try:
                remaining = deadline - time.monotonic()
                msg = await link.get_message(timeout=remaining) if remaining > 0 else None
                if msg is None:
                    if time.monotonic() >= deadline:
                        await self._idle()
                    continue
            except Drop as exc:
                await self._drop(str(exc))
                continue
            except BrokerUnavailable as exc:  # the probe could not be published
                if self._broker.closed:
                    raise
                await self._drop(f"probe failed: {exc}")
                continue
            except Exception as exc:
                if self._exited:  # closed under us by __aexit__ in another task
                    return
                if cancel_requested():  # a cancel redis-py turned into an error
                    raise asyncio.CancelledError from exc
                if not isinstance(exc, (MovedError, *_UNAVAILABLE)):
                    raise
                await self._drop(f"{type(exc).__name__}: {exc}")
                continue
            kind = msg["type"]
            if kind == self._message:
                data: bytes = msg["data"]
                if data.startswith(PROBE_PREFIX):
                    if data.startswith(self._token):
                        try:
                            self._echoed(data)
                        except Drop as exc:
                            await self._drop(str(exc))
                    continue
                self._quiet_since = time.monotonic()
                self._pending, self._baseline = None, None
                backoff = RESUBSCRIBE_MIN_S
                yield data
            elif kind == self._unsubscribed and msg["channel"] == self._channel_b:
                await self._drop("Redis unsubscribed the link (a failover or slot migration)")

    async def _newest(self) -> bytes | None:
        """The newest envelope in the history (None: none, or it cannot be read now)."""
        try:
            return await self._broker.newest(self.underlying)
        except BrokerUnavailable as exc:
            log.info("subscription %s: newest envelope not read: %s", self.channel, exc)
            return None

    async def _idle(self) -> None:
        """Nothing arrived for a while: send a probe, or give up on one not echoed."""
        idle = self._broker.subscriber_idle_s
        pending = self._pending
        if pending is not None:
            if time.monotonic() - pending[2] >= 2 * idle:
                raise Drop(f"probe not echoed within {2 * idle:.1f} s")
            return
        payload = self._token + str(next(self._probe_n)).encode()
        try:
            seq, receivers = await self._broker.probe(self.underlying, payload)
        except BrokerUnavailable as exc:
            if not isinstance(exc.__cause__, ClusterDownError):
                raise
            # The node answered: some slot is between primaries (a failover, maybe on
            # another shard). Publishing is refused as well, so nothing is being
            # missed: probe again later rather than drop a link that may be fine.
            self._quiet_since = time.monotonic()
            return
        if receivers == 0:
            raise Drop("a probe reached no subscriber on the slot's primary")
        self._pending = (payload, seq, time.monotonic())

    def _echoed(self, payload: bytes) -> None:
        pending = self._pending
        if pending is None or payload != pending[0]:
            return  # an older probe, late: the newer one is what counts
        seq = pending[1]
        if self._baseline is not None and seq is not None and seq != self._baseline:
            raise Drop(f"silent while meta.seq moved from {self._baseline} to {seq}")
        self._baseline = seq
        self._pending = None
        self._quiet_since = time.monotonic()
