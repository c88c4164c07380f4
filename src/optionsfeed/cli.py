"""The `optionsfeed` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import Settings
from .errors import ConfigError, OptionsFeedError


def _common(p: argparse.ArgumentParser, *, source: bool, http: bool, redis_required: bool) -> None:
    if http:
        p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", help="port to listen on (default 8000; 0 = no HTTP for process)")
    p.add_argument(
        "--redis",
        help="Redis URL, e.g. redis://127.0.0.1:6379/0, or a Redis Cluster's: "
        "redis+cluster://10.0.0.11:6379,10.0.0.12:6379"
        + (" (required)" if redis_required else " (default: the embedded memory broker)"),
    )
    p.add_argument("--history", help="resume history per underlying, in envelopes (default 2000)")
    p.add_argument("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    if source:
        p.add_argument(
            "--source", help="sim (default), deribit, massive or replay:FILE (a recording)"
        )
        p.add_argument("--speed", help="replay speed: a factor (default 1) or max")
        p.add_argument(
            "--underlyings",
            help="comma-separated (default: sim SPY,QQQ,AAPL,TSLA,NVDA; deribit BTC,ETH; massive SPY)",
        )
        p.add_argument("--rate", help="simulated updates per second (default 2000)")
        p.add_argument("--seed", help="simulator seed (default 1)")
        p.add_argument(
            "--stale-after-s", help="flag a contract stale after this long unquoted (60)"
        )
        p.add_argument(
            "--greeks-follow-s",
            help="greeks follow the underlying at most this often (1; 0 = with quotes only)",
        )
        p.add_argument(
            "--rest-ratio",
            help="venue feeds: while processing is busy, let events gather this times its "
            "last batch's time (0 = never, default; 1 trades ~1 ms for about half the CPU)",
        )
        _provider_flags(p)
        p.add_argument("--lease-ttl-s", help="process: lease TTL in seconds (default 3)")
        p.add_argument(
            "--standbys", help="process: hot standbys per underlying besides its owner (1)"
        )
    p.add_argument("--fresh-within-s", help="/readyz fails when data is older than this (10)")
    if http:
        p.add_argument(
            "--tokens",
            help='turn auth on: JSON {"token": ["SPY"], "admin": ["*"]}, a file of it, or "redis"',
        )
        p.add_argument("--allow-origins", help="comma-separated browser origins (default: any)")
        p.add_argument("--max-connections", help="WebSocket connections per process (10000)")
        p.add_argument(
            "--pacing-target",
            help="share of a core above which frames gather before writing (0.7)",
        )
        p.add_argument(
            "--max-flush-ms", help="the longest frames gather under load (0 = pacing off, default)"
        )


def _provider_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deribit-url", help="Deribit WebSocket (default wss://www.deribit.com/ws/api/v2)"
    )
    p.add_argument(
        "--massive-url", help="Massive options WebSocket (wss://socket.massive.com/options)"
    )
    p.add_argument("--massive-rest-url", help="Massive REST API (default https://api.massive.com)")
    p.add_argument("--max-contracts", help="contracts one Massive connection subscribes (1000)")


def parser() -> argparse.ArgumentParser:
    """The argument parser (flags are strings; Settings converts and validates them)."""
    top = argparse.ArgumentParser(
        prog="optionsfeed",
        description="Live options market data: simulator -> processing -> broker -> gateway.",
        epilog="Every flag can also be set as OPTIONSFEED_<NAME> (e.g. OPTIONSFEED_RATE=5000).",
    )
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole system in one process")
    _common(up, source=True, http=True, redis_required=False)
    proc = sub.add_parser("process", help="run source + processing, publishing into Redis")
    _common(proc, source=True, http=True, redis_required=True)
    gw = sub.add_parser("gateway", help="serve clients from Redis")
    _common(gw, source=False, http=True, redis_required=True)
    gw.add_argument("--workers", help="gateway processes sharing the port (default 1)")
    rec = sub.add_parser("record", help="record a source's normalized events to a file")
    rec.add_argument("--out", required=True, help="the recording's path (zstd msgpack)")
    rec.add_argument("--seconds", type=float, help="stop after this long (default: on SIGINT)")
    rec.add_argument("--roll-mb", type=float, default=256.0, help="start a new part past this")
    rec.add_argument("--source", help="sim (default), deribit or massive")
    rec.add_argument("--underlyings", help="comma-separated (default: the source's own)")
    rec.add_argument("--rate", help="simulated updates per second (default 2000)")
    rec.add_argument("--seed", help="simulator seed (default 1)")
    _provider_flags(rec)
    # Listed for --help only: `main` hands everything after "bench" to `_bench`, whose
    # options belong to the benchmarks themselves (benchmarks/cli.py).
    sub.add_parser(
        "bench",
        help="benchmarks, from a source checkout (see docs/benchmarks.md)",
        add_help=False,
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `optionsfeed` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = parser().parse_args(argv)
    if args.command == "record":
        return _record(args)
    flags = {k: v for k, v in vars(args).items() if k != "command"}
    env = dict(os.environ)
    if args.command == "process" and flags.get("port") is None and "OPTIONSFEED_PORT" not in env:
        flags["port"] = "0"  # a processor serves no HTTP unless asked to
    try:
        settings = Settings.load(flags, env)
    except ConfigError as exc:
        print(f"optionsfeed: {exc}", file=sys.stderr)
        return 2
    if args.command in ("process", "gateway") and settings.redis is None:
        print(
            f"optionsfeed {args.command}: --redis (or OPTIONSFEED_REDIS) is required",
            file=sys.stderr,
        )
        return 2
    if settings.tokens is not None:
        from .gateway.auth import load_tokens

        try:
            load_tokens(settings.tokens, redis_url=settings.redis)
        except ConfigError as exc:
            print(f"optionsfeed: {exc}", file=sys.stderr)
            return 2
    problem = _source_problem(settings)
    if problem is not None:
        print(f"optionsfeed: {problem}", file=sys.stderr)
        return 2
    from .app import run

    try:
        run(settings, args.command)
    except OptionsFeedError as exc:  # e.g. the venue rejected the API key
        print(f"optionsfeed: {exc}", file=sys.stderr)
        return 1
    return 0


def _source_problem(settings: Settings) -> str | None:
    """Why the settings' source cannot start (checked before anything runs), or None."""
    if settings.source == "massive" and not settings.massive_api_key:
        return "--source massive needs an API key: set OPTIONSFEED_MASSIVE_API_KEY"
    return None


BENCH_MISSING = """optionsfeed bench: the benchmarks are not installed with the package.
They live in benchmarks/ of a source checkout of optionsfeed. From the checkout's root:
    pip install -e '.[bench]'      (or scripts/test, which makes .venv with them)
    optionsfeed bench venues       (or: python -m benchmarks venues)
docs/benchmarks.md lists every benchmark and its command."""


def checkout_root() -> Path:
    """The source checkout this package was installed from (editable), if it is one: the
    directory above `src/optionsfeed/`. A wheel's install has no `benchmarks/` there."""
    return Path(__file__).resolve().parents[2]


def _bench(argv: Sequence[str], root: Path | None = None) -> int:
    """`optionsfeed bench ARGS`: run `python -m benchmarks ARGS` of the checkout at `root`
    (default `checkout_root()`), or say how to get the benchmarks (exit status 2).

    The benchmarks are found beside `src/`, from this file's path, not from the working
    directory, so the command works from anywhere in an editable install and never
    runs some other directory's `benchmarks`.
    """
    root = checkout_root() if root is None else root
    if not (root / "benchmarks" / "cli.py").is_file():
        print(BENCH_MISSING, file=sys.stderr)
        return 2
    import importlib

    sys.path.insert(0, str(root))  # `benchmarks` and the `tests.fakes` they use
    # The package's one edge to benchmarks/: imported here, when the command runs,
    # never at import time (the wheel does not have them).
    bench_cli = importlib.import_module("benchmarks.cli")
    status: int = bench_cli.main(argv, prog="optionsfeed bench")
    return status


def _record(args: argparse.Namespace) -> int:
    from .app import record

    names = ("source", "underlyings", "rate", "seed", "deribit_url", "massive_url",
             "massive_rest_url", "max_contracts")  # fmt: skip
    flags = {k: getattr(args, k) for k in names}
    try:
        settings = Settings.load(flags, dict(os.environ))
    except ConfigError as exc:
        print(f"optionsfeed: {exc}", file=sys.stderr)
        return 2
    if settings.source.startswith("replay:"):
        print("optionsfeed record: a replay is a recording already", file=sys.stderr)
        return 2
    problem = _source_problem(settings)
    if problem is not None:
        print(f"optionsfeed: {problem}", file=sys.stderr)
        return 2
    try:
        return record(settings, Path(args.out), seconds=args.seconds, roll_mb=args.roll_mb)
    except OptionsFeedError as exc:
        print(f"optionsfeed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
