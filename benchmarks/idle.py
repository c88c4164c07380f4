"""What an idle WebSocket connection costs a gateway process, in RSS.

Runs `optionsfeed up` (SPY only, a slow simulated rate), opens one connection to
warm the process up, then `n` more that read their `welcome` and stay silent,
and reports the gateway's RSS growth per connection. Median of `runs`.
"""

from __future__ import annotations

import asyncio
import statistics

from tests.ports import free_port

from .gateway import _rss_kb
from .spawn import optionsfeed_proc

DEFAULT_CONNECTIONS = 2000


async def _one(n: int) -> float:
    import aiohttp

    port = free_port()
    base = f"127.0.0.1:{port}"
    with optionsfeed_proc(
        ["up", "--port", str(port), "--underlyings", "SPY", "--rate", "200"]
    ) as p:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            for _ in range(150):
                try:
                    async with s.get(f"http://{base}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            warm = await s.ws_connect(f"ws://{base}/ws")
            await warm.receive()
            await asyncio.sleep(1.0)
            before = _rss_kb(p.pid)
            conns = []
            for _ in range(n):
                ws = await s.ws_connect(f"ws://{base}/ws")
                await ws.receive()  # its welcome
                conns.append(ws)
            await asyncio.sleep(2.0)  # let the gateway settle (heartbeat timers armed)
            after = _rss_kb(p.pid)
            for ws in [warm, *conns]:
                await ws.close()
    return (after - before) / n


def main(runs: int, n: int = DEFAULT_CONNECTIONS) -> int:
    """Print KiB of gateway RSS per idle connection (median of `runs`); exit status 0."""
    per = [asyncio.run(_one(n)) for _ in range(runs)]
    print(
        f"idle connections: {statistics.median(per):.1f} KiB each "
        f"(median of {runs} runs of {n}; all: {', '.join(f'{x:.1f}' for x in per)})"
    )
    return 0
