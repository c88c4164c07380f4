"""The Redis broker (`redis://`, `rediss://`, `unix://`): cache, history and pub/sub in Redis.

Keys of an underlying U all carry the hash tag `{U}`, so a Redis Cluster keeps them
in one slot and one Lua script (`publish.lua`) updates them atomically:
`{prefix}:{U}:meta` (hash: epoch, seq, updated_us, info), `{prefix}:{U}:chain` (hash:
cache field -> full record JSON), `{prefix}:{U}:hist` (stream, id `<seq>-0`, field
`e` = envelope, `MAXLEN ~ history`), `{prefix}:{U}:live` (pub/sub channel). The set
`{prefix}:underlyings` lives in another slot and is written beside the script.

Failures: a refused, reset or silent connection raises `BrokerUnavailable` within
the connect/read timeout (2 s by default), and redis-py never retries: the caller owns
backoff. Such a publish has an unknown outcome (Redis may have applied part of it, or
apply it later when a stalled server wakes up); the script's epoch/prev check makes that
harmless, as the caller's next reset either supersedes it or makes it be refused. A
retry would turn an applied batch into a SequenceConflict and duplicate live envelopes,
so the only re-send is after NOSCRIPT, of publications the script did not run for.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig
from redis.utils import HIREDIS_AVAILABLE

from ..aio import cancel_requested
from ..errors import BrokerUnavailable, SequenceConflict
from ..model.envelope import ChainInfo, Publication, decode_info
from .base import ChainMeta, Snapshot

T = TypeVar("T")

DEFAULT_HISTORY = 2000
TIMEOUT_S = 2.0
HEALTH_CHECK_S = 10
COMMAND_CONNECTIONS = 64
SUBSCRIPTION_CONNECTIONS = 100_000  # bounded by the underlyings listed, not by clients
# A silent subscription is PINGed after this long, and given up after twice this.
SUBSCRIBER_IDLE_S = 5.0
RESUBSCRIBE_MIN_S = 0.05
RESUBSCRIBE_MAX_S = 2.0

_SCRIPT = importlib.resources.files(__package__).joinpath("publish.lua").read_text("utf-8")
_EMPTY_INFO = b'{"expiries":{}}'
_UNAVAILABLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
_SUBSCRIBE_FAILED: tuple[type[BaseException], ...] = (BrokerUnavailable, *_UNAVAILABLE)
# Error replies that describe the server's state, not the request: retrying later may work.
_SERVER_STATE = {"OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "MISCONF", "NOREPLICAS",
                 "TRYAGAIN", "CLUSTERDOWN"}  # fmt: skip


def redact(url: str) -> str:
    """`url` with its password (if any) replaced by `***`, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _packing_in_c(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """`cls`, packing commands with hiredis (C) rather than redis-py's Python loop.

    An EVALSHA carries two arguments per record: packing them in Python took about
    half of publish()'s CPU. `cls` itself when hiredis cannot pack.
    """
    if not HIREDIS_AVAILABLE:
        return cls
    # redis-py leaves this constructor unannotated.
    serializer = HiredisRespSerializer()  # type: ignore[no-untyped-call]

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        return cast("list[bytes]", serializer.pack(*args))

    return type(f"HiredisPacking{cls.__name__}", (cls,), {"pack_command": pack_command})


class RedisBroker:
    """Cache + bounded history (`history` envelopes per underlying) + pub/sub in Redis.

    Owns two connection pools (commands, and one connection per subscription); an
    async context manager that closes both on exit. `url` is the redacted URL.
    """

    def __init__(
        self,
        url: str,
        *,
        history: int = DEFAULT_HISTORY,
        prefix: str = "of",
        timeout_s: float = TIMEOUT_S,
        subscriber_idle_s: float = SUBSCRIBER_IDLE_S,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.url = redact(url)
        self.history_size = history
        self.prefix = prefix
        self.subscriber_idle_s = subscriber_idle_s
        self.timeout_s = timeout_s
        common: dict[str, Any] = {
            "socket_connect_timeout": timeout_s,
            "socket_timeout": timeout_s,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            # With maintenance notifications on ("auto" by default in redis-py 8) the
            # pool skips its check for pooled connections the server has closed, so
            # the first publish after a Redis restart would fail on a dead socket.
            "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        }
        # Before reusing a connection idle for HEALTH_CHECK_S, redis-py PINGs it, so a
        # half-open socket fails before a publish is sent, not with an unknown outcome.
        # At most COMMAND_CONNECTIONS commands in flight; a burst beyond that (a crowd
        # of joins, REST calls) waits up to timeout_s for a connection rather than
        # failing at once, as redis-py 8's default pool (100, then an error) would.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            health_check_interval=HEALTH_CHECK_S,
            max_connections=COMMAND_CONNECTIONS,
            timeout=timeout_s,
            **common,
        )
        self._pool.connection_class = _packing_in_c(self._pool.connection_class)
        # Subscriptions do their own liveness checks (PING when idle): no redis-py ones.
        # One connection per subscribed underlying, for as long as it is subscribed.
        self._sub_pool = aioredis.ConnectionPool.from_url(
            url, max_connections=SUBSCRIPTION_CONNECTIONS, **common
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._sub_redis = aioredis.Redis(connection_pool=self._sub_pool)
        self._sha = hashlib.sha1(_SCRIPT.encode("utf-8")).hexdigest()
        self._all_key = f"{prefix}:underlyings"
        self.closed = False

    def key(self, underlying: str, kind: str) -> str:
        """The key `{prefix}:{U}:kind` (kind: meta, chain, hist or live)."""
        return f"{self.prefix}:{{{underlying}}}:{kind}"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close both pools; open subscriptions end with BrokerUnavailable."""
        self.closed = True
        await self._sub_pool.aclose()
        await self._pool.aclose()

    async def _call(self, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except _UNAVAILABLE as exc:
            raise BrokerUnavailable(f"redis {self.url}: {exc or type(exc).__name__}") from exc

    async def publish(self, publications: Sequence[Publication]) -> None:
        """Apply each publication atomically, in order, in one round trip.

        Every publication is tried (a pipeline of one script call each); when some
        were refused, SequenceConflict names the first refused one after the others
        were applied (MemoryBroker stops at the first: either way the caller starts
        a new epoch). BrokerUnavailable when Redis cannot be reached or is in a state
        that refuses writes (some publications may have been applied; none is
        retried). ValueError, before anything is sent, for seq < 1 or seq <= prev.
        """
        for pub in publications:
            if pub.seq < 1 or pub.seq <= pub.prev:
                raise ValueError(f"{pub.underlying}: seq {pub.seq} does not follow prev {pub.prev}")
        if not publications:
            return
        results = await self._send(publications, use_eval=False)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            # Redis lost its script cache (restart, failover, SCRIPT FLUSH). The script
            # ran for none of these, so re-sending every unapplied one from the first
            # NOSCRIPT on (refusals there may only follow from it) cannot apply twice.
            # EVAL also caches the script for the next EVALSHA.
            rest = range(missing[0], len(results))
            again = [i for i in rest if isinstance(results[i], Exception)]
            retried = await self._send([publications[i] for i in again], use_eval=True)
            for i, r in zip(again, retried, strict=True):
                results[i] = r
        conflict: SequenceConflict | None = None
        for pub, r in zip(publications, results, strict=True):
            if not isinstance(r, Exception):
                continue
            # redis-py strips the codes it knows (OOM, READONLY, ...) into status_code.
            code = getattr(r, "status_code", None) or str(r).split(" ", 1)[0]
            if code == "CONFLICT":
                conflict = conflict or SequenceConflict(pub.underlying, str(r).split(" ", 1)[1])
            elif code in _SERVER_STATE or isinstance(r, _UNAVAILABLE):
                raise BrokerUnavailable(f"redis {self.url} refused {pub.underlying}: {r}") from r
            else:
                raise r
        if conflict is not None:
            raise conflict

    async def _send(self, pubs: Sequence[Publication], *, use_eval: bool) -> list[Any]:
        """One pipeline (no MULTI) of a script call per publication: their results."""
        pipe = self._redis.pipeline(transaction=False)
        script_at = []
        for pub in pubs:
            u = pub.underlying
            if pub.reset:
                pipe.sadd(self._all_key, u)
            info = pub.info if pub.info is not None else (_EMPTY_INFO if pub.reset else b"")
            args: list[bytes | str | int] = [pub.epoch, pub.prev, pub.seq, pub.ts, pub.payload]
            args += ("1" if pub.reset else "0", info, self.history_size)
            args.extend(itertools.chain.from_iterable(pub.records))
            keys = [self.key(u, kind) for kind in ("meta", "chain", "hist", "live")]
            script_at.append(len(pipe.command_stack))
            if use_eval:
                pipe.eval(_SCRIPT, 4, *keys, *args)
            else:
                pipe.evalsha(self._sha, 4, *keys, *args)
        results = await self._call(pipe.execute(raise_on_error=False))
        for i, r in enumerate(results):
            # SADD errors (other than the server's state) would be a foreign key type.
            if i not in script_at and isinstance(r, Exception):
                raise r
        return [results[i] for i in script_at]

    async def snapshot(
        self, underlying: str, fields: Sequence[str] | None = None
    ) -> Snapshot | None:
        """The cache of `underlying` (only `fields` of it, when given) read in one
        MULTI/EXEC, or None when it has none."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(self.key(underlying, "meta"))
        if fields is None:
            pipe.hgetall(self.key(underlying, "chain"))
        elif fields:
            pipe.hmget(self.key(underlying, "chain"), list(fields))
        replies = await self._call(pipe.execute())
        meta = replies[0]
        names = (b"epoch", b"seq", b"updated_us", b"info")
        m = self._meta(underlying, *(meta.get(f) for f in names))
        if m is None:
            return None
        if fields is None:
            records = {k.decode(): v for k, v in replies[1].items()}
        elif fields:
            records = {f: v for f, v in zip(fields, replies[1], strict=True) if v is not None}
        else:
            records = {}
        return Snapshot(underlying, m.epoch, m.seq, m.updated_us, m.info, records)

    async def meta(self, underlying: str) -> ChainMeta | None:
        """Epoch, seq, update time and listing of `underlying` (no records), or None."""
        fields = ["epoch", "seq", "updated_us", "info"]
        values = cast(
            "list[bytes | None]",
            await self._call(self._redis.hmget(self.key(underlying, "meta"), fields)),
        )
        return self._meta(underlying, *values)

    @staticmethod
    def _meta(
        u: str, epoch: bytes | None, seq: bytes | None, updated: bytes | None, info: bytes | None
    ) -> ChainMeta | None:
        if epoch is None:
            return None
        listing = decode_info(info) if info else ChainInfo({})
        return ChainMeta(u, epoch.decode(), int(seq or 0), int(updated or 0), listing)

    async def history(self, underlying: str, epoch: str, after_seq: int) -> list[bytes] | None:
        """Envelopes of `epoch` with seq > `after_seq`, oldest first, read atomically.

        None when `epoch` is not the current one, or the point is more than `history`
        envelopes back (even where Redis's approximate trimming still holds it, so both
        brokers agree), or the stream no longer holds seq `after_seq + 1`. The reply is
        bounded by `history` entries.
        """
        if after_seq < 0:
            return None
        pipe = self._redis.pipeline(transaction=True)
        pipe.hmget(self.key(underlying, "meta"), ["epoch", "seq"])
        pipe.xrange(self.key(underlying, "hist"), f"({after_seq}-0", "+", count=self.history_size)
        (cur_epoch, cur_seq), entries = await self._call(pipe.execute())
        if cur_epoch is None or cur_seq is None or cur_epoch.decode() != epoch:
            return None
        seq = int(cur_seq)
        if after_seq > seq or seq - after_seq > self.history_size:
            return None
        if after_seq == seq:
            return []
        want = seq - after_seq
        if len(entries) < want or entries[0][0] != f"{after_seq + 1}-0".encode():
            return None
        return [fields[b"e"] for _, fields in entries[:want]]

    def subscribe(self, underlying: str) -> RedisSubscription:
        """Live envelopes of `underlying` from the moment the subscription is entered."""
        return RedisSubscription(self, underlying)

    async def underlyings(self) -> list[str]:
        """Underlyings that have had a reset publication (the set beside the caches), sorted."""
        names = cast("set[bytes]", await self._call(self._redis.smembers(self._all_key)))
        return sorted(n.decode() for n in names)

    async def ping(self) -> None:
        """Return when Redis answers PING; raise BrokerUnavailable otherwise."""
        await self._call(self._redis.ping())


class RedisSubscription:
    """Envelopes from `{prefix}:{U}:live` on a dedicated pub/sub connection.

    Entering SUBSCRIBEs and waits for Redis's confirmation, so every envelope published
    afterwards is delivered (BrokerUnavailable when Redis cannot be reached then).

    Bounded: one message is read from the socket per iteration step, so nothing queues
    here beyond redis-py's read buffer; a consumer that lags lets Redis's
    `client-output-buffer-limit pubsub` disconnect it, which is a drop like any other.

    Drops: when the connection fails (or stays silent for two `subscriber_idle_s` after
    a PING) the iterator does not end: it reconnects with capped, jittered exponential
    backoff (RESUBSCRIBE_MIN_S..RESUBSCRIBE_MAX_S) and SUBSCRIBEs again. Envelopes
    published meanwhile are lost; the consumer sees that in prev/seq (or a new epoch)
    and heals from `history` or a snapshot. `subscriptions` counts successful
    SUBSCRIBEs (1 after entry), `drops` the links given up; `wait()` awaits them.
    Iteration ends when the subscription is exited; it raises BrokerUnavailable once
    the broker is closed.
    """

    def __init__(self, broker: RedisBroker, underlying: str) -> None:
        self._broker = broker
        self.channel = broker.key(underlying, "live")
        self._pubsub: PubSub | None = None
        self._exited = False
        self.subscriptions = 0
        self.drops = 0
        self._changed = asyncio.Condition()

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

    async def _subscribe(self) -> None:
        if self._broker.closed:
            raise BrokerUnavailable("broker closed")
        pubsub = self._broker._sub_redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            async with asyncio.timeout(self._broker.timeout_s):
                while True:
                    msg = await pubsub.get_message(timeout=self._broker.timeout_s)
                    if msg is not None and msg["type"] == "subscribe":
                        break
        except BaseException:
            await pubsub.aclose()
            raise
        self._pubsub = pubsub
        async with self._changed:
            self.subscriptions += 1
            self._changed.notify_all()

    async def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        backoff = RESUBSCRIBE_MIN_S
        idle = self._broker.subscriber_idle_s
        pinged = False
        while not self._exited:
            pubsub = self._pubsub
            if pubsub is None:
                # Always wait before resubscribing: a server that accepts and then drops
                # us at once (a lagging consumer over the output limit) must not spin.
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
                try:
                    await self._subscribe()
                except _UNAVAILABLE:
                    continue
                pinged = False
                continue
            try:
                msg = await pubsub.get_message(timeout=idle)
                if msg is None and not pinged:
                    await pubsub.ping()  # the PONG arrives as a message
                    pinged = True
                    continue
            except Exception as exc:
                if self._exited:  # closed under us by __aexit__ in another task
                    return
                if not isinstance(exc, _UNAVAILABLE):
                    raise
                if cancel_requested():  # a cancel redis-py turned into an error
                    raise asyncio.CancelledError from exc
                msg = None
            if msg is None:  # a connection error, or no PONG within `idle`: the link is dead
                await self._close()
                async with self._changed:
                    self.drops += 1
                    self._changed.notify_all()
                continue
            pinged = False
            if msg["type"] == "message":
                backoff = RESUBSCRIBE_MIN_S
                yield msg["data"]
