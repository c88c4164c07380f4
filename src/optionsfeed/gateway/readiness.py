"""A gateway's `/readyz`: should a load balancer send this process clients?

Gateways are interchangeable and share one broker, so trouble they all share (a shard
failing over, an underlying whose processor stalled) is no reason for any of them to
leave the rotation: if every gateway answered 503 the load balancer would mark them all
down and, with `on-marked-down shutdown-sessions`, cut every client, for data that no
gateway could serve better. Clients see such trouble where it is, on the records
(`stale` flags) and in the resnapshot after a failover. So a gateway is not ready
only when it cannot reach the broker at all (this host is cut off: the others serve),
and reports shared trouble in the body as `degraded`, with status 200.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..broker.base import Broker
from ..clock import wall_clock_us
from ..errors import BrokerUnavailable

PING_TIMEOUT_S = 1.0


class GatewayReadiness:
    """The readiness check of a gateway process (`await check()`: None when ready)."""

    def __init__(
        self, broker: Broker, fresh_within_s: float, clock: Callable[[], int] = wall_clock_us
    ) -> None:
        self.broker = broker
        self.fresh_within_s = fresh_within_s
        self.clock = clock
        self.degraded: list[str] = []  # shared trouble seen by the last check

    async def __call__(self) -> str | None:
        notes: list[str] = []
        try:
            await asyncio.wait_for(self.broker.ping(every=False), PING_TIMEOUT_S)
        except (BrokerUnavailable, TimeoutError) as exc:
            self.degraded = []
            return f"broker {self.broker.url} unreachable: {exc or 'timeout'}"
        try:
            await asyncio.wait_for(self.broker.ping(), PING_TIMEOUT_S)
        except (BrokerUnavailable, TimeoutError) as exc:
            notes.append(f"part of the broker does not answer: {exc or 'timeout'}")
        try:
            notes += await asyncio.wait_for(self._stale(), PING_TIMEOUT_S)
        except (BrokerUnavailable, TimeoutError) as exc:
            notes.append(f"cannot read every underlying's state: {exc or 'timeout'}")
        self.degraded = notes
        return None

    async def _stale(self) -> list[str]:
        now = self.clock()
        out = []
        for name in await self.broker.underlyings():
            meta = await self.broker.meta(name)
            if meta is None:
                continue
            age = (now - meta.updated_us) / 1e6
            if age > self.fresh_within_s:
                out.append(
                    f"{name}: newest data is {age:.1f} s old (limit {self.fresh_within_s:g} s)"
                )
        return out

    def details(self) -> dict[str, Any]:
        """The `/readyz` body's `degraded` list, when there is shared trouble."""
        return {"degraded": self.degraded} if self.degraded else {}
