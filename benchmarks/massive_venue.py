"""The bench's Massive: what it serves (`EventStream`) from the Massive fake, and that
fake in a process of its own (`VenueProcess`).

`serve(stream)` is the fake of the tests (tests/fakes/massive.py) listing the
stream's contracts on the stream's day; `warm_up` sends each connection one quote
once it has subscribed the whole window, and the fake's fast path then writes the
stream's frames: all at once (`Venue.write_frames`, the saturated ingest figures)
or paced (`Venue.write_paced`, the live-rate figures). For the paced figures the
venue runs in a process of its own, so that when the frames arrive does not depend
on the consumer's event loop, as with a real venue.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import TracebackType
from typing import Any, Self

from optionsfeed.aio import cancel_and_wait
from optionsfeed.model.contract import Contract
from tests.fakes.massive import Addresses, PacedWrites, Venue, VenueContract, snapshot_row

UNDERLYING = "SPY"  # the only underlying the venue lists
API_KEY = "bench-venues-key"
START_LIMIT_S = 60.0  # VenueProcess: the child's import, stream and server start
STOP_LIMIT_S = 10.0
VENUE = "the Massive venue process"


@dataclass(frozen=True, slots=True)
class EventStream:
    """What the local venue lists and sends, built once per bench run.

    `contracts`: every listed contract (and its snapshot quote), sorted by expiry, on
    `today` with the underlying at `spot` as of `spot_ns`; `rest_rows` and
    `snapshot_rows` are the venue's rows of them. `window`: the contracts the
    adapter streams (its own `choose_window`).
    `frames`: every frame of the stream as an unmasked WebSocket text frame, back
    to back; frame k ends at byte `frame_ends[k]` and holds `frame_events[k]`
    events. `sample` the text of the first frames (at least `DECODE_EVENTS`
    events), `single` the same events one per frame; `warmup` the text of one
    quote older than every streamed event.
    """

    contracts: tuple[VenueContract, ...]
    today: date
    spot: float
    spot_ns: int
    window: tuple[Contract, ...]
    frames: bytes
    frame_count: int
    events: int
    trades: int
    sample: list[str]
    single: list[str]
    warmup: str
    mean_bytes: float  # the frames' JSON per event
    frame_ends: tuple[int, ...]
    frame_events: tuple[int, ...]

    @property
    def subscriptions(self) -> set[str]:
        """The params the adapter subscribes: quotes and trades of the window."""
        return {f"{ch}.O:{c.symbol}" for c in self.window for ch in ("Q", "T")}

    @property
    def rest_rows(self) -> list[dict[str, Any]]:
        """The contracts endpoint's rows of every listed contract."""
        return [c.rest_row() for c in self.contracts]

    @property
    def snapshot_rows(self) -> list[dict[str, Any]]:
        """The chain snapshot's row of every listed contract."""
        return [snapshot_row(c, self.spot, self.spot_ns) for c in self.contracts]

    @property
    def expiries(self) -> int:
        """How many expiries the window spans."""
        return len({c.expiry for c in self.window})


def serve(stream: EventStream) -> Venue:
    """The Massive fake listing `stream`'s contracts on its day, for `API_KEY`; enter it
    with `async with`."""
    venue = Venue(
        api_key=API_KEY, spots={UNDERLYING: stream.spot}, contracts=stream.contracts,
        today=stream.today,
    )  # fmt: skip
    venue.spot_ns[UNDERLYING] = stream.spot_ns
    return venue


def subscribed(venue: Venue, stream: EventStream) -> bool:
    """Whether the newest authed connection has subscribed quotes and trades of the
    whole window."""
    clients = venue.authed()
    return bool(clients) and stream.subscriptions <= clients[-1].subs


async def warm_up(venue: Venue, stream: EventStream) -> None:
    """Forever: once a connection has subscribed the window, send it `stream.warmup`.

    The quote follows every acknowledgement, so a consumer that has it has read them
    all, and the stream's frames can start. Each connection gets it once (a venue
    serves one connection after another)."""
    warmed: set[int] = set()
    while True:
        await venue.until(
            lambda: subscribed(venue, stream) and venue.authed()[-1].id not in warmed, None
        )
        client = venue.authed()[-1]
        warmed.add(client.id)
        await client.ws.send_str(stream.warmup)


@contextlib.asynccontextmanager
async def warming(venue: Venue, stream: EventStream) -> AsyncIterator[None]:
    """`warm_up` in a task for the block; cancelled and awaited at its end."""
    task = asyncio.create_task(warm_up(venue, stream), name="bench-massive-warm-up")
    try:
        yield
    finally:
        await cancel_and_wait(task)


# -- the venue in a process of its own ---------------------------------------------------


async def _received(conn: Connection, limit_s: float | None, who: str) -> tuple[Any, ...]:
    """The next message on `conn`, waited for on the loop (a reader callback, no
    thread). Raises RuntimeError on an ("error", why) message, a closed pipe or
    nothing within `limit_s` (None: no limit)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), ready)
    try:
        async with asyncio.timeout(limit_s):
            await readable
    except TimeoutError:
        raise RuntimeError(f"{who}: nothing within {limit_s:g} s") from None
    finally:
        loop.remove_reader(conn.fileno())
    try:
        msg: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise RuntimeError(f"{who} closed its pipe") from None
    if msg[0] == "error":
        raise RuntimeError(f"{who}: {msg[1]}")
    return msg


async def _message(conn: Connection, tag: str, limit_s: float, who: str) -> tuple[Any, ...]:
    """The next message on `conn`, which must be `tag`: its fields after the tag. Raises
    RuntimeError as `_received` does, and on another tag."""
    msg = await _received(conn, limit_s, who)
    if msg[0] != tag:
        raise RuntimeError(f"{who}: expected {tag!r}, got {msg[0]!r}")
    return msg[1:]


async def _serve(stream: EventStream, conn: Connection) -> None:
    """The child's loop: serve; write the frames paced on ("pace", interval_s); end on
    ("stop",) or when the bench's end of the pipe closes."""
    async with serve(stream) as venue, warming(venue, stream):
        conn.send(("port", venue.port))
        while True:
            try:
                msg = await _received(conn, None, "the bench")
            except RuntimeError:
                return  # the bench is gone
            if msg[0] == "stop":
                return
            if msg[0] != "pace":
                conn.send(("error", f"unknown request {msg[0]!r}"))
                continue
            try:
                writes = venue.write_paced(stream.frames, stream.frame_ends, msg[1])
            except RuntimeError as exc:
                conn.send(("error", str(exc)))
                continue
            conn.send(("written", writes))


def _venue_entry(conn: Connection) -> None:
    try:
        tag, stream = conn.recv()
        if tag != "events" or not isinstance(stream, EventStream):
            raise RuntimeError(f"expected the events first, got {tag!r}")
        asyncio.run(_serve(stream, conn))
    except Exception as exc:
        conn.send(("error", f"{exc!r}"))
        raise


class VenueProcess(Addresses):
    """The Massive fake serving `stream` (`serve`, `warm_up`) in a child process (spawn);
    an async context manager that starts it, and on exit stops it (killed if it has
    not ended within `STOP_LIMIT_S`).

    Between the two, connect a `MassiveSource` to `ws_url` / `rest_url` (valid inside
    the block); once the
    warm-up quote came through, `start_paced` has the child write the stream's frames
    paced (`Venue.write_paced`) and `writes` returns when each was written.
    The child writes with `time.sleep` between frames, so the frames arrive on time
    whatever the consumer's loop is doing. Both processes read CLOCK_MONOTONIC
    (`time.monotonic()`), so the child's write times compare with the parent's.
    """

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.port = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._conn, self._child = self._ctx.Pipe()
        self._proc: SpawnProcess | None = None

    async def __aenter__(self) -> Self:
        self._proc = proc = self._ctx.Process(
            target=_venue_entry, args=(self._child,), name="bench-massive-venue", daemon=True
        )
        proc.start()
        self._child.close()
        try:
            # Over the pipe, not as the Process's argument: spawn writes its arguments
            # holding the child's end of that pipe open, so a child that dies before
            # reading them all (a script without the `__main__` guard) would leave
            # start() blocked for good. Here its death closes our pipe: EOF.
            try:
                self._conn.send(("events", self.stream))
            except (BrokenPipeError, ConnectionResetError):
                raise RuntimeError(f"{VENUE} ended before it took the stream") from None
            (self.port,) = await _message(self._conn, "port", START_LIMIT_S, VENUE)
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    def start_paced(self, interval_s: float) -> None:
        """Have the venue write the stream's frames, one every `interval_s`, from now."""
        self._conn.send(("pace", interval_s))

    async def writes(self, limit_s: float) -> PacedWrites:
        """When each frame was written (after `start_paced`); raises RuntimeError when
        the child failed or sent nothing within `limit_s`."""
        (writes,) = await _message(self._conn, "written", limit_s, VENUE)
        if not isinstance(writes, PacedWrites):
            raise RuntimeError(f"{VENUE} sent {type(writes).__name__}, not PacedWrites")
        return writes

    async def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.is_alive():
                self._conn.send(("stop",))
            await asyncio.to_thread(proc.join, STOP_LIMIT_S)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child is gone already
        finally:
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, STOP_LIMIT_S)
            self._conn.close()
