"""`optionsfeed bench lab`: fan-out across hosts, through HAProxy, on one Redis and on a cluster.

Brings up the multi-host lab (tests/lab/lab.py: network namespaces on 198.18.0.0/24,
a processor, three gateways, HAProxy, a client host; needs root) once with a Redis
Cluster of six nodes and once with one Redis, alternating, and runs the load
generator (benchmarks/loadgen.py) on the client host against HAProxy. Reports the
clients' latency (receive time minus record `ts`), records/s, gaps, and per gateway
the frames it wrote and its CPU per frame (user + system, from /proc, over the
measured run), plus HAProxy's CPU. Every host shares this machine's cores: the
figures compare the two brokers under the same load, they are not a capacity.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.lab.lab import CLIENT, GATEWAYS, LB, Lab, available

CHANNELS = ",".join(f"chain.{u}" for u in ("SPY", "QQQ", "AAPL", "TSLA", "NVDA"))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _frames_out(lab: Lab, gateway: str) -> float:
    text = lab.http_get(gateway, "/metrics")
    m = re.search(r"^optionsfeed_frames_out_total ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _run(kind: str, workdir: Path, *, clients: int, seconds: float, rate: int) -> dict[str, Any]:
    with Lab(workdir, rate=rate, cluster=kind == "cluster") as lab:
        time.sleep(2.0)  # the gateways' broker subscriptions settle
        pids = {gw: lab.pid(gw) for gw in GATEWAYS}
        frames0 = {gw: _frames_out(lab, gw) for gw in GATEWAYS}
        lb0 = _cpu_s(lab.pid(LB[0]))
        warmup = 2.0
        t_cpu = time.monotonic()
        # The generator connects, warms up for `warmup` seconds, then measures:
        # gateway CPU and frames are taken over the same whole span.
        cpu0 = {gw: _cpu_s(pid) for gw, pid in pids.items()}
        out = lab.exec(CLIENT[0], [sys.executable, "-m", "benchmarks.loadgen", "--url", lab.url,
                                   "--channels", CHANNELS, "--clients", str(clients),
                                   "--seconds", str(seconds), "--warmup-s", str(warmup)],
                       timeout=seconds + warmup + 120)  # fmt: skip
        wall = time.monotonic() - t_cpu
        cpu = {gw: _cpu_s(pid) - cpu0[gw] for gw, pid in pids.items()}
        frames = {gw: _frames_out(lab, gw) - frames0[gw] for gw in GATEWAYS}
        lb_cpu = _cpu_s(lab.pid(LB[0])) - lb0
    client: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    per_gw = {
        gw: {
            "frames": int(frames[gw]),
            "cpu_cores": round(cpu[gw] / wall, 2),
            "cpu_us_per_frame": round(cpu[gw] / max(frames[gw], 1) * 1e6, 1),
        }
        for gw in GATEWAYS
    }
    return {"broker": kind, "clients": clients, "rate": rate, **client, "gateways": per_gw,
            "haproxy_cpu_cores": round(lb_cpu / wall, 2)}  # fmt: skip


def main(*, runs: int, clients: int = 300, seconds: float = 10.0, rate: int = 2000) -> int:
    why = available()
    if why is not None:
        print(f"bench lab: {why}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {"redis": [], "cluster": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for kind in ("redis", "cluster"):
                r = _run(kind, Path(tmp) / f"{kind}{i}", clients=clients, seconds=seconds,
                         rate=rate)  # fmt: skip
                results[kind].append(r)
                print(f"lab run {i + 1}: {json.dumps(r)}", flush=True)
    for kind, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("p50_ms", "p99_ms", "max_ms", "gaps", "frames_per_s",
                         "records_per_s_per_measuring_client", "haproxy_cpu_cores")}  # fmt: skip
        us = statistics.median(g["cpu_us_per_frame"] for r in rs for g in r["gateways"].values())
        print(f"median {kind} ({runs} runs, {clients} clients through HAProxy): "
              + ", ".join(f"{k}={v}" for k, v in med.items())
              + f", gateway cpu_us_per_frame={us}", flush=True)  # fmt: skip
    return 0
