"""Bearer tokens and what each may see (docs/protocol.md "Transport"), off by default.

A token maps to the underlyings it is entitled to, or `*` for all. Tokens come
from a JSON object `{"token": ["SPY", "QQQ"], "ops-token": ["*"]}` given inline,
in a file, or kept in Redis (the hash `{prefix}:tokens`, token -> JSON list) so
every gateway of a deployment shares them and a change needs no restart.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
from aiohttp import web

from ..errors import ConfigError

CACHE_S = 5.0  # a token revoked in Redis stops working within this long
MAX_TOKEN_CHARS = 512
MAX_CACHED_TOKENS = 10_000  # then the cache starts afresh: guessed tokens cannot grow it


@dataclass(frozen=True, slots=True)
class Entitlements:
    """The underlyings a connection may see; None means all of them."""

    underlyings: frozenset[str] | None = None

    def allows(self, underlying: str) -> bool:
        return self.underlyings is None or underlying in self.underlyings


EVERYTHING = Entitlements()


def entitlements(value: object) -> Entitlements:
    """A token's JSON list of underlyings (or ["*"]) as Entitlements."""
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise ValueError('entitlements must be a list of underlying symbols or ["*"]')
    return EVERYTHING if "*" in value else Entitlements(frozenset(value))


class TokenStore(Protocol):
    async def lookup(self, token: str) -> Entitlements | None: ...


class StaticTokens:
    """Tokens fixed at start (inline JSON or a file)."""

    def __init__(self, table: dict[str, Entitlements]) -> None:
        self._table = table

    async def lookup(self, token: str) -> Entitlements | None:
        return self._table.get(token)


class RedisTokens:
    """Tokens in a Redis hash, cached per token for CACHE_S seconds."""

    def __init__(self, url: str, key: str) -> None:
        self._redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._key = key
        self._cache: dict[str, tuple[float, Entitlements | None]] = {}

    async def lookup(self, token: str) -> Entitlements | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1]
        raw = await self._redis.hget(self._key, token)
        ent = None
        if raw is not None:
            try:
                ent = entitlements(json.loads(raw))
            except ValueError:
                ent = None  # a malformed entry grants nothing
        if len(self._cache) >= MAX_CACHED_TOKENS:
            self._cache.clear()
        self._cache[token] = (now, ent)
        return ent

    async def aclose(self) -> None:
        await self._redis.aclose()


def load_tokens(spec: str, *, redis_url: str | None, prefix: str = "of") -> TokenStore:
    """`spec`: inline JSON (`{...}`), `redis` (the broker's Redis), or a file path."""
    if spec == "redis":
        if redis_url is None:
            raise ConfigError("--tokens redis needs --redis")
        return RedisTokens(redis_url, f"{prefix}:tokens")
    text = spec if spec.lstrip().startswith("{") else _read(spec)
    try:
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object of token -> underlyings")
        return StaticTokens({str(k): entitlements(v) for k, v in obj.items()})
    except ValueError as exc:
        raise ConfigError(f"--tokens: {exc}") from exc


def _read(path: str) -> str:
    try:
        return Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"--tokens: cannot read {path}: {exc}") from exc


def token_of(request: web.Request) -> str | None:
    """The bearer token of `request`: the Authorization header, else `?token=`.

    None for no token, and for one that no store can hold (longer than
    MAX_TOKEN_CHARS, or not printable ASCII): it is refused without a lookup.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    else:
        token = request.query.get("token", "")
    if not token or len(token) > MAX_TOKEN_CHARS or not (token.isascii() and token.isprintable()):
        return None
    return token
