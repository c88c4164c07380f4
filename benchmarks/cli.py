"""The benchmarks' command line: `python -m benchmarks` and `optionsfeed bench` run `main`.

Run from the source checkout's root, so that `benchmarks` and `tests.fakes` import.
Each bench module is imported only when its figure is asked for: `gateway` and
`wslib` need the `bench` extra (picows, websockets), the others do not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

WHAT = (
    "processing", "encode", "all", "gateway", "wslib", "venues", "idle", "cluster", "lab",
    "processors",
    "follow", "stages",
)  # fmt: skip
BENCH_EXTRA = ("picows", "websockets")  # pyproject's `bench` extra


def parser(prog: str) -> argparse.ArgumentParser:
    """The benchmarks' argument parser (`prog`: the command shown in the usage)."""
    p = argparse.ArgumentParser(
        prog=prog, description="optionsfeed's benchmarks (figures in docs/benchmarks.md)."
    )
    p.add_argument(
        "what",
        choices=WHAT,
        nargs="?",
        default="all",
        help="processing, encode, all (the two; default), gateway (fan-out scenarios), "
        "wslib (WebSocket libraries), venues (Deribit and Massive adapters), "
        "idle (gateway memory per idle connection), "
        "cluster (publish -> gateway latency, one Redis vs a local Redis Cluster), "
        "lab (fan-out through HAProxy across namespaced hosts; root), "
        "processors (1 and 2 processors on one Redis: throughput, takeover times), "
        "follow (updates added by greeks that follow the underlying), "
        "stages (the processor's stage lags at a moderate load)",
    )
    p.add_argument(
        "--scenarios",
        default="A,B",
        help="gateway scenarios (A,B,C,D,E,J,M,S,JS; see docs/benchmarks.md)",
    )
    p.add_argument("--clients", type=int, default=300, help="lab: clients through HAProxy (300)")
    p.add_argument(
        "--pin", action="store_true",
        help="gateway: pin the gateway processes to the last core, everything else to the others",
    )  # fmt: skip
    p.add_argument(
        "--knee", type=float, metavar="RATE",
        help="gateway: find the most clients one process holds at p99 <= 100 ms, RATE records/s each",
    )  # fmt: skip
    p.add_argument("--procs", type=int, default=2, help="load generator processes (2)")
    p.add_argument("--redis", help="also measure publishing into this Redis")
    p.add_argument("--runs", type=int, default=5, help="runs per figure (median reported)")
    p.add_argument(
        "--src", action="append", default=[],
        help="stages: a source tree to run the processor from (repeat to alternate variants)",
    )  # fmt: skip
    p.add_argument("--rate", type=float, default=4200.0, help="stages: simulator updates/s")
    p.add_argument("--hogs", type=int, default=0, help="stages: busy processes beside (0)")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m benchmarks") -> int:
    """Parse `argv` (default: the process's arguments) and run the benchmarks it names;
    the exit status (0 when every figure was measured)."""
    args = parser(prog).parse_args(argv)
    try:
        return _run(args)
    except ModuleNotFoundError as exc:
        if exc.name not in BENCH_EXTRA:
            raise
        print(
            f"{prog} {args.what}: {exc.name} is missing; it comes with the `bench` extra. "
            "From the checkout's root: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.what == "gateway":
        from .gateway import knee
        from .gateway import main as gateway_main

        if args.knee:
            knee(args.knee, procs=args.procs, pin=args.pin)
            return 0
        return gateway_main(
            args.scenarios.split(","), runs=args.runs, procs=args.procs, pin=args.pin
        )
    if args.what == "cluster":
        from .cluster_bench import main as cluster_main

        return cluster_main(runs=args.runs)
    if args.what == "lab":
        from .lab_bench import main as lab_main

        return lab_main(runs=args.runs, clients=args.clients)
    if args.what == "idle":
        from .idle import main as idle_main

        return idle_main(args.runs)
    if args.what == "processors":
        from .processors import main as processors_main

        return processors_main(args.runs)
    if args.what == "stages":
        from .procstages import main as stages_main

        return stages_main(args.runs, args.src, args.rate, args.hogs)
    if args.what == "wslib":
        from .wslib import main as wslib_main

        return wslib_main(args.runs)
    from .processing import main as processing_main

    return processing_main(args.what, redis=args.redis, runs=args.runs)
