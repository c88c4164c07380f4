"""What the venue benches of `optionsfeed bench venues` share.

venues.py measures the Deribit adapter, venues_massive.py and venues_paced.py the
Massive one. Each builds its venue's stream, serves it from that venue's fake
(tests/fakes/) and says what "ready" and "the whole stream arrived" mean for its
adapter; the rest is here: the run record (`IngestRun`), the consumer that reads an
adapter's batches (`BatchConsumer`), the timed run (`timed_run`) and the tables.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from optionsfeed.aio import cancel_and_wait
from optionsfeed.sources.base import Source, SourceBatch

if TYPE_CHECKING:
    from optionsfeed.processing.processor import Processor

S = TypeVar("S", bound=Source)

# -- runs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestRun:
    """One ingest (or pipeline) run of `events` events (Deribit's: ticker messages).

    `taken + dropped == events` (drops by the adapter's checks, decoder or buffer; 0
    expected); `rows` is how many reached processing as rows: quote rows (at most one
    per contract per batch: a newer quote replaces a pending one) plus every trade.
    """

    events: int
    taken: int
    dropped: int
    rows: int
    batches: int
    seconds: float  # the first frame written -> the adapter has taken the last event
    cpu_seconds: float  # this process's CPU time over the same span

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds

    @property
    def rows_share(self) -> float:
        """The share of the events that reached processing as rows (1 = no conflation)."""
        return self.rows / self.events

    @property
    def cpu_share(self) -> float:
        """This process's CPU time / wall time (1.0 = one core busy all the time)."""
        return self.cpu_seconds / self.seconds

    @property
    def events_per_batch(self) -> float:
        """Events taken per batch (before conflation)."""
        return self.events / max(self.batches, 1)


def check_none_dropped(label: str, runs: Iterable[IngestRun], unit: str) -> None:
    """Raise RuntimeError, naming `label`, `unit` and the first such run, when one of
    `runs` dropped events or took fewer than it was sent: its figures would flatter."""
    bad = [r for r in runs if r.dropped or r.taken != r.events]
    if bad:
        raise RuntimeError(f"{label}: {unit} were dropped: {bad[0]}")


async def _ingest_and_pipeline(
    run: Callable[[bool], Awaitable[IngestRun]], runs: int
) -> dict[str, list[IngestRun]]:
    """`runs` runs of "ingest" (`run(False)`) and of "pipeline" (`run(True)`: each batch
    also applied to a Processor), alternating (noise spreads over both)."""
    out: dict[str, list[IngestRun]] = {"ingest": [], "pipeline": []}
    for _ in range(runs):
        for name in out:
            out[name].append(await run(name == "pipeline"))
    return out


# -- the consumer ----------------------------------------------------------------------


class BatchConsumer(abc.ABC, Generic[S]):
    """Reads `source.batches()` (`run`, in a task), applying each batch to `processor`
    when given, at `reference_us` plus the time since `run` began.

    `ready` is set once `_is_ready()` holds after a batch: what the venue sends before
    its stream (the listing, a warm-up) came through. `done` is set, and `run` returns,
    once `_arrived()` says the batches so far hold the whole stream; `finished_at`
    (`time.perf_counter()`) is when. From `ready` on, each batch counts in `batches`,
    its quote and trade rows in `rows` and its `Processor.apply` in `apply_seconds`;
    `listings` counts every listing.
    """

    def __init__(self, source: S, processor: Processor | None, reference_us: int) -> None:
        self.source = source
        self.processor = processor
        self.reference_us = reference_us
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.started_at = self.finished_at = self.apply_seconds = 0.0
        self.listings = self.rows = self.batches = 0

    async def run(self) -> None:
        """Consume until the whole stream arrived; raises the source's failure."""
        self.started_at = time.perf_counter()
        batches = cast(AsyncGenerator[SourceBatch, None], self.source.batches())
        async with contextlib.aclosing(batches) as feed:
            async for batch in feed:
                # No await between the buffer's take and `_arrived`: the adapter's
                # state there says what the batches so far hold.
                arrived = self._arrived()
                self._apply(batch)
                if arrived:
                    self.finished_at = time.perf_counter()
                    self.done.set()
                    return
                if self._is_ready():
                    self.ready.set()

    @abc.abstractmethod
    def _arrived(self) -> bool:
        """Called as each batch is handed over, before it is applied: whether the
        batches so far hold the venue's whole stream."""

    @abc.abstractmethod
    def _is_ready(self) -> bool:
        """Whether what the venue sends before its stream has come through."""

    def _apply(self, batch: SourceBatch) -> None:
        if self.processor is not None:
            t0 = time.perf_counter()
            self.processor.apply(batch, self.reference_us + int((t0 - self.started_at) * 1e6))
            if self.ready.is_set():
                self.apply_seconds += time.perf_counter() - t0
        self.listings += len(batch.listings)
        if self.ready.is_set():
            self.batches += 1
            self.rows += sum(len(q.symbols) for q in batch.quotes)
            self.rows += sum(len(t.symbols) for t in batch.trades)


async def _until(condition: Coroutine[Any, Any, object], task: asyncio.Task[None]) -> None:
    """Return once `condition` returns; raise the consumer's failure if it ends first (a
    source that cannot start ends with SourceError, rather than a wait until the limit)."""
    waiter = asyncio.create_task(condition)
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(waiter)
    if not waiter.done() or waiter.cancelled():
        task.result()
        raise RuntimeError("the consumer ended before the stream was taken")
    waiter.result()  # raises the condition's failure (a timeout)


async def timed_run(
    consumer: BatchConsumer[Any],
    send: Callable[[], None],
    *,
    name: str,
    limit_s: float,
    subscribed: Callable[[], Coroutine[Any, Any, object]] | None = None,
) -> tuple[float, float]:
    """Run `consumer` in a task named `name`; once `subscribed()` (when given: it returns
    when the venue has the adapter's subscriptions) and then `consumer.ready`, call
    `send` (the venue starts its stream) and wait until `consumer.done`.

    Returns the seconds from `send` to the consumer's `finished_at`, and this
    process's CPU seconds from `send` to `done`. Raises TimeoutError when it all takes
    longer than `limit_s`, the consumer's failure (or RuntimeError) when the consumer
    ends first. The task is cancelled and awaited on every way out.
    """
    task = asyncio.create_task(consumer.run(), name=name)
    try:
        async with asyncio.timeout(limit_s):
            if subscribed is not None:
                await _until(subscribed(), task)
            await _until(consumer.ready.wait(), task)
            cpu0, t0 = time.process_time(), time.perf_counter()
            send()
            await _until(consumer.done.wait(), task)
            cpu1 = time.process_time()
        await task
    finally:
        await cancel_and_wait(task)
    return consumer.finished_at - t0, cpu1 - cpu0


# -- tables ----------------------------------------------------------------------------


def decode_row(stage: str, us: float, reference: float | None) -> tuple[str, ...]:
    """A decode stage's table row: µs per event and, given a `reference` rate
    (events/s), the events/s that sustains and that against `reference`."""
    if reference is None:
        return (stage, f"{us:.2f}", "", "", "", "")
    return (stage, f"{us:.2f}", f"{1e6 / us:,.0f}", f"{1e6 / us / reference:.1f}", "", "")


def _ingest_row(stage: str, runs: Sequence[IngestRun], reference: float) -> tuple[str, ...]:
    rate = statistics.median(r.rate for r in runs)
    share = statistics.median(r.rows_share for r in runs)
    cpu = statistics.median(r.cpu_share for r in runs)
    per_batch = statistics.median(r.events_per_batch for r in runs)
    return (
        stage, f"{1e6 / rate:.2f}", f"{rate:,.0f}", f"{rate / reference:.1f}",
        f"{share:.1%} as rows (batches of ~{per_batch:,.0f})", f"{cpu:.2f}",
    )  # fmt: skip


def print_ingest_table(
    run: Callable[[bool], Awaitable[IngestRun]],
    runs: int,
    *,
    unit: str,
    versus: str,
    reference: float,
    decode_rows: Sequence[tuple[str, ...]],
) -> None:
    """Run "ingest" and "pipeline" `runs` times each (`_ingest_and_pipeline`) and print
    the venue's table: `decode_rows` (`decode_row`), then per stage the medians of
    its runs: µs per `unit`, `unit`s/s, that against `reference` (column `versus`),
    the share that reached processing as rows (and the events per batch), the CPU
    share. Raises RuntimeError when a run dropped any (`check_none_dropped`).
    """
    results = asyncio.run(_ingest_and_pipeline(run, runs))
    for name, rs in results.items():
        check_none_dropped(name, rs, f"{unit}s")
    rows: list[tuple[str, ...]] = [
        ("stage", f"µs/{unit}", f"{unit}s/s", versus, "reached processing", "CPU")
    ]
    rows += decode_rows
    rows += [_ingest_row(name, rs, reference) for name, rs in results.items()]
    print_table(rows, right_aligned=range(1, 4))


def print_table(rows: Sequence[Sequence[str]], right_aligned: range) -> None:
    """Print `rows` indented by two, columns two apart, the columns of `right_aligned`
    aligned right and the others left (no trailing spaces)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [
            c.rjust(w) if i in right_aligned else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  " + "  ".join(cells).rstrip())
