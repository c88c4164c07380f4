"""Clients of the lab, run on its client host: `python -m tests.lab.probe --url WS`.

Each client subscribes its channels, applies every message strictly (a snapshot
replaces a channel's rows; an update applies only on the `prev` it holds) and, when
the connection ends, reconnects (through the load balancer) and resubscribes with
`resume` from where it stands. At the end every client compares its rows with a
fresh snapshot read through the same path. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp


class Probe:
    def __init__(self, url: str, channels: list[str]) -> None:
        self.url = url
        self.channels = channels
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.at: dict[str, tuple[str, int]] = {}
        self.violations: list[str] = []
        self.snapshots = 0
        self.updates = 0
        self.resumed = 0
        self.connections = 0
        self.closes: dict[str, int] = {}
        self.nodes: set[str] = set()
        self.awaiting: int | None = None
        # Per channel: the wall time of its last update, and its longest silence
        # between two updates (seconds, and the wall time the silence ended).
        self.last_at: dict[str, float] = {}
        self.silence: dict[str, tuple[float, float]] = {}

    def apply(self, m: dict[str, Any]) -> None:
        t = m.get("type")
        if t == "welcome":
            self.nodes.add(str(m.get("node")))
        elif t == "ack" and m.get("id") == self.awaiting:
            self.awaiting = None
        elif t == "snapshot" and self.awaiting is None:
            ch = m["channel"]
            self.rows[ch] = {_key(r): dict(r) for r in m["data"]}
            self.at[ch] = (m["epoch"], m["seq"])
            self.snapshots += 1
        elif t == "update" and self.awaiting is None:
            ch = m["channel"]
            if self.at.get(ch) != (m["epoch"], m["prev"]):
                self.violations.append(
                    f"{ch}: at {self.at.get(ch)}, update {m['prev']}->{m['seq']}"
                )
                return
            for r in m["data"]:
                self.rows[ch].setdefault(_key(r), {}).update(r)
            self.at[ch] = (m["epoch"], m["seq"])
            self.updates += 1
            now = time.time()
            if ch in self.last_at and now - self.last_at[ch] > self.silence.get(ch, (0.0, 0.0))[0]:
                self.silence[ch] = (now - self.last_at[ch], now)
            self.last_at[ch] = now
        elif t == "error":
            self.violations.append(f"error: {m}")

    async def run(self, seconds: float, rid: int) -> None:
        end = time.monotonic() + seconds
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < end:
                try:
                    async with http.ws_connect(self.url, max_msg_size=0, heartbeat=None) as ws:
                        self.connections += 1
                        resume = {c: {"epoch": e, "seq": s} for c, (e, s) in self.at.items()}
                        self.resumed += len(resume) if self.connections > 1 else 0
                        self.awaiting = rid
                        await ws.send_json({"op": "subscribe", "id": rid, "channels": self.channels,
                                            "resume": resume})  # fmt: skip
                        while time.monotonic() < end:
                            msg = await ws.receive(timeout=max(0.05, end - time.monotonic()))
                            if msg.type is not aiohttp.WSMsgType.TEXT:
                                code = str(ws.close_code)
                                self.closes[code] = self.closes.get(code, 0) + 1
                                break
                            body = json.loads(msg.data)
                            for m in body if isinstance(body, list) else [body]:
                                self.apply(m)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    self.closes["error"] = self.closes.get("error", 0) + 1
                    await asyncio.sleep(0.2)

    async def compare(self, base: str) -> list[str]:
        """Channels whose rows differ from the cache (REST), at the same seq or later."""
        wrong = []
        async with aiohttp.ClientSession() as http:
            for ch in self.channels:
                if not ch.startswith("chain."):
                    continue  # the REST chain holds option rows only
                u = ch.split(".")[1]
                async with http.get(f"{base}/api/v1/chain/{u}") as r:
                    snap = await r.json()
                cached = {_key(x): x for x in snap["data"]}
                mine = self.rows.get(ch, {})
                # Rows the client holds must match wherever the cache is not newer.
                stale = [
                    k
                    for k, row in mine.items()
                    if cached.get(k, {}).get("ts", 0) == row.get("ts") and cached[k] != row
                ]
                if not mine or stale:
                    wrong.append(f"{ch}: {len(mine)} rows, {len(stale)} differ")
        return wrong


def _key(r: dict[str, Any]) -> str:
    return str(r.get("symbol", r.get("underlying")))


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--channels", default="chain.SPY,chain.QQQ,stats.SPY")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    channels = args.channels.split(",")
    probes = [Probe(args.url, channels) for _ in range(args.clients)]
    await asyncio.gather(*(pr.run(args.seconds, i + 1) for i, pr in enumerate(probes)))
    base = args.url.replace("ws://", "http://").rsplit("/ws", 1)[0]
    wrong = []
    for pr in probes:
        wrong += await pr.compare(base) if pr.rows else ["a client has no rows"]
    print(json.dumps({
        "clients": len(probes),
        "snapshots": sum(pr.snapshots for pr in probes),
        "updates": sum(pr.updates for pr in probes),
        "violations": [v for pr in probes for v in pr.violations][:20],
        "connections": sum(pr.connections for pr in probes),
        "resumed_channels": sum(pr.resumed for pr in probes),
        "closes": {k: sum(pr.closes.get(k, 0) for pr in probes)
                   for k in {k for pr in probes for k in pr.closes}},
        "nodes": sorted({n for pr in probes for n in pr.nodes}),
        "differ": wrong[:20],
        # Per channel, the earliest of the clients' last updates (wall time).
        "last_update": {ch: min((pr.last_at.get(ch, 0.0) for pr in probes), default=0.0)
                        for ch in channels},
        # Per channel, the longest silence any client saw: [seconds, wall time it ended].
        "longest_silence": {ch: max((pr.silence[ch] for pr in probes if ch in pr.silence),
                                    default=(0.0, 0.0)) for ch in channels},
    }))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
