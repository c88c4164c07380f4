"""The broker interface shared by the memory and Redis implementations.

The processor is the only writer. Per `Publication` a broker atomically: updates
the latest-value cache (with the seq it is current as of), appends the envelope
to a bounded history (for resume) and publishes it to live subscribers. So a
snapshot (records + seq) read after subscribing, minus the buffered envelopes it
already contains, continues the live stream with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self

from ..model.envelope import ChainInfo, Publication

LeaseOp = Literal["take", "renew", "release"]


@dataclass(frozen=True, slots=True)
class ChainMeta:
    """Where an underlying's cache stands: epoch, seq, last update time and listing."""

    underlying: str
    epoch: str
    seq: int
    updated_us: int
    info: ChainInfo


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest-value cache of one underlying, consistent as of `seq`."""

    underlying: str
    epoch: str
    seq: int
    updated_us: int
    info: ChainInfo
    records: dict[str, bytes] = field(default_factory=dict)

    def option_records(self, expiry: str | None = None) -> list[bytes]:
        """Full option records in listing order, of one expiry (YYYY-MM-DD) or all."""
        if expiry is None:
            symbols = [s for syms in self.info.expiries.values() for s in syms]
        else:
            symbols = self.info.expiries.get(expiry, [])
        records = self.records
        return [r for r in (records.get(s) for s in symbols) if r is not None]


class Subscription(Protocol):
    """Live envelopes of one underlying, in publish order, as raw JSON bytes.

    Delivery is at most once: a consumer that falls too far behind, or a broker
    connection that drops, loses messages; the envelopes' prev/seq make the loss
    visible and `Broker.history` heals it. (After such a drop a Redis subscription
    delivers the newest envelope of the history first, which may repeat one already
    delivered: a consumer ignores an envelope with `seq <=` its own.)
    """

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Broker(Protocol):
    """Cache + bounded history + pub/sub, one namespace per deployment."""

    url: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def publish(self, publications: Sequence[Publication], *, owner: str = "") -> None:
        """Apply each publication atomically, in order.

        Raises BrokerUnavailable when the broker cannot be reached (some of the
        publications may then have been applied) and SequenceConflict when the
        cache is not at the publication's `prev`. With `owner` (a processor's lease
        id), a publication is applied only while `owner` holds the lease of its
        underlying, checked atomically with the write; Fenced names the refused ones
        (the others are applied).
        """
        ...

    async def lease(
        self, op: LeaseOp, underlyings: Sequence[str], owner: str, ttl_ms: int
    ) -> set[str]:
        """Take (free, or already `owner`'s), renew or release (both only while `owner`
        holds it) the lease of each of `underlyings`; a taken or renewed lease lapses
        `ttl_ms` later. Returns the underlyings `owner` holds afterwards (take, renew)
        or released (release). BrokerUnavailable when the broker cannot be reached.
        """
        ...

    async def snapshot(
        self, underlying: str, fields: Sequence[str] | None = None
    ) -> Snapshot | None:
        """The cache of `underlying` read atomically, or None when it has none.

        With `fields`, only those cache fields (symbols, UNDERLYING_FIELD,
        STATS_FIELD) are read; the listing and seq always are.
        """
        ...

    async def meta(self, underlying: str) -> ChainMeta | None:
        """Epoch, seq, update time and listing of `underlying` (no records), or None."""
        ...

    async def history(self, underlying: str, epoch: str, after_seq: int) -> list[bytes] | None:
        """Envelopes of `epoch` with seq > `after_seq`, oldest first.

        None when that point is no longer (or never was) in the bounded history:
        the consumer must take a snapshot instead. An empty list means it is current.
        """
        ...

    def subscribe(self, underlying: str) -> Subscription:
        """Live envelopes of `underlying` from the moment the subscription is entered."""
        ...

    async def underlyings(self) -> list[str]:
        """Underlyings that have a cache, sorted."""
        ...

    async def ping(self, *, every: bool = True) -> None:
        """Return when the broker answers; raise BrokerUnavailable otherwise.

        On a Redis Cluster "answers" means every primary (`every`, the default) or at
        least one (`every=False`: this process is not cut off from the broker, though
        a shard may be failing over)."""
        ...
