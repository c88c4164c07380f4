"""`GET /metrics` (Prometheus text format) for one gateway process.

Counters that sessions keep as plain integers are summed at scrape time, so the
hot path never touches a metrics object per message. Latency histograms are
observed once per channel update (not per client): end to end is the time from
the source event's `ts` to the moment the gateway routes it; broker lag is the
same measured when the envelope leaves the broker subscription.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..clock import LATENCY_BUCKETS_S
from .hub import Hub
from .session import Session


class GatewayView(Protocol):
    """What a scrape reads of a gateway process (server.Gateway is one)."""

    @property
    def sessions(self) -> Collection[Session]: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def totals(self) -> dict[str, int]: ...

    @property
    def closes(self) -> dict[int, int]: ...


_BUCKETS_S = LATENCY_BUCKETS_S  # the processor's stages use the same


class GatewayMetrics:
    """The registry of one process and its histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.end_to_end = Histogram(
            "optionsfeed_end_to_end_seconds",
            "Envelope ts to its frames written to every subscribed client",
            buckets=_BUCKETS_S,
            registry=self.registry,
        )
        self.broker_lag = Histogram(
            "optionsfeed_broker_lag_seconds",
            "Envelope ts to its arrival from the broker subscription",
            buckets=_BUCKETS_S,
            registry=self.registry,
        )

    def attach(self, gateway: GatewayView) -> None:
        self.registry.register(_GatewayCollector(gateway))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GatewayCollector(Collector):
    def __init__(self, gateway: GatewayView) -> None:
        self.gw = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gw
        sessions = list(gw.sessions)
        yield GaugeMetricFamily(
            "optionsfeed_connections", "Open WebSocket connections", value=len(sessions)
        )
        yield GaugeMetricFamily(
            "optionsfeed_subscriptions",
            "Channels subscribed over all connections",
            value=sum(len(s.members) for s in sessions),
        )
        yield GaugeMetricFamily(
            "optionsfeed_broker_subscriptions",
            "Underlyings this process is subscribed to in the broker",
            value=len(gw.hub.feeds),
        )
        yield GaugeMetricFamily(
            "optionsfeed_slow_connections",
            "Connections currently conflating (socket not draining)",
            value=sum(1 for s in sessions if s.slow_since is not None),
        )
        yield GaugeMetricFamily(
            "optionsfeed_flush_interval_seconds",
            "How long frames gather before they are written (0: at once; pacing.py)",
            value=gw.hub.flush_delay_s,
        )
        yield GaugeMetricFamily(
            "optionsfeed_loop_utilization",
            "Share of the last pacing window the process spent on CPU",
            value=gw.hub.pacer.utilization,
        )
        totals = gw.totals
        for name, doc, live in (
            ("frames_out", "WebSocket frames written", sum(s.frames_out for s in sessions)),
            ("bytes_out", "Bytes written to WebSockets", sum(s.bytes_out for s in sessions)),
            ("conflated_records", "Record updates merged instead of sent",
             sum(s.conflated for s in sessions)),
        ):  # fmt: skip
            yield CounterMetricFamily(f"optionsfeed_{name}", doc, value=totals[name] + live)
        closes = CounterMetricFamily(
            "optionsfeed_server_closes", "Connections the server closed", labels=["code"]
        )
        for code, n in sorted(gw.closes.items()):
            closes.add_metric([str(code)], n)
        yield closes
        for name, n in sorted(gw.hub.stats.items()):
            yield CounterMetricFamily(f"optionsfeed_feed_{name}", f"Feed events: {name}", value=n)
