"""`GET /metrics` lines of a processor (Prometheus text format): leases, publishing,
and the lag of each processing stage behind the source's `ts` (stages.py).

Read from the service's plain counters at scrape time: no metrics object is touched
per batch.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..pricing.boundary_table import TABLES
from .service import ProcessingService


class ProcessorMetrics:
    """The registry of one processor; `render()` is the scrape's body."""

    def __init__(self, service: ProcessingService) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ProcessorCollector(service))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ProcessorCollector(Collector):
    def __init__(self, service: ProcessingService) -> None:
        self.svc = service

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        st = svc.status
        owned = GaugeMetricFamily(
            "optionsfeed_leases_owned",
            "1 for each underlying whose lease this processor holds, 0 for those it stands by "
            "for (prices without owning)",
            labels=["underlying"],
        )
        mine = set(svc.leases.owned()) if svc.leases is not None else set(svc.processor.chains)
        priced = svc.process if svc.leases is not None else set(svc.processor.chains)
        for u in sorted(priced | mine):
            owned.add_metric([u], 1 if u in mine else 0)
        yield owned
        if svc.leases is not None:
            yield GaugeMetricFamily(
                "optionsfeed_processors", "Live processors this one sees (itself included)",
                value=len(svc.members),
            )  # fmt: skip
            yield CounterMetricFamily(
                "optionsfeed_lease_handovers",
                "Leases released to the underlying's preferred processor (rebalancing)",
                value=svc.placement.handovers,
            )
            yield CounterMetricFamily(
                "optionsfeed_lease_gains", "Leases gained (each starts a new epoch)",
                value=svc.leases.gains,
            )  # fmt: skip
            yield CounterMetricFamily(
                "optionsfeed_lease_losses", "Leases lost: lapsed, refused on renewal or fenced",
                value=svc.leases.losses,
            )  # fmt: skip
        yield CounterMetricFamily(
            "optionsfeed_publications", "Publications applied by the broker", value=st.published
        )
        yield CounterMetricFamily(
            "optionsfeed_records_published",
            "Records (option rows, underlying, stats) in the publications applied",
            value=st.records,
        )
        yield CounterMetricFamily(
            "optionsfeed_publications_fenced",
            "Publications the broker refused because this processor did not hold the lease",
            value=st.fenced,
        )
        yield GaugeMetricFamily(
            "optionsfeed_boundary_table_groups",
            f"American exercise-boundary tables held (rate, yield, expiry bucket; at most "
            f"{TABLES.capacity})", value=TABLES.groups,
        )  # fmt: skip
        yield CounterMetricFamily(
            "optionsfeed_boundary_table_resets",
            "Times the boundary tables were full and started again (their rows solved anew): "
            "steadily rising, this processor prices too many American underlyings",
            value=TABLES.resets,
        )
        for stage, h in svc.stages.stages.items():
            yield HistogramMetricFamily(
                f"optionsfeed_processing_{stage}_seconds",
                f"Source event ts to its publication {_STAGE_DOCS[stage]}",
                buckets=h.cumulative(),
                sum_value=h.total,
            )


_STAGE_DOCS = {
    "taken": "'s batch taken from the source",
    "priced": " priced and encoded",
    "published": " applied by the broker",
}
