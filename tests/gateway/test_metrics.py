"""`/metrics` reports what the gateway is doing, in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .conftest import System, of_type
from .test_stream import follow

Connect = Callable[[], Any]


async def scrape(system: System) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{system.http}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {
        s.name + ("" if not s.labels else str(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def test_metrics_count_connections_subscriptions_frames_and_latency(
    system: System, connect: Connect
) -> None:
    before = await scrape(system)
    assert before["optionsfeed_connections"] == 0
    c = await connect()
    await c.send({"op": "subscribe", "id": 1, "channels": ["chain.SPY", "stats.SPY"]})
    await c.next(of_type("ack"))
    await follow(c, {}, 1.0)
    m = await scrape(system)
    assert m["optionsfeed_connections"] == 1
    assert m["optionsfeed_subscriptions"] == 2
    assert 0 <= m["optionsfeed_flush_interval_seconds"] <= 0.1
    assert m["optionsfeed_loop_utilization"] > 0  # the process worked during the window
    assert m["optionsfeed_broker_subscriptions"] == 1
    assert m["optionsfeed_frames_out_total"] > 10
    assert m["optionsfeed_bytes_out_total"] > m["optionsfeed_frames_out_total"]
    assert m["optionsfeed_end_to_end_seconds_count"] > 10
    assert (
        0 < m["optionsfeed_end_to_end_seconds_sum"] / m["optionsfeed_end_to_end_seconds_count"] < 1
    )
    assert m["optionsfeed_broker_lag_seconds_count"] > 10
