"""The REST beside the stream (docs/protocol.md, REST), over aiohttp.

Handlers only read the broker's latest-value cache: the full records are stored
as wire JSON, so a chain response is a join of cached bytes, no re-encoding.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from ..broker.base import Broker
from ..dashboard import STATIC
from ..errors import BrokerUnavailable
from ..model.records import encode
from .auth import EVERYTHING, Entitlements, TokenStore, token_of
from .channels import UNDERLYING_RE, shown
from .server import Gateway

DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# Returns None when ready, else the reason it is not.
Readiness = Callable[[], Awaitable[str | None]]

BROKER_KEY = web.AppKey("broker", Broker)
TOKENS_KEY: web.AppKey[TokenStore | None] = web.AppKey("tokens")
# Per request, set by the auth middleware.
ENTITLEMENTS_KEY: web.RequestKey[Entitlements] = web.RequestKey("entitlements", Entitlements)
READINESS_KEY: web.AppKey[Readiness] = web.AppKey("readiness")
# What a process adds to its /readyz body (a processor: the underlyings it owns).
DETAILS_KEY: web.AppKey[Callable[[], dict[str, Any]] | None] = web.AppKey("details")
# Metric lines beside the gateway's (a processor's), rendered at scrape time.
METRICS_KEY: web.AppKey[list[Callable[[], bytes]]] = web.AppKey("metrics")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=encode({"error": {"code": code, "message": message}}),
        content_type="application/json",
    )


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


async def index(request: web.Request) -> web.FileResponse:
    """The dashboard (static files, no build step; everything served from here)."""
    return web.FileResponse(STATIC / "index.html")


async def healthz(request: web.Request) -> web.Response:
    return _json(b'{"status":"ok"}')


async def readyz(request: web.Request) -> web.Response:
    reason = await request.app[READINESS_KEY]()
    details = request.app[DETAILS_KEY]
    extra = details() if details is not None else {}
    if reason is None:
        return _json(encode({"status": "ready", **extra}))
    return _json(encode({"status": "not ready", "reason": reason, **extra}), status=503)


async def metrics(request: web.Request) -> web.Response:
    body = b"".join(render() for render in request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def underlyings(request: web.Request) -> web.Response:
    broker = request.app[BROKER_KEY]
    try:
        out = []
        ent = _entitlements(request)
        for name in await broker.underlyings():
            if not ent.allows(name):
                continue
            meta = await broker.meta(name)
            if meta is not None:
                exp = list(meta.info.expiries)
                out.append({"symbol": name, "expiries": exp, "contracts": meta.info.contracts})
    except BrokerUnavailable as exc:
        return _error(503, "internal", f"broker unavailable: {exc}")
    return _json(encode({"underlyings": out}))


async def chain(request: web.Request) -> web.Response:
    name = request.match_info["underlying"]
    if not UNDERLYING_RE.fullmatch(name):
        return _error(400, "bad_request", f"{shown(name)} is not an underlying symbol")
    if not _entitlements(request).allows(name):
        return _error(403, "not_entitled", f"this token may not see {name}")
    expiry = request.query.get("expiry")
    if expiry is not None:
        try:
            if not DATE_RE.fullmatch(expiry):
                raise ValueError
            date.fromisoformat(expiry)
        except ValueError:
            return _error(400, "bad_request", f"expiry {shown(expiry)} is not a YYYY-MM-DD date")
    try:
        snap = await request.app[BROKER_KEY].snapshot(name)
    except BrokerUnavailable as exc:
        return _error(503, "internal", f"broker unavailable: {exc}")
    if snap is None:
        return _error(404, "unknown_symbol", f"no underlying {name}")
    if expiry is not None and expiry not in snap.info.expiries:
        return _error(404, "unknown_symbol", f"{name} has no expiry {expiry}")
    head = encode({"underlying": name, "epoch": snap.epoch, "seq": snap.seq})
    body = head[:-1] + b',"data":[' + b",".join(snap.option_records(expiry)) + b"]}"
    return _json(body)


def _entitlements(request: web.Request) -> Entitlements:
    ent: Entitlements = request.get(ENTITLEMENTS_KEY, EVERYTHING)
    return ent


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With tokens on, `/api/` needs one (401 without); health and metrics stay open."""
    tokens = request.app[TOKENS_KEY]
    if tokens is None or not request.path.startswith("/api/"):
        return await handler(request)
    token = token_of(request)
    try:
        ent = await tokens.lookup(token) if token else None
    except Exception:  # the token store (Redis) is unreachable
        return _error(503, "internal", "cannot check the token now; retry")
    if ent is None:
        return _error(401, "unauthorized", "a valid bearer token is required")
    request[ENTITLEMENTS_KEY] = ent
    return await handler(request)


def make_app(
    broker: Broker,
    readiness: Readiness,
    gateway: Gateway | None = None,
    *,
    tokens: TokenStore | None = None,
    details: Callable[[], dict[str, Any]] | None = None,
    metrics_from: Callable[[], bytes] | None = None,
) -> web.Application:
    """The HTTP application: health, readiness, the REST API and (with `gateway`) `/ws`.

    `details` adds fields to the `/readyz` body; `metrics_from` adds lines to `/metrics`
    (served when there is a gateway or `metrics_from`).
    """
    app = web.Application(middlewares=[_auth])
    app[DETAILS_KEY] = details
    renders = [gateway.metrics.render] if gateway is not None else []
    if metrics_from is not None:
        renders.append(metrics_from)
    app[METRICS_KEY] = renders
    app[TOKENS_KEY] = tokens
    app[BROKER_KEY] = broker
    app[READINESS_KEY] = readiness
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/underlyings", underlyings)
    app.router.add_get("/api/v1/chain/{underlying:.+}", chain)
    if gateway is not None:
        app.router.add_get("/ws", gateway.handle)
    if renders:
        app.router.add_get("/metrics", metrics)
    return app
