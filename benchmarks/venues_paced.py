"""`optionsfeed bench venues`, third part: the Massive adapter's pipeline at the live rate.

``paced``: the pipeline at `BUSY_RATE`, under a rest ratio (FeedBuffer's `rest_ratio`,
the `--rest-ratio` setting) of 0 (the default: processing takes the next batch at
once) and 1 (a rest when busy), alternating. The
venue runs in a process of its own (`VenueProcess`) and writes one frame of
`BUSY_RATE x interval` events every `interval` (0.5 ms; others through
`paced_main`'s `intervals`) for `PACED_SECONDS`, sleeping in between. Per run: this
process's CPU time / wall time, batches/s, events per batch, the mean
`Processor.apply` per batch, and the added delay of each event: from the venue's
write of its frame (`time.monotonic()` in the venue, just before the write) to the
moment the batch holding it is handed to the Processor (the same clock in this
process). Each hand-off notes the adapter's counters (`quotes + trades + dropped`);
the reader decodes a frame whole between two awaits, so the first hand-off whose
count reaches a frame's last event is the one that holds the frame
(`handoff_delays`). p50 and p99 are over the events.

The stream, the consumer and the source are those of the saturated figures
(venues_massive.py), in frames of one interval's events (`paced_stream`).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from optionsfeed.processing.processor import Processor
from optionsfeed.sources import feed
from optionsfeed.sources.massive import MassiveSource

from .massive_venue import EventStream, VenueProcess
from .venue_common import IngestRun, check_none_dropped, print_table, timed_run
from .venues_massive import BUSY_RATE, MassiveConsumer, build_stream, check_window, massive_source

PACED_SECONDS = 1.0  # how long the venue writes at BUSY_RATE
PACED_INTERVALS = (0.0005, 0.002)  # seconds between two frames: busy, and not


@dataclass(frozen=True, slots=True)
class RestSetting:
    """A paced run's source settings, `rest_ratio` and `max_rest_s` (the default, unless
    given), and its label."""

    label: str
    ratio: float
    max_rest_s: float | None = None

    def source(self, ws_url: str, rest_url: str) -> MassiveSource:
        """A MassiveSource of the bench's venue at these URLs, with this setting."""
        max_rest_s = feed.DEFAULT_MAX_REST_S if self.max_rest_s is None else self.max_rest_s
        return massive_source(ws_url, rest_url, rest_ratio=self.ratio, max_rest_s=max_rest_s)

    @property
    def title(self) -> str:
        """The label, with max_rest_s when the setting sets it."""
        if self.max_rest_s is None:
            return self.label
        return f"{self.label}, max_rest_s {self.max_rest_s * 1e3:g} ms"


REST_SETTINGS = (
    RestSetting("rest ratio 0 (default)", 0.0),
    RestSetting("rest ratio 1", 1.0),
)


@dataclass(frozen=True, slots=True)
class PacedRun(IngestRun):
    """One paced run (`paced`): an `IngestRun` whose span runs from `start_paced` to the
    adapter's taking the last event, and its CPU time is this process's, not the venue's.

    `apply_seconds`: of the span, in Processor.apply. `delay_p50` / `delay_p99`: over
    the events, the seconds from the venue's write of the event's frame to the hand-off
    of the batch holding it to the Processor (`handoff_delays`). `venue_late_p99`: how
    late the venue wrote its frames against their schedule (its pacing's accuracy).
    """

    apply_seconds: float
    delay_p50: float
    delay_p99: float
    venue_late_p99: float
    venue_cpu_seconds: float  # the venue process's, while it wrote

    @property
    def batches_per_s(self) -> float:
        """Batches handed to the Processor per second."""
        return self.batches / self.seconds


def handoff_delays(
    stream: EventStream, written: NDArray[np.float64], handoffs: list[tuple[float, int]]
) -> NDArray[np.float64]:
    """Per event of `stream`: seconds from the write of its frame to the hand-off of the
    batch holding it.

    `written[k]`: when frame k was written; `handoffs`: (time, stream events taken by
    then) of each batch, in order, on the same clock. The adapter decodes a frame
    whole between two awaits, so a batch holds frame k's events when it is the first
    whose count reaches the end of frame k. Raises RuntimeError when no batch holds
    the last frame, or a batch was handed over before its frame was written (clocks
    that differ).
    """
    sizes = np.array(stream.frame_events, dtype=np.int64)
    times = np.array([t for t, _ in handoffs], dtype=np.float64)
    taken = np.array([n for _, n in handoffs], dtype=np.int64)
    at = np.searchsorted(taken, np.cumsum(sizes), side="left")
    if not len(taken) or at[-1] >= len(taken):
        raise RuntimeError("no batch handed over the stream's last frame")
    delays = times[at] - written
    if delays.min() < 0.0:
        raise RuntimeError("a batch was handed over before its frame was written")
    return np.repeat(delays, sizes)


async def paced(
    stream: EventStream,
    venue: VenueProcess,
    setting: RestSetting,
    *,
    interval_s: float,
    limit_s: float = 60.0,
) -> PacedRun:
    """One run: a MassiveSource with `setting` on `venue`, which writes `stream` one frame
    every `interval_s`; each batch is applied to a fresh `Processor`.

    Raises TimeoutError when the adapter has not taken the last event within
    `limit_s`, RuntimeError when the venue fails or the adapter streams another
    window than the stream's.
    """
    source = setting.source(venue.ws_url, venue.rest_url)
    consumer = MassiveConsumer(source, Processor(), stream.events, handoffs=True)
    seconds, cpu_seconds = await timed_run(
        consumer, lambda: venue.start_paced(interval_s), name="bench-venues-massive-paced",
        limit_s=limit_s,
    )  # fmt: skip
    writes = await venue.writes(limit_s)
    check_window(source, stream)
    # The warm-up quote is counted in `taken`, before the stream's events.
    delays = handoff_delays(stream, writes.written, [(t, n - 1) for t, n in consumer.handoffs])
    p50, p99 = np.percentile(delays, [50, 99])
    due = writes.start + np.arange(len(writes.written)) * interval_s
    return PacedRun(
        stream.events, source.quotes + source.trades - 1, sum(source.dropped.values()),
        consumer.rows, consumer.batches, seconds, cpu_seconds, consumer.apply_seconds,
        float(p50), float(p99), float(np.percentile(writes.written - due, 99)),
        writes.cpu_seconds,
    )  # fmt: skip


async def bench_paced(
    stream: EventStream,
    runs: int,
    *,
    interval_s: float,
    settings: Sequence[RestSetting] = REST_SETTINGS,
) -> dict[RestSetting, list[PacedRun]]:
    """`runs` paced runs of each setting, alternating, against one `VenueProcess`.
    Raises ValueError when two settings are equal (their runs would be pooled)."""
    if len(set(settings)) != len(settings):
        raise ValueError(f"the same setting twice in {settings}")
    out: dict[RestSetting, list[PacedRun]] = {s: [] for s in settings}
    async with VenueProcess(stream) as venue:
        for _ in range(runs):
            for s in settings:
                out[s].append(await paced(stream, venue, s, interval_s=interval_s))
    return out


def paced_stream(interval_s: float, seconds: float = PACED_SECONDS) -> EventStream:
    """`seconds` of events at `BUSY_RATE`, in frames of what arrives in `interval_s`."""
    per_frame = max(1, round(BUSY_RATE * interval_s))
    return build_stream(
        max(1, round(BUSY_RATE * seconds / per_frame)) * per_frame, frame_events=per_frame
    )


def _paced_row(s: RestSetting, interval_s: float, rs: list[PacedRun]) -> tuple[str, ...]:
    def med(figure: Callable[[PacedRun], float]) -> float:
        return statistics.median(figure(r) for r in rs)

    return (
        s.title, f"{interval_s * 1e3:g} ms", f"{med(lambda r: r.cpu_share):.2f}",
        f"{med(lambda r: r.batches_per_s):,.0f}", f"{med(lambda r: r.events_per_batch):,.0f}",
        f"{med(lambda r: r.rows_share):.1%}",
        f"{med(lambda r: r.apply_seconds / max(r.batches, 1)) * 1e3:.2f} ms",
        f"{med(lambda r: r.delay_p50) * 1e3:.2f} ms", f"{med(lambda r: r.delay_p99) * 1e3:.2f} ms",
    )  # fmt: skip


def paced_main(
    runs: int,
    *,
    seconds: float = PACED_SECONDS,
    intervals: Sequence[float] = PACED_INTERVALS,
    settings: Sequence[RestSetting] = REST_SETTINGS,
) -> int:
    """Run every setting `runs` times (alternating) at each frame interval; print medians."""
    print(
        f"venues: Massive at the live rate, {BUSY_RATE:,} events/s for {seconds:g} s from a "
        f"venue process, one frame every {' / '.join(f'{i * 1e3:g}' for i in intervals)} ms; "
        f"each batch applied to a Processor; medians of {runs} runs, settings alternating "
        f"(max_rest_s = {feed.DEFAULT_MAX_REST_S * 1e3:g} ms unless shown)"
    )
    rows: list[tuple[str, ...]] = [("setting", "frame every", "CPU", "batches/s", "events/batch", "as rows",
             "apply/batch", "delay p50", "delay p99")]  # fmt: skip
    late = venue_cpu = 0.0
    for interval_s in intervals:
        stream = paced_stream(interval_s, seconds)
        results = asyncio.run(bench_paced(stream, runs, interval_s=interval_s, settings=settings))
        for s in settings:
            rs = results[s]
            check_none_dropped(s.title, rs, "events")
            rows.append(_paced_row(s, interval_s, rs))
            late = max(late, max(r.venue_late_p99 for r in rs))
            venue_cpu = max(venue_cpu, max(r.venue_cpu_seconds / r.seconds for r in rs))
    print_table(rows, right_aligned=range(1, len(rows[0])))
    print(
        "  CPU: this process's CPU time / wall time; the venue's process is not counted "
        f"(at most {venue_cpu:.2f} core), and wrote 99 % of its frames within "
        f"{late * 1e3:.2f} ms of their time. delay: per event, from the venue's write of its "
        "frame to the hand-off of the batch holding it to the Processor."
    )
    return 0
