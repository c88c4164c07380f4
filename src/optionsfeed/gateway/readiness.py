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

ANY_TIMEOUT_S = 0.4
EVERY_TIMEOUT_S = 0.4


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
        # Within a load balancer's check timeout (HAProxy's is 1 s in lab/haproxy.cfg)
        # even when a node hangs: any node first, then the rest at once.
        try:
            await asyncio.wait_for(self.broker.ping(every=False), ANY_TIMEOUT_S)
        except (BrokerUnavailable, TimeoutError) as exc:
            self.degraded = []
            return f"broker {self.broker.url} unreachable: {exc or 'timeout'}"
        every, stale = await asyncio.gather(
            asyncio.wait_for(self.broker.ping(), EVERY_TIMEOUT_S),
            asyncio.wait_for(self._stale(), EVERY_TIMEOUT_S),
            return_exceptions=True,
        )
        notes: list[str] = []
        if isinstance(every, BaseException):
            notes.append(f"part of the broker does not answer: {every or 'timeout'}")
        if isinstance(stale, BaseException):
            notes.append(f"cannot read every underlying's state: {stale or 'timeout'}")
        else:
            notes += stale
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
