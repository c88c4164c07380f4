"""Pipelines on a Redis Cluster, one per primary, routed by our own key per command.

redis-py's cluster pipeline resolves every queued command's routing policy and key
positions again on every call (its command table, then the keys of the arguments):
for the publish path's script calls, each carrying dozens of arguments, that doubled
the client's CPU per publish against one Redis. The caller here names the key that
routes each command; the slot map, the node connection pools, MOVED handling and
topology refreshes stay redis-py's (`RedisCluster`), so both paths agree on where a
slot lives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Replies that say the node did not run the command: safe to send it again elsewhere.
# CLUSTERDOWN too: a node answers it, running nothing, while the shards agree on a
# new primary (seen during CLUSTER FAILOVER on another shard).
_NOT_RUN: tuple[type[Exception], ...] = (MovedError, AskError, TryAgainError, ClusterDownError)
# Sends of a command answered CLUSTERDOWN: each one still answered so waits 0.25 s
# and refreshes the slot map (redis-py) before the next, so about a second in all.
_CLUSTER_DOWN_SENDS = 4


async def send_by_node(
    cluster: RedisCluster, commands: Sequence[tuple[str, Sequence[Any]]]
) -> list[Any]:
    """Send `commands` ((routing key, command arguments) each) as one pipeline (no
    MULTI) per primary, the pipelines concurrently: their replies in order, an error
    reply or a connection failure as the exception object in its place.

    Order is kept per node, so per slot. A command answered MOVED, ASK, TRYAGAIN or
    CLUSTERDOWN (its node did not run it) is sent again, alone and in order, through
    `cluster.execute_command`, which follows the redirect and corrects the slot map
    (CLUSTERDOWN: up to `_CLUSTER_DOWN_SENDS` times, a quarter second apart);
    nothing else is ever sent twice. A node whose connection failed mid-way leaves
    its commands with an unknown outcome: they carry the error, and the client is
    asked to refresh its topology (that node tried last) before the next command.
    When a pipeline could not be written at all, its error is raised once every
    node's pipeline has settled. SlotNotCoveredError (nothing sent) when a key's slot
    has no node in the map.
    """
    await cluster.initialize()  # returns at once unless a refresh is due
    queued: list[PipelineCommand] = []
    by_node: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
    for i, (key, args) in enumerate(commands):
        node = cluster.get_node_from_key(key)
        if node is None:  # only ever None for a replica, which is not asked for
            raise SlotNotCoveredError(f"no primary serves the slot of {key!r}")
        cmd = PipelineCommand(i, *args)
        queued.append(cmd)
        by_node.setdefault(node.name, (node, []))[1].append(cmd)
    groups = list(by_node.values())
    if len(groups) == 1:
        node, cmds = groups[0]
        outcomes: list[bool | BaseException] = []
        try:
            outcomes.append(await node.execute_pipeline(cmds))
        except Exception as exc:  # as gather would return it
            outcomes.append(exc)
    else:
        # Every pipeline settles before anything is raised: one still in flight
        # must not be sent again by a caller that saw another one fail.
        outcomes = await asyncio.gather(
            *(node.execute_pipeline(cmds) for node, cmds in groups), return_exceptions=True
        )
    unwritten: BaseException | None = None
    for (node, cmds), outcome in zip(groups, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            for cmd in cmds:
                cmd.result = outcome
            unwritten = unwritten or outcome
        if any(_node_failed(cmd.result) for cmd in cmds):
            _try_node_last(cluster, node)
    if unwritten is not None:
        raise unwritten
    for cmd in queued:
        if isinstance(cmd.result, _NOT_RUN):
            await _send_again(cluster, cmd)
    return [cmd.result for cmd in queued]


async def _send_again(cluster: RedisCluster, cmd: PipelineCommand) -> None:
    """`cmd` once more through the cluster client, its reply (or error) in its place;
    again while the reply is CLUSTERDOWN, `_CLUSTER_DOWN_SENDS` times at most."""
    for _ in range(_CLUSTER_DOWN_SENDS):
        try:
            cmd.result = await cluster.execute_command(*cmd.args)
        except Exception as exc:  # the reply, in its place
            cmd.result = exc
        if not isinstance(cmd.result, ClusterDownError):
            return


def _node_failed(result: object) -> bool:
    return isinstance(result, (RedisConnectionError, RedisTimeoutError)) and not isinstance(
        result, RedisCluster.NOT_NODE_FAILURE_ERRORS
    )


def _try_node_last(cluster: RedisCluster, node: ClusterNode) -> None:
    """What redis-py's own pipeline does after a node failure: refresh the topology
    before the next command, asking the failed node last (a frozen primary still
    claims its slots until the others fail it over)."""
    cluster.nodes_manager.move_node_to_end_of_cached_nodes(node.name)
    cluster._request_refresh(last_failed_node_name=node.name)  # redis-py has no public call for it
