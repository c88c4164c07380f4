"""Latency by stage, read from the processor's and a gateway's `/metrics` histograms.

Every stage is a lag behind the source event's `ts` on the one wall clock of this
machine: taken by the processor, priced, applied by Redis (the processor's
`optionsfeed_processing_*_seconds`), out of the broker subscription at a gateway
(`optionsfeed_broker_lag_seconds`), written to every client
(`optionsfeed_end_to_end_seconds`). Quantiles are interpolated within buckets as
Prometheus's `histogram_quantile` does, so they are as fine as the buckets (0.25 ms
to 5 s, clock.LATENCY_BUCKETS_S). Counts are differences between two scrapes, so
only the measured span counts.
"""

from __future__ import annotations

import math
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

STAGES = {
    "taken": "optionsfeed_processing_taken_seconds",
    "priced": "optionsfeed_processing_priced_seconds",
    "in_redis": "optionsfeed_processing_published_seconds",
    "at_gateway": "optionsfeed_broker_lag_seconds",
    "written": "optionsfeed_end_to_end_seconds",
}

Buckets = dict[str, list[tuple[float, float]]]  # histogram -> (upper bound, cumulative count)


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    """Return once `url` answers (a process's HTTP server is up), or raise after
    `timeout_s`."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def scrape(*urls: str) -> Buckets:
    """The latency histograms of the `/metrics` pages at `urls` (missing ones skipped)."""
    out: Buckets = {}
    for url in urls:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        for fam in text_string_to_metric_families(text):
            if fam.type != "histogram" or fam.name not in STAGES.values():
                continue
            out[fam.name] = sorted(
                (float(s.labels["le"]), s.value) for s in fam.samples if s.name.endswith("_bucket")
            )
    return out


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The `q` quantile of cumulative `buckets` (upper bound, count), in the bounds' unit."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: as Prometheus, that bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def stage_table(before: Buckets, after: Buckets) -> dict[str, list[float]]:
    """Per stage, [p50, p99] in ms over what was observed between the two scrapes."""
    out = {}
    for stage, name in STAGES.items():
        if name not in after:
            continue
        start = dict(before.get(name, []))
        diff = [(b, c - start.get(b, 0.0)) for b, c in after[name]]
        out[stage] = [round(quantile(diff, q) * 1e3, 2) for q in (0.5, 0.99)]
    return out
