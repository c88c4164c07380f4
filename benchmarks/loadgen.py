"""A WebSocket load generator: many clients in several processes, real sockets.

Each process runs uvloop and `clients / procs` picows connections spread over the gateway
URLs (round robin) and the channels (evenly). Every client checks the sequence
rule on its channel (a gap is `prev` != the last seq it applied), and measures,
per record it receives, receive time minus the record's `ts`. A fraction of the
clients read slowly (they sleep `slow_sleep_s` after each frame) to exercise the
gateway's slow-consumer path. Results are merged in the parent.

Clocks: a timed run (`LoadConfig.timed`) stamps latency samples with their receive
wall time, and every client's join (connect begun, first snapshot) is stamped too,
so that two runs started side by side (a live load and a crowd joining it at
`start_at`) can be cut into windows of one timeline.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

import msgspec
import numpy as np
import picows  # the `bench` extra; benchmarks/cli.py says how to install it when missing

SAMPLE_CAP = 200_000  # latency samples kept per process (a uniform reservoir)


@dataclass
class LoadConfig:
    urls: list[str]
    channels: list[str]
    clients: int
    seconds: float
    procs: int = 2
    slow_fraction: float = 0.0
    slow_sleep_s: float = 0.2
    measure_every: int = 10  # one client in this many measures latency per record
    connect_timeout_s: float = 30.0
    warmup_s: float = 2.0
    start_at: float | None = None  # wall time (time.time()) the clients begin connecting
    timed: bool = False  # keep (receive wall time, latency) samples in LoadResult.timed_ms


@dataclass
class LoadResult:
    connected: int = 0
    connect_errors: int = 0
    records: int = 0  # received by measuring clients
    updates_unmeasured: int = 0  # update messages received by the other clients
    measuring: int = 0
    frames: int = 0
    gaps: int = 0
    snapshots: int = 0
    snapshot_s: list[float] = field(default_factory=list)  # connect -> first snapshot
    fast_ms: list[float] = field(default_factory=list)  # latency samples, normal clients
    slow_ms: list[float] = field(default_factory=list)
    closes: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_s: float = 0.0  # the generator's own CPU, all processes
    error_kinds: dict[str, int] = field(default_factory=dict)
    # Wall times (s): each client's connect begun and its first snapshot.
    joins: list[tuple[float, float]] = field(default_factory=list)
    # (receive wall time s, latency ms) of normal clients, with `LoadConfig.timed`.
    timed_ms: list[tuple[float, float]] = field(default_factory=list)

    def merge(self, other: LoadResult) -> None:
        """Add `other` (another process's result) into this one; `seconds` is shared."""
        for f in fields(self):
            if f.name == "seconds":
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for k, n in theirs.items():
                    mine[k] = mine.get(k, 0) + n
            elif isinstance(mine, list):
                mine.extend(theirs)
            else:
                setattr(self, f.name, mine + theirs)


class _Rec(msgspec.Struct):
    ts: int = 0


class _Head(msgspec.Struct):
    """A message with its records skipped (msgspec does not build what it ignores)."""

    type: str
    channel: str = ""
    epoch: str = ""
    seq: int = 0
    prev: int = 0


class _Msg(_Head):
    data: list[_Rec] = msgspec.field(default_factory=list)


# Measuring clients decode every record's ts; the others only the message heads,
# so the generator's own CPU does not dominate what it measures.
_decode_full = msgspec.json.Decoder(_Msg | list[_Msg]).decode
_decode_head = msgspec.json.Decoder(_Head | list[_Head]).decode


_T = TypeVar("_T")


class _Reservoir(Generic[_T]):
    def __init__(self, cap: int, rng: random.Random) -> None:
        self.cap, self.rng, self.seen, self.items = cap, rng, 0, list[_T]()

    def add(self, v: _T) -> None:
        self.seen += 1
        if len(self.items) < self.cap:
            self.items.append(v)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.cap:
                self.items[j] = v


class _Listener(picows.WSListener):
    """One client: callbacks per frame, no coroutine per message (the generator
    must cost far less than the gateway it measures)."""

    def __init__(
        self, channel: str, slow: bool, measure: bool, cfg: LoadConfig, res: LoadResult,
        lat: _Reservoir[float], measure_from: float, timed: _Reservoir[tuple[float, float]] | None,
        began: float,
    ) -> None:  # fmt: skip
        self.subscribe = f'{{"op":"subscribe","id":1,"channels":["{channel}"]}}'.encode()
        self.slow, self.measure, self.cfg, self.res = slow, measure, cfg, res
        self.lat, self.measure_from, self.timed, self.began = lat, measure_from, timed, began
        self.epoch, self.seq, self.got_snapshot = "", -1, False
        self.t0 = time.monotonic()
        self.transport: Any = None

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        self.res.connected += 1
        transport.send(picows.WSMsgType.TEXT, self.subscribe)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type == picows.WSMsgType.CLOSE:
            code = int(frame.get_close_code())
            self.res.closes[code] = self.res.closes.get(code, 0) + 1
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != picows.WSMsgType.TEXT:
            return
        recv_us = time.time() * 1e6
        res = self.res
        res.frames += 1
        now = time.monotonic()
        payload = frame.get_payload_as_bytes()
        decoded = (_decode_full if self.measure else _decode_head)(payload)
        for m in decoded if isinstance(decoded, list) else [decoded]:
            if m.type == "snapshot":
                self.epoch, self.seq = m.epoch, m.seq
                if not self.got_snapshot:
                    self.got_snapshot = True
                    res.snapshots += 1
                    res.snapshot_s.append(now - self.t0)
                    res.joins.append((self.began, recv_us / 1e6))
            elif m.type == "update":
                if m.epoch != self.epoch or m.prev != self.seq:
                    res.gaps += 1
                self.epoch, self.seq = m.epoch, m.seq
                if now < self.measure_from:
                    continue
                if isinstance(m, _Msg):
                    res.records += len(m.data)
                    for r in m.data:
                        self.lat.add((recv_us - r.ts) / 1e3)
                        if self.timed is not None:
                            self.timed.add((recv_us / 1e6, (recv_us - r.ts) / 1e3))
                else:
                    res.updates_unmeasured += 1
        if self.slow:
            # A slow reader: stop reading the socket for a while after each frame.
            raw = transport.underlying_transport
            raw.pause_reading()
            asyncio.get_running_loop().call_later(self.cfg.slow_sleep_s, raw.resume_reading)


async def _client(
    url: str, channel: str, slow: bool, measure: bool, cfg: LoadConfig, res: LoadResult,
    lat: _Reservoir[float], measure_from: float, end: float,
    timed: _Reservoir[tuple[float, float]] | None,
) -> None:  # fmt: skip
    began = time.time()

    def factory() -> _Listener:
        return _Listener(channel, slow, measure, cfg, res, lat, measure_from, timed, began)

    try:
        # The TCP connect itself has no timeout in picows: a full accept backlog
        # would hold it for the kernel's SYN retries (minutes).
        transport, _ = await asyncio.wait_for(
            picows.ws_connect(
                factory,
                url,
                websocket_handshake_timeout=cfg.connect_timeout_s,
                max_frame_size=1 << 30,
            ),
            cfg.connect_timeout_s,
        )
    except Exception as exc:  # any failure to connect is counted by kind, never fatal
        res.connect_errors += 1
        kind = type(exc).__name__
        res.error_kinds[kind] = res.error_kinds.get(kind, 0) + 1
        return
    left = end - time.monotonic()
    try:
        await asyncio.wait_for(transport.wait_disconnected(), max(left, 0.01))
    except TimeoutError:
        transport.disconnect()


async def _proc_main(cfg: LoadConfig, index: int, count: int) -> LoadResult:
    res = LoadResult()
    cpu0 = time.process_time()
    rng = random.Random(index)
    fast, slow = _Reservoir[float](SAMPLE_CAP, rng), _Reservoir[float](SAMPLE_CAP // 4, rng)
    timed = _Reservoir[tuple[float, float]](SAMPLE_CAP, rng) if cfg.timed else None
    if cfg.start_at is not None:
        await asyncio.sleep(max(cfg.start_at - time.time(), 0.0))
    start = time.monotonic()
    end = start + cfg.warmup_s + cfg.seconds
    tasks = []
    for k in range(count):
        g = index + k * cfg.procs  # the client's global number
        url = cfg.urls[g % len(cfg.urls)]
        channel = cfg.channels[g % len(cfg.channels)]
        is_slow = (g % 1000) < cfg.slow_fraction * 1000
        measure = g % cfg.measure_every == 0
        res.measuring += measure
        tasks.append(
            _client(url, channel, is_slow, measure, cfg, res, slow if is_slow else fast,
                    start + cfg.warmup_s, end, None if is_slow else timed)
        )  # fmt: skip
    await asyncio.gather(*tasks)
    res.cpu_s = time.process_time() - cpu0
    res.fast_ms, res.slow_ms = fast.items, slow.items
    res.timed_ms = timed.items if timed is not None else []
    res.seconds = cfg.seconds
    return res


def _proc_entry(cfg: LoadConfig, index: int, count: int, out: Any) -> None:
    import uvloop

    try:
        out.put(uvloop.run(_proc_main(cfg, index, count)))
    except BaseException as exc:  # the parent must always get an answer
        failed = LoadResult(seconds=cfg.seconds, connect_errors=count)
        failed.error_kinds[f"generator crashed: {exc!r}"[:200]] = 1
        out.put(failed)
        raise


def run_load(cfg: LoadConfig) -> LoadResult:
    """Run the load in `cfg.procs` processes and merge their results."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    per = [
        cfg.clients // cfg.procs + (1 if i < cfg.clients % cfg.procs else 0)
        for i in range(cfg.procs)
    ]
    procs = [ctx.Process(target=_proc_entry, args=(cfg, i, n, q)) for i, n in enumerate(per)]
    for p in procs:
        p.start()
    wait = max((cfg.start_at or 0.0) - time.time(), 0.0)
    parts = [
        q.get(timeout=wait + cfg.seconds + cfg.warmup_s + cfg.connect_timeout_s + 60) for _ in procs
    ]
    for p in procs:
        p.join(10)
    out = LoadResult(seconds=cfg.seconds)
    for r in parts:
        out.merge(r)
    return out


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max), NaN when empty."""
    if not values:
        return (float("nan"),) * 3
    q = np.percentile(np.array(values), [50, 99, 100])
    return float(q[0]), float(q[1]), float(q[2])


def summary(r: LoadResult) -> dict[str, Any]:
    """The client-side figures of a run, rounded for a report line."""
    p50, p99, mx = percentiles(r.fast_ms)
    s50, s99, _ = percentiles(r.slow_ms)
    snap50, _, snap_max = percentiles(r.snapshot_s)
    return {
        "connected": r.connected, "connect_errors": r.connect_errors, "gaps": r.gaps,
        "snapshots": r.snapshots,
        "records_per_s_per_measuring_client": round(r.records / r.seconds / max(r.measuring, 1)),
        "frames_per_s": round(r.frames / r.seconds), "frames": r.frames,
        "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "max_ms": round(mx, 1),
        "slow_p50_ms": round(s50, 1), "slow_p99_ms": round(s99, 1),
        "first_snapshot_p50_s": round(snap50, 3), "first_snapshot_max_s": round(snap_max, 3),
        "loadgen_cpu_s": round(r.cpu_s, 2), "closes": r.closes, "connect_error_kinds": r.error_kinds,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.loadgen --url WS --channels A,B --clients N --seconds S`:
    run the load and print its summary as one JSON line (the lab bench runs it on the
    lab's client host)."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    p.add_argument("--url", action="append", required=True, help="gateway URL (repeatable)")
    p.add_argument("--channels", required=True, help="comma-separated channels, spread evenly")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--warmup-s", type=float, default=2.0)
    args = p.parse_args(argv)
    cfg = LoadConfig(args.url, args.channels.split(","), args.clients, args.seconds,
                     procs=args.procs, warmup_s=args.warmup_s)  # fmt: skip
    print(json.dumps(summary(run_load(cfg))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
