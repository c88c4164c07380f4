"""Redis Cluster URLs: `redis+cluster://[user:password@]host:port[,host:port...][/0]`.

The listed nodes are only seeds: the client learns the whole cluster (every primary
and replica, and which slots each serves) from the first one that answers, so any
few nodes will do, and listing more keeps start-up working while some are down.
`rediss+cluster://` is the same over TLS. A cluster has one database: a path other
than `/0` (or none) is refused, as are query options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url

from ..errors import ConfigError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    """True for `redis+cluster://` and `rediss+cluster://` URLs."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def seed_urls(url: str) -> list[str]:
    """The seed nodes of a cluster URL, each as a single-node URL (`redis://[auth@]h:p/0`).

    ConfigError when the URL names no node, a node without a port, a database
    other than 0, or query options.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ConfigError(f"not a Redis Cluster URL: {redact_cluster(url)!r}")
    node_scheme = scheme.removesuffix("+cluster")
    auth, at, hosts = rest.rpartition("@")
    hosts, _, path = hosts.partition("/")
    if "?" in path or "?" in hosts or "#" in path:
        raise ConfigError(f"{redact_cluster(url)!r}: a cluster URL takes no query options")
    if path not in ("", "0"):
        raise ConfigError(f"{redact_cluster(url)!r}: a Redis Cluster has only database 0")
    seeds = []
    for host in hosts.split(","):
        node = f"{node_scheme}://{auth}{at}{host}/0"
        try:
            port = urlsplit(node).port
        except ValueError as exc:
            raise ConfigError(f"{redact_cluster(url)!r}: bad node {host!r}: {exc}") from exc
        if not host or port is None:
            raise ConfigError(f"{redact_cluster(url)!r}: every node needs host:port, got {host!r}")
        seeds.append(node)
    return seeds


def simple_client(url: str, *, timeout_s: float) -> aioredis.Redis | RedisCluster:
    """A client for commands on single keys (`aclose()` it): redis-py's `RedisCluster`
    for a cluster URL, its `Redis` otherwise. ConfigError for a malformed cluster URL."""
    if not is_cluster_url(url):
        return aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    seeds = [parse_url(u) for u in seed_urls(url)]
    return RedisCluster(
        startup_nodes=[ClusterNode(s["host"], s["port"]) for s in seeds],
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **node_kwargs(seeds[0]),
    )


def node_kwargs(seed: Mapping[str, Any]) -> dict[str, Any]:
    """What every node connection needs beside host and port: credentials and TLS."""
    out = {k: v for k, v in seed.items() if k in ("username", "password")}
    if seed.get("connection_class") is SSLConnection:
        out["ssl"] = True
    return out


def redact_cluster(url: str) -> str:
    """`url` with its password (if any) replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    auth, at, hosts = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    user = auth.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hosts}"
