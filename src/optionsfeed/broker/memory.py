"""The in-process broker: the embedded default for a one-process run (`memory://`)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from ..errors import Fenced, SequenceConflict
from ..model.envelope import ChainInfo, Publication, decode_info
from .base import ChainMeta, LeaseOp, Snapshot

DEFAULT_HISTORY = 2000
DEFAULT_SUBSCRIBER_QUEUE = 10_000


@dataclass(slots=True)
class _Chain:
    epoch: str
    seq: int
    updated_us: int
    info: ChainInfo
    records: dict[str, bytes] = field(default_factory=dict)
    history: deque[tuple[int, bytes]] = field(default_factory=deque)


class MemorySubscription:
    """A bounded queue of envelopes for one consumer.

    At `maxsize` pending envelopes further ones are dropped and counted in
    `dropped`; the gap shows in the envelopes' prev/seq, as with Redis.
    """

    def __init__(self, broker: MemoryBroker, underlying: str, maxsize: int) -> None:
        self._broker = broker
        self._underlying = underlying
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _offer(self, payload: bytes) -> None:
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.dropped += 1

    async def __aenter__(self) -> Self:
        self._broker._subscribers.setdefault(self._underlying, set()).add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subs = self._broker._subscribers.get(self._underlying)
        if subs is not None:
            subs.discard(self)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            yield await self._queue.get()


class MemoryBroker:
    """Cache, bounded history (`history` envelopes per underlying) and pub/sub in memory.

    Every operation is synchronous under the hood, so each publication is atomic
    with respect to readers on the same event loop. Leases work as on Redis (one
    process holds them all in practice, but a lapsed or foreign lease fences).
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        history: int = DEFAULT_HISTORY,
        subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
    ) -> None:
        self.url = url
        self._history = history
        self._subscriber_queue = subscriber_queue
        self._chains: dict[str, _Chain] = {}
        self._subscribers: dict[str, set[MemorySubscription]] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # underlying -> (owner, lapses at)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._subscribers.clear()

    async def publish(self, publications: Sequence[Publication], *, owner: str = "") -> None:
        # As on Redis: the fenced ones are skipped, Fenced wins over a conflict.
        fenced: list[str] = []
        conflict: SequenceConflict | None = None
        for pub in publications:
            if owner and self._holder(pub.underlying) != owner:
                fenced.append(pub.underlying)
                continue
            try:
                self._apply(pub)
            except SequenceConflict as exc:
                conflict = exc
                break
        if fenced:
            raise Fenced(fenced, f"lease held by {self._holder(fenced[0]) or 'nobody'}")
        if conflict is not None:
            raise conflict

    def _holder(self, underlying: str) -> str | None:
        held = self._leases.get(underlying)
        if held is None or held[1] <= time.monotonic():
            return None
        return held[0]

    async def lease(
        self, op: LeaseOp, underlyings: Sequence[str], owner: str, ttl_ms: int
    ) -> set[str]:
        out = set()
        lapses = time.monotonic() + ttl_ms / 1000
        for u in underlyings:
            holder = self._holder(u)
            if (op == "take" and holder in (None, owner)) or (op == "renew" and holder == owner):
                self._leases[u] = (owner, lapses)
                out.add(u)
            elif op == "release" and holder == owner:
                del self._leases[u]
                out.add(u)
        return out

    def _apply(self, pub: Publication) -> None:
        chain = self._chains.get(pub.underlying)
        if pub.reset:
            info = decode_info(pub.info) if pub.info is not None else ChainInfo({})
            chain = _Chain(pub.epoch, pub.seq, pub.ts, info, history=deque(maxlen=self._history))
            self._chains[pub.underlying] = chain
        elif chain is None or chain.epoch != pub.epoch or chain.seq != pub.prev:
            have = "nothing" if chain is None else f"{chain.epoch}/{chain.seq}"
            raise SequenceConflict(
                pub.underlying, f"cache at {have}, publication continues {pub.epoch}/{pub.prev}"
            )
        elif pub.info is not None:
            chain.info = decode_info(pub.info)
        chain.records.update(pub.records)
        chain.seq = pub.seq
        chain.updated_us = pub.ts
        chain.history.append((pub.seq, pub.payload))
        for sub in self._subscribers.get(pub.underlying, ()):
            sub._offer(pub.payload)

    async def snapshot(
        self, underlying: str, fields: Sequence[str] | None = None
    ) -> Snapshot | None:
        chain = self._chains.get(underlying)
        if chain is None:
            return None
        if fields is None:
            records = dict(chain.records)
        else:
            records = {f: r for f in fields if (r := chain.records.get(f)) is not None}
        return Snapshot(underlying, chain.epoch, chain.seq, chain.updated_us, chain.info, records)

    async def meta(self, underlying: str) -> ChainMeta | None:
        chain = self._chains.get(underlying)
        if chain is None:
            return None
        return ChainMeta(underlying, chain.epoch, chain.seq, chain.updated_us, chain.info)

    async def history(self, underlying: str, epoch: str, after_seq: int) -> list[bytes] | None:
        chain = self._chains.get(underlying)
        if chain is None or chain.epoch != epoch or after_seq > chain.seq:
            return None
        if after_seq == chain.seq:
            return []
        hist = chain.history
        # The point is covered when the oldest kept envelope is the one right after it.
        if not hist or hist[0][0] > after_seq + 1:
            return None
        return [payload for seq, payload in hist if seq > after_seq]

    def subscribe(self, underlying: str) -> MemorySubscription:
        return MemorySubscription(self, underlying, self._subscriber_queue)

    async def underlyings(self) -> list[str]:
        return sorted(self._chains)

    async def ping(self, *, every: bool = True) -> None:
        return None
