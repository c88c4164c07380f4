"""Drivers for the gateway core without sockets or sleeping.

A `Bench` wires one `Session` to a real `Hub` over the in-process broker, with a
fake transport (frames are collected, the unread byte count is set by the test)
and a manual scheduler (time moves only when the test says so). `Market`
publishes a two-contract chain; `Reader` applies what the client receives the way
a client must (snapshots replace, an update applies only on its `prev`) and says
whether its state is the broker's.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from optionsfeed.broker.base import Snapshot
from optionsfeed.broker.memory import MemoryBroker
from optionsfeed.gateway.hub import Hub
from optionsfeed.gateway.session import Limits, Session
from optionsfeed.model.envelope import ChainInfo, Publication

U = "SPY"
EXPIRY = "2026-12-18"
CALL = "SPY261218C00100000"
PUT = "SPY261218P00100000"
WALL_US = 1_765_000_000_000_000


class ManualScheduler:
    """call_soon / call_later run only from `run()`, at the time `advance()` set."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], object], _Handle]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[[], object], /) -> object:
        return self.call_later(0.0, callback)

    def call_later(self, delay: float, callback: Callable[[], object], /) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._heap, (self.now + delay, next(self._order), callback, handle))
        return handle

    def run(self) -> int:
        """Run every callback due by now (and those they schedule for now); how many ran."""
        ran = 0
        while self._heap and self._heap[0][0] <= self.now:
            _, _, callback, handle = heapq.heappop(self._heap)
            if not handle.cancelled:
                callback()
                ran += 1
        return ran

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.run()


class _Handle:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Wire:
    """The fake transport: what was written, and a write buffer the test fills."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.unread = 0
        self.closes: list[tuple[int, str]] = []

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def get_write_buffer_size(self) -> int:
        return self.unread

    def is_closing(self) -> bool:
        return bool(self.closes)

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))


def frame_payload(frame: bytes) -> bytes:
    """The payload of one unmasked server frame (RFC 6455 5.2)."""
    n = frame[1] & 0x7F
    start = 2 if n < 126 else 4 if n == 126 else 10
    return frame[start:]


class GatedBroker(MemoryBroker):
    """The in-process broker, whose snapshot and meta reads the test can hold.

    A held snapshot is read at once and returned when released: updates published
    meanwhile are newer than it, as with a slow cache read under a fast feed.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshots_open = asyncio.Event()
        self.snapshots_open.set()
        self.meta_open = asyncio.Event()
        self.meta_open.set()
        self.snapshot_reads = 0

    async def snapshot(
        self, underlying: str, fields: Sequence[str] | None = None
    ) -> Snapshot | None:
        snap = await super().snapshot(underlying, fields)
        self.snapshot_reads += 1
        await self.snapshots_open.wait()
        return snap

    async def meta(self, underlying: str) -> Any:
        await self.meta_open.wait()
        return await super().meta(underlying)


class Market:
    """Publishes a two-contract chain of `U` into a broker, one envelope per call."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.epoch = ""
        self.seq = 0
        self._bid = 1.0

    def _record(self, symbol: str) -> dict[str, Any]:
        self._bid += 0.01
        return {"symbol": symbol, "bid": round(self._bid, 2), "ts": WALL_US}

    async def reset(self, epoch: str) -> None:
        """A new epoch: the whole chain, `reset` set, seq 1."""
        self.epoch, self.seq = epoch, 1
        records = [self._record(CALL), self._record(PUT)]
        info = msgspec.json.encode(ChainInfo({EXPIRY: [CALL, PUT]}))
        await self._publish(0, records, info=info, reset=True)

    async def tick(self, symbol: str = CALL) -> int:
        """One envelope changing `symbol`; its seq."""
        self.seq += 1
        await self._publish(self.seq - 1, [self._record(symbol)])
        return self.seq

    async def _publish(
        self, prev: int, records: list[dict[str, Any]], *, info: bytes | None = None,
        reset: bool = False,
    ) -> None:  # fmt: skip
        env = {
            "u": U, "epoch": self.epoch, "prev": prev, "seq": self.seq, "ts": WALL_US,
            "options": records, "underlying": None, "stats": None, "reset": reset,
        }  # fmt: skip
        full = [(r["symbol"], json.dumps(r).encode()) for r in records]
        pub = Publication(
            U, self.epoch, prev, self.seq, WALL_US, json.dumps(env).encode(), full, info, reset
        )
        await self.broker.publish([pub])


class Reader:
    """A strict client: keeps rows per channel and counts any sequence violation."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.at: dict[str, tuple[str, int]] = {}
        self.violations: list[str] = []
        self._frames_read = 0

    def read(self, wire: Wire) -> list[dict[str, Any]]:
        """The messages of frames not read yet, applied."""
        new: list[dict[str, Any]] = []
        for frame in wire.frames[self._frames_read :]:
            body = json.loads(frame_payload(frame))
            new.extend(body if isinstance(body, list) else [body])
        self._frames_read = len(wire.frames)
        for m in new:
            self._apply(m)
        self.messages.extend(new)
        return new

    def _apply(self, m: dict[str, Any]) -> None:
        ch = str(m.get("channel"))
        if m["type"] == "snapshot":
            self.rows[ch] = {r["symbol"]: dict(r) for r in m["data"]}
            self.at[ch] = (m["epoch"], m["seq"])
        elif m["type"] == "update":
            if self.at.get(ch) != (m["epoch"], m["prev"]):
                self.violations.append(
                    f"{ch}: at {self.at.get(ch)}, update {m['prev']}->{m['seq']}"
                )
                return
            for r in m["data"]:
                self.rows[ch].setdefault(r["symbol"], {}).update(r)
            self.at[ch] = (m["epoch"], m["seq"])

    def of_type(self, t: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == t]


class Bench:
    """One session on a real hub over `broker`, driven by hand."""

    def __init__(self, broker: GatedBroker, limits: Limits | None = None) -> None:
        self.broker = broker
        self.sched = ManualScheduler()
        self.hub = Hub(broker, clock=self.sched.time)
        self.wire = Wire()
        self.session = Session(
            self.hub, self.wire, self.wire.close, limits=limits or Limits(),
            clock=self.sched.time, wall_us=lambda: WALL_US, scheduler=self.sched,
        )  # fmt: skip
        self.reader = Reader()
        self.session.start()

    def send(self, request: dict[str, Any] | str) -> None:
        self.session.on_text(request if isinstance(request, str) else json.dumps(request))

    async def settle(self) -> list[dict[str, Any]]:
        """Let the hub's tasks and the due callbacks run until nothing moves; what arrived."""
        idle = 0
        while idle < 5:
            await asyncio.sleep(0)  # a turn of the loop for the feed's tasks, not a wait
            idle = 0 if self.sched.run() else idle + 1
        return self.reader.read(self.wire)

    async def cached_rows(self) -> dict[str, dict[str, Any]]:
        snap = await MemoryBroker.snapshot(self.broker, U)
        assert snap is not None
        return {k: json.loads(v) for k, v in snap.records.items()}

    async def aclose(self) -> None:
        self.session.release()
        await self.hub.aclose()
