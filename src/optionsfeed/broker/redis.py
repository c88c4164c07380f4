"""The Redis broker: cache, history and pub/sub in one Redis or a Redis Cluster.

`redis://`, `rediss://` and `unix://` name one Redis; `redis+cluster://host:port,...`
(or `rediss+cluster://`) a Redis Cluster (see cluster.py). Keys of an underlying U
all carry the hash tag `{U}`, so a cluster keeps them in one slot (one shard) and one
Lua script (`publish.lua`) updates them atomically: `{prefix}:{U}:meta` (hash: epoch,
seq, updated_us, info), `{prefix}:{U}:chain` (hash: cache field -> full record JSON),
`{prefix}:{U}:hist` (stream, id `<seq>-0`, field `e` = envelope, `MAXLEN ~ history`),
`{prefix}:{U}:live` (the channel: PUBLISH on one Redis, SPUBLISH on a cluster, where a
shard channel lives on its slot's primary only), `{prefix}:{U}:lease` (the id of the
processor that owns U, with a TTL: `lease.lua`; publish.lua checks it when given an owner). The set `{prefix}:underlyings` is a
registry in a slot of its own (on a cluster, one shard's), written beside each reset.
Processors heartbeat into `{prefix}:{processors}:members` (sorted set, id -> lapse
time) and leave notices in `{prefix}:{processors}:notices` (a short stream that peers
block on): one slot, `members.lua`.

Failures: a refused, reset or silent connection raises `BrokerUnavailable` within
the connect/read timeout (2 s by default), and redis-py never retries: the caller owns
backoff. Such a publish has an unknown outcome (Redis may have applied part of it, or
apply it later when a stalled server wakes up); the script's epoch/prev check makes that
harmless, as the caller's next reset either supersedes it or makes it be refused. A
retry would turn an applied batch into a SequenceConflict and duplicate live envelopes,
so the only re-sends are after NOSCRIPT (the script did not run) and, on a cluster,
after MOVED, ASK, TRYAGAIN or CLUSTERDOWN (the node that answered did not run it
either).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import itertools
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import (
    ClusterError,
    NoScriptError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig
from redis.utils import HIREDIS_AVAILABLE

from ..errors import BrokerUnavailable, Fenced, SequenceConflict
from ..model.envelope import ChainInfo, Publication, decode_info
from .base import ChainMeta, LeaseOp, MemberOp, Snapshot
from .cluster import is_cluster_url, node_kwargs, redact_cluster, seed_urls
from .live import RedisSubscription
from .node_pipeline import send_by_node

T = TypeVar("T")

DEFAULT_HISTORY = 2000
TIMEOUT_S = 2.0
HEALTH_CHECK_S = 10
COMMAND_CONNECTIONS = 64
SUBSCRIPTION_CONNECTIONS = 100_000  # bounded by the underlyings listed, not by clients
# A subscription with no traffic for this long probes its link (see live.py).
SUBSCRIBER_IDLE_S = 1.0

_SCRIPT = importlib.resources.files(__package__).joinpath("publish.lua").read_text("utf-8")
_LEASE_SCRIPT = importlib.resources.files(__package__).joinpath("lease.lua").read_text("utf-8")
_MEMBERS_SCRIPT = importlib.resources.files(__package__).joinpath("members.lua").read_text("utf-8")
NOTICES_KEPT = 100
_EMPTY_INFO = b'{"expiries":{}}'
# Errors that say "the broker cannot be reached or is not serving now", never "your
# request is wrong". On a cluster that includes a slot no node serves, CLUSTERDOWN,
# TRYAGAIN (a slot migrating) and a topology no seed would tell.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OSError, ClusterError, TryAgainError,
    SlotNotCoveredError, RedisClusterUnreachableError,
)  # fmt: skip
# Error replies that describe the server's state, not the request: retrying later may work.
_SERVER_STATE = {"OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "MISCONF", "NOREPLICAS",
                 "TRYAGAIN", "CLUSTERDOWN"}  # fmt: skip


def redact(url: str) -> str:
    """`url` with its password (if any) replaced by `***`, for logs and errors."""
    if is_cluster_url(url):
        return redact_cluster(url)
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

    Owns the command connections (a pool; on a cluster, a pool per node) and one
    connection per subscription; an async context manager that closes them all on
    exit. `url` is the redacted URL; `sharded` is True on a Redis Cluster.
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
        self.sharded = is_cluster_url(url)
        self._common: dict[str, Any] = {
            "socket_connect_timeout": timeout_s,
            "socket_timeout": timeout_s,
            "socket_keepalive": True,
            # Never a retry inside redis-py: a script that ran must not run twice.
            "retry": Retry(NoBackoff(), 0),
            # With maintenance notifications on ("auto" by default in redis-py 8) the
            # pool skips its check for pooled connections the server has closed, so
            # the first publish after a Redis restart would fail on a dead socket.
            "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        }
        self._redis: Any  # aioredis.Redis or RedisCluster: the same command methods
        self._pool: aioredis.BlockingConnectionPool | None = None  # one Redis only
        self._in_flight: asyncio.Semaphore | None = None  # a cluster only
        # Subscriptions do their own liveness checks (probes when idle): no redis-py
        # ones. One connection per subscribed underlying, for as long as it is
        # subscribed; on a cluster, one client per node that served a subscription.
        self._subscribers: dict[str, aioredis.Redis] = {}
        self._node_kwargs: dict[str, Any] = {}  # credentials and TLS of cluster nodes
        if self.sharded:
            self._open_cluster(url)
        else:
            self._open_one(url)
        self._sha = hashlib.sha1(_SCRIPT.encode("utf-8")).hexdigest()
        self._publish_cmd = "SPUBLISH" if self.sharded else "PUBLISH"
        self._all_key = f"{prefix}:underlyings"
        self.closed = False

    def _open_one(self, url: str) -> None:
        # Before reusing a connection idle for HEALTH_CHECK_S, redis-py PINGs it, so a
        # half-open socket fails before a publish is sent, not with an unknown outcome.
        # At most COMMAND_CONNECTIONS commands in flight; a burst beyond that (a crowd
        # of joins, REST calls) waits up to timeout_s for a connection rather than
        # failing at once, as redis-py 8's default pool (100, then an error) would.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            health_check_interval=HEALTH_CHECK_S,
            max_connections=COMMAND_CONNECTIONS,
            timeout=self.timeout_s,
            **self._common,
        )
        pool.connection_class = _packing_in_c(pool.connection_class)
        self._redis = aioredis.Redis(connection_pool=pool)
        self._pool = pool
        sub_pool = aioredis.ConnectionPool.from_url(
            url, max_connections=SUBSCRIPTION_CONNECTIONS, **self._common
        )
        self._subscribers[""] = aioredis.Redis(connection_pool=sub_pool)

    def _open_cluster(self, url: str) -> None:
        seeds = [parse_url(u) for u in seed_urls(url)]
        self._node_kwargs = node_kwargs(seeds[0])
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(s["host"], s["port"]) for s in seeds],
            max_connections=COMMAND_CONNECTIONS,
            health_check_interval=HEALTH_CHECK_S,
            **self._node_kwargs,
            **self._common,
        )
        # Node connections are made from these (the same dict the nodes manager holds).
        kw = cluster.connection_kwargs
        kw["connection_class"] = _packing_in_c(kw["connection_class"])
        self._redis = cluster
        # redis-py's cluster pool fails a command at once when a node's connections are
        # all busy: bound the commands in flight instead (each holds at most one
        # connection per node), so a burst waits up to timeout_s as on one Redis.
        self._in_flight = asyncio.Semaphore(COMMAND_CONNECTIONS)

    def key(self, underlying: str, kind: str) -> str:
        """The key `{prefix}:{U}:kind` (kind: meta, chain, hist, live or lease; U "processors"
        for the membership keys, never an underlying: symbols are upper case)."""
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
        """Close every connection; open subscriptions end with BrokerUnavailable."""
        self.closed = True
        for client in list(self._subscribers.values()):
            await client.connection_pool.aclose()
        if self._pool is not None:
            await self._pool.aclose()
        else:
            await self._redis.aclose()

    async def _call(self, aw: Coroutine[Any, Any, T]) -> T:
        try:
            if self._in_flight is None:
                return await aw
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._in_flight.acquire()
            except TimeoutError:
                aw.close()
                raise BrokerUnavailable(
                    f"redis {self.url}: {COMMAND_CONNECTIONS} commands in flight for "
                    f"{self.timeout_s} s"
                ) from None
            try:
                return await aw
            finally:
                self._in_flight.release()
        except _UNAVAILABLE as exc:
            raise BrokerUnavailable(f"redis {self.url}: {exc or type(exc).__name__}") from exc

    async def publish(self, publications: Sequence[Publication], *, owner: str = "") -> None:
        """Apply each publication atomically, in order, in one round trip.

        With `owner`, each is applied only while `owner` holds its underlying's lease
        (checked in the script, atomically with the write); Fenced names every refused
        one, after the others were applied, and takes precedence over SequenceConflict.
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
        results = await self._send(publications, use_eval=False, owner=owner)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            # Redis lost its script cache (restart, failover, SCRIPT FLUSH). The script
            # ran for none of these, so re-sending every unapplied one from the first
            # NOSCRIPT on (refusals there may only follow from it) cannot apply twice.
            # EVAL also caches the script for the next EVALSHA.
            # A connection error is an unknown outcome, never re-sent (on a cluster it
            # may come from another node than the NOSCRIPT).
            rest = range(missing[0], len(results))
            again = [
                i for i in rest
                if isinstance(results[i], Exception) and not isinstance(results[i], _UNAVAILABLE)
            ]  # fmt: skip
            retried = await self._send([publications[i] for i in again], use_eval=True, owner=owner)
            for i, r in zip(again, retried, strict=True):
                results[i] = r
        conflict: SequenceConflict | None = None
        fenced: list[str] = []
        fenced_why = ""
        for pub, r in zip(publications, results, strict=True):
            if not isinstance(r, Exception):
                continue
            if str(r).startswith("FENCED "):
                fenced.append(pub.underlying)
                fenced_why = fenced_why or str(r).split(" ", 1)[1]
            elif str(r).startswith("CONFLICT "):
                conflict = conflict or SequenceConflict(pub.underlying, str(r).split(" ", 1)[1])
            else:
                self._raise_refused(pub.underlying, r)
        if fenced:
            raise Fenced(fenced, fenced_why)
        if conflict is not None:
            raise conflict

    async def _send(self, pubs: Sequence[Publication], *, use_eval: bool, owner: str) -> list[Any]:
        """One pipeline (no MULTI) of a script call per publication: their results.

        On a cluster, one pipeline per primary, sent concurrently (node_pipeline.py:
        order is kept within a node, so within an underlying; a command answered
        MOVED, ASK or TRYAGAIN is re-sent alone; nothing else is re-sent).
        """
        commands: list[tuple[str, list[Any]]] = []
        script_at = []
        for pub in pubs:
            u = pub.underlying
            if pub.reset:
                commands.append((self._all_key, ["SADD", self._all_key, u]))
            info = pub.info if pub.info is not None else (_EMPTY_INFO if pub.reset else b"")
            keys = [self.key(u, kind) for kind in ("meta", "chain", "hist", "live", "lease")]
            args: list[Any] = ["EVAL", _SCRIPT] if use_eval else ["EVALSHA", self._sha]
            args += [5, *keys, pub.epoch, pub.prev, pub.seq, pub.ts, pub.payload]
            args += ("1" if pub.reset else "0", info, self.history_size, self._publish_cmd, owner)
            args.extend(itertools.chain.from_iterable(pub.records))
            script_at.append(len(commands))
            commands.append((keys[0], args))
        results: list[Any]
        if self.sharded:
            results = await self._call(send_by_node(self._redis, commands))
        else:
            pipe = self._redis.pipeline(transaction=False)
            for _, args in commands:
                pipe.execute_command(*args)
            results = await self._call(pipe.execute(raise_on_error=False))
        for i, r in enumerate(results):
            if i not in script_at and isinstance(r, Exception):
                self._raise_refused("the underlyings set", r)
        return [results[i] for i in script_at]

    def _raise_refused(self, what: str, r: Exception) -> None:
        # redis-py strips the codes it knows (OOM, READONLY, ...) into status_code.
        code = getattr(r, "status_code", None) or str(r).split(" ", 1)[0]
        if code in _SERVER_STATE or isinstance(r, _UNAVAILABLE):
            raise BrokerUnavailable(f"redis {self.url} refused {what}: {r}") from r
        raise r

    async def lease(
        self, op: LeaseOp, underlyings: Sequence[str], owner: str, ttl_ms: int
    ) -> set[str]:
        """Take, renew or release the leases of `underlyings` for `owner`, in one round
        trip (one small script per underlying, EVAL: idempotent, so NOSCRIPT cannot
        arise): the underlyings whose lease `owner` holds afterwards (take, renew) or
        released (release). BrokerUnavailable as for publish; an underlying whose node
        refused (e.g. a failover on a cluster) counts as not held."""
        if not underlyings:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for u in underlyings:
            pipe.eval(_LEASE_SCRIPT, 1, self.key(u, "lease"), op, owner, ttl_ms)
        results = await self._call(pipe.execute(raise_on_error=False))
        return {u for u, r in zip(underlyings, results, strict=True) if r == 1}

    async def members(self, op: MemberOp, member: str, ttl_ms: int, note: str = "") -> list[str]:
        """Heartbeat, leave or notify (see Broker.members) in one script call (EVAL)."""
        keys = [self.key("processors", "members"), self.key("processors", "notices")]
        args = [op, member, ttl_ms, NOTICES_KEPT, note]
        names = await self._call(self._redis.eval(_MEMBERS_SCRIPT, 2, *keys, *args))
        return sorted(n.decode() for n in names)

    async def notices(self, after: str, wait_ms: int) -> tuple[str, int]:
        """XREAD BLOCK on the notices stream (one connection held while it waits).

        A stream, not pub/sub: a notice left while this processor was between two
        reads, or reconnecting, is still read, and on a cluster it is a plain key in
        one slot, routed like any other. `wait_ms` must stay below the socket timeout.
        """
        key = self.key("processors", "notices")
        got = await self._call(
            self._redis.xread({key: after}, count=NOTICES_KEPT, block=max(wait_ms, 1))
        )
        if not got:
            return after, 0
        # One Redis answers a list of [key, entries]; redis-py's cluster client too.
        entries = got[0][1]
        if not entries:
            return after, 0
        last = entries[-1][0]
        return (last.decode() if isinstance(last, bytes) else str(last)), len(entries)

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
        """Underlyings that have had a reset publication (the set beside the caches), sorted.

        On a cluster the set lives on one shard (it has no hash tag): while that shard
        has no primary, this raises BrokerUnavailable and resets fail to register.
        """
        names = cast("set[bytes]", await self._call(self._redis.smembers(self._all_key)))
        return sorted(n.decode() for n in names)

    async def ping(self, *, every: bool = True) -> None:
        """Return when Redis answers PING (on a cluster: every primary, or with
        `every=False` the first primary that answers); else BrokerUnavailable."""
        if not self.sharded:
            await self._call(self._redis.ping())
        elif every:
            await self._call(self._redis.ping(target_nodes=RedisCluster.PRIMARIES))
        else:
            await self._ping_any()

    async def _ping_any(self) -> None:
        if not self._redis.get_primaries():  # the slot map is read on first use
            await self._call(self._redis.initialize())
        # All at once, and none cancelled (a command cancelled in flight costs its
        # connection): a frozen primary's ping ends at the socket timeout on its own.
        pings = [asyncio.ensure_future(self._call(self._redis.ping(target_nodes=n)))
                 for n in self._redis.get_primaries()]  # fmt: skip
        for p in pings:
            p.add_done_callback(_retrieve)
        failure: BaseException = BrokerUnavailable(f"redis {self.url}: no primary known")
        for next_done in asyncio.as_completed(pings):
            try:
                await next_done
                return
            except BrokerUnavailable as exc:
                failure = exc
        raise failure

    # -- for subscriptions (live.py) ------------------------------------------------------

    async def subscriber_for(self, underlying: str) -> aioredis.Redis:
        """A client on the node to subscribe to `underlying`'s channel on.

        On a cluster: the primary of the channel's slot, as the slot map says right
        after a command routed to that slot (it follows MOVED and asks for a refresh on
        a connection error, so the map is as fresh as the cluster can tell). Raises
        BrokerUnavailable when that command fails.
        """
        await self.meta_seq(underlying)
        if not self.sharded:
            return self._subscribers[""]
        try:
            node = self._redis.get_node_from_key(self.key(underlying, "live"))
        except SlotNotCoveredError as exc:
            raise BrokerUnavailable(f"redis {self.url}: {exc}") from exc
        return self.subscriber_at(node.host, node.port)

    def subscriber_at(self, host: str, port: int) -> aioredis.Redis:
        """The subscription client of cluster node `host:port` (made on first use)."""
        name = f"{host}:{port}"
        client = self._subscribers.get(name)
        if client is None:
            pool = aioredis.ConnectionPool(
                host=host,
                port=port,
                max_connections=SUBSCRIPTION_CONNECTIONS,
                **self._node_kwargs,
                **self._common,
            )
            client = self._subscribers[name] = aioredis.Redis(connection_pool=pool)
        return client

    async def meta_seq(self, underlying: str) -> int | None:
        """The cache's seq of `underlying` (None: no cache); BrokerUnavailable."""
        seq = await self._call(self._redis.hget(self.key(underlying, "meta"), "seq"))
        return None if seq is None else int(seq)

    async def probe(self, underlying: str, payload: bytes) -> tuple[int | None, int]:
        """Read the cache's seq and publish `payload` on the live channel, in one round
        trip to the slot's primary: (seq or None, how many subscribers got `payload`)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(self.key(underlying, "meta"), "seq")
        pipe.execute_command(self._publish_cmd, self.key(underlying, "live"), payload)
        seq, receivers = await self._call(pipe.execute())
        return (None if seq is None else int(seq)), int(receivers)

    async def newest(self, underlying: str) -> bytes | None:
        """The newest envelope in `underlying`'s history stream, or None."""
        entries = await self._call(
            self._redis.xrevrange(self.key(underlying, "hist"), "+", "-", count=1)
        )
        return None if not entries else cast("bytes", entries[0][1][b"e"])


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Consume the outcome of a task nobody awaits any more (a straggling ping)."""
    if not fut.cancelled():
        fut.exception()
