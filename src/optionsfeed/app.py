"""The runnable services: `up` (everything in one process), `process` and `gateway`.

Thin glue: each builds its parts from Settings, owns their tasks, and stops them
on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .aio import cancel_and_wait
from .broker import open_broker
from .broker.base import Broker
from .clock import wall_clock_us
from .config import Settings
from .errors import BrokerUnavailable
from .gateway.auth import load_tokens
from .gateway.hub import Hub
from .gateway.pacing import PacingSettings
from .gateway.readiness import GatewayReadiness
from .gateway.rest import make_app
from .gateway.server import Gateway
from .processing.leases import LeaseSettings
from .processing.metrics import ProcessorMetrics
from .processing.placement import PlacementSettings
from .processing.service import ProcessingService, PublisherStatus
from .sources.factory import open_source
from .sources.health import LinkWatch, MarketHours, Verdict, judge
from .sources.record import RecordWriter

log = logging.getLogger("optionsfeed")
PING_TIMEOUT_S = 1.0
BACKLOG = 4096


async def assess(
    broker: Broker,
    settings: Settings,
    *,
    status: PublisherStatus | None = None,
    link: LinkWatch | None = None,
    hours: MarketHours | None = None,
    grace_s: float | None = None,
    clock: Callable[[], int] = wall_clock_us,
) -> Verdict:
    """Whether this process can serve (for `/readyz`), and why not or a note.

    Ready means: publishing is not in an outage (when this process publishes), the
    broker answers, and then `sources.health.judge`: the venue link (when this
    process runs a source that can tell) has not been in trouble for `grace_s`
    (default `settings.fresh_within_s`), and every underlying's data is fresher than
    `settings.fresh_within_s` while the venue's market is open (`hours`; None: it
    never closes), so a feed that goes silent fails it, wherever the source runs.
    """
    now = clock()
    trouble = link.observe(now) if link is not None else None
    if status is not None and not status.connected:
        return Verdict(False, f"publishing stopped: {status.reason}")
    newest: tuple[str, int] | None = None
    try:
        await asyncio.wait_for(broker.ping(), PING_TIMEOUT_S)
        for name in await broker.underlyings():
            meta = await broker.meta(name)
            if meta is None:
                return Verdict(False, f"no data for {name}")
            if newest is None or meta.updated_us < newest[1]:
                newest = (name, meta.updated_us)
    except (BrokerUnavailable, TimeoutError) as exc:
        return Verdict(False, f"broker {broker.url} unreachable: {exc or 'timeout'}")
    fresh = settings.fresh_within_s
    return judge(now, newest, trouble, hours=hours, fresh_within_s=fresh,
                 grace_s=fresh if grace_s is None else grace_s)  # fmt: skip


async def readiness(
    broker: Broker,
    settings: Settings,
    *,
    status: PublisherStatus | None = None,
    source_health: Callable[[], str | None] | None = None,
    hours: MarketHours | None = None,
    grace_s: float | None = None,
    clock: Callable[[], int] = wall_clock_us,
) -> str | None:
    """None when this process can serve, else why not: `assess` at one moment (a
    source's problem counts from now, so only `grace_s` 0 makes it a reason)."""
    link = LinkWatch(source_health) if source_health is not None else None
    verdict = await assess(broker, settings, status=status, link=link, hours=hours,
                           grace_s=grace_s, clock=clock)  # fmt: skip
    return None if verdict.ready else verdict.reason


def _noted(
    details: Callable[[], dict[str, Any]] | None, note: dict[str, str]
) -> Callable[[], dict[str, Any]]:
    """`details` plus the last verdict's note (a ready body says "market closed")."""
    return lambda: {**(details() if details is not None else {}), **note}


def leases_owned(service: ProcessingService) -> dict[str, Any]:
    """The `/readyz` fields of a processor: its role, what it owns, what it stands by for
    (prices, hot, without owning), its id and the live processors it sees.

    A standby (owns nothing) is ready when the rest of readiness holds: it is hot and
    takes over within the lease TTL, which is what it is there for.
    """
    if service.leases is None:
        return {}
    owned = service.leases.owned()
    standby = sorted(service.process - set(owned))
    role = "active" if owned else "standby"
    return {
        "role": role, "owned": owned, "standby_for": standby,
        "processor": service.owner, "processors": service.members,
    }  # fmt: skip


async def _serve_http(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    # A crowd connecting at once (a gateway restart, a market open) overflows the
    # default backlog of 128 and costs clients a SYN retry of 1 s or more.
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=BACKLOG)
    await site.start()
    return runner


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _run(settings: Settings, *, process: bool, http: bool, gateway_too: bool) -> None:
    async with open_broker(settings.broker_url, history=settings.history) as broker:
        tasks: list[asyncio.Task[None]] = []
        status: PublisherStatus | None = None
        service: ProcessingService | None = None
        source_health: Callable[[], str | None] | None = None
        hours: MarketHours | None = None
        http_in_process = gateway_too
        if process:
            source = open_source(settings)
            service = ProcessingService(
                source,
                broker,
                stale_after_us=int(settings.stale_after_s * 1e6),
                follow_interval_us=int(settings.greeks_follow_s * 1e6),
                # A replay runs on its recording's clock, so it is deterministic.
                clock=getattr(source, "clock", wall_clock_us),
                # `process` takes leases: a second one on the same broker stands by
                # instead of fighting over the epochs. `up` is one whole deployment
                # in a process (often memory://, or a replay that ends): no leases.
                leases=LeaseSettings.for_ttl(settings.lease_ttl_s) if not http_in_process else None,
                placement=PlacementSettings.for_ttl(settings.lease_ttl_s, settings.standbys),
                # Every processor must see the same universe to rank the same way; a
                # replay's is what its recording lists.
                universe=()
                if settings.source.startswith("replay:")
                else settings.underlyings_for(),
            )
            status = service.status
            source_health = getattr(source, "health", None)
            hours = getattr(source, "market_hours", None)
            tasks.append(asyncio.create_task(service.run(), name="processing"))
        runner: web.AppRunner | None = None
        gateway: Gateway | None = None
        if http:
            link = LinkWatch(source_health) if source_health is not None else None
            note: dict[str, str] = {}

            async def ready() -> str | None:
                verdict = await assess(broker, settings, status=status, link=link, hours=hours)
                note.clear()
                if verdict.ready and verdict.reason is not None:
                    note["note"] = verdict.reason
                return None if verdict.ready else verdict.reason

            details = (lambda: leases_owned(service)) if service is not None else None
            if not process:
                # A gateway alone leaves the rotation only when cut off (gateway/readiness.py).
                gateway_ready = GatewayReadiness(broker, settings.fresh_within_s)
                ready, details = gateway_ready, gateway_ready.details
            metrics_from = ProcessorMetrics(service).render if service is not None else None

            tokens = (
                load_tokens(settings.tokens, redis_url=settings.redis)
                if settings.tokens is not None
                else None
            )
            gateway = Gateway(
                Hub(
                    broker,
                    pacing=PacingSettings(settings.pacing_target, settings.max_flush_ms / 1000),
                ),
                max_connections=settings.max_connections,
                tokens=tokens,
                allow_origins=frozenset(settings.allow_origins),
            )
            gateway.start()
            app = make_app(
                broker,
                ready,
                gateway,
                tokens=tokens,
                details=_noted(details, note),
                metrics_from=metrics_from,
            )
            runner = await _serve_http(
                app, settings.host, settings.port, reuse_port=settings.workers > 1
            )
            log.info("serving on http://%s:%d/", settings.host, settings.port)
            print(f"optionsfeed: open http://{settings.host}:{settings.port}/", flush=True)
        log.info(
            "broker %s%s", settings.broker_url,
            f"; source {settings.source}" if process else "",
        )  # fmt: skip
        waiter = asyncio.create_task(_until_signal())
        try:
            pending = {waiter, *tasks}
            while waiter in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is not waiter and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                    if t is not waiter:
                        # A finite source (a replay) ended: keep serving what it left.
                        log.info("the source ended; serving the last state until stopped")
        finally:
            if service is not None:
                # First of all, before the slower parts of shutdown: stop publishing and
                # hand the underlyings to a peer (a publish still in flight is fenced).
                await service.leave()
            for t in [waiter, *tasks]:
                if not await cancel_and_wait(t):
                    log.error("task %s did not stop within the limit", t.get_name())
            if service is not None:
                await service.release_leases()  # any a take in flight gained meanwhile
            if runner is not None:
                for site in list(runner.sites):
                    await site.stop()  # stop accepting first, then drain the clients
            if gateway is not None:
                await gateway.shutdown()
            if runner is not None:
                await runner.cleanup()


def run(settings: Settings, command: str) -> None:
    """Run `command` ("up", "process" or "gateway") until SIGINT/SIGTERM.

    `gateway` with `workers` > 1 starts that many processes on one port
    (SO_REUSEPORT: the kernel spreads connections); each has its own broker
    connections and hub. SIGTERM to the parent stops them all.
    """
    if command == "gateway" and settings.workers > 1:
        _run_workers(settings)
        return
    _run_one(settings, command)


def _run_workers(settings: Settings) -> None:
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_run_one, args=(settings, "gateway"), name=f"gateway-{i}")
        for i in range(1, settings.workers)
    ]
    for c in children:
        c.start()
    try:
        _run_one(settings, "gateway")
    finally:
        for c in children:
            c.terminate()  # SIGTERM: each drains its clients (1001) and exits
        for c in children:
            c.join(10)
            if c.is_alive():
                c.kill()


def _run_one(settings: Settings, command: str) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    coro = _run(
        settings,
        process=command in ("up", "process"),
        http=command in ("up", "gateway") or settings.port != 0,
        gateway_too=command == "up",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def record(settings: Settings, out: Path, *, seconds: float | None, roll_mb: float) -> int:
    """`optionsfeed record`: the source's batches into a recording until done or SIGINT."""
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip

    async def main() -> int:
        source = open_source(settings)
        writer = RecordWriter(
            out, source=source.name, started_us=wall_clock_us(),
            roll_bytes=int(roll_mb * 1024 * 1024),
        )  # fmt: skip

        async def consume() -> None:
            async for batch in source.batches():
                writer.write(batch, wall_clock_us())

        task = asyncio.create_task(consume())
        waiter = asyncio.create_task(_until_signal())
        try:
            await asyncio.wait([task, waiter], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(task)
            await cancel_and_wait(waiter)
            writer.close()
        log.info("recorded %d batches to %s", writer.batches, out)
        print(f"optionsfeed: recorded {writer.batches} batches to {out}", flush=True)
        return 0

    return asyncio.run(main())
