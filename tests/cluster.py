"""A real Redis Cluster for the tests: 6 `redis-server`s on loopback (3 primaries, 3 replicas).

Started once per test session (the `redis_cluster` fixture in conftest.py), always torn
down. Tests may fail a primary over, freeze one (SIGSTOP) and wake it: `healthy()` waits
until every slot is served again, every primary has a live replica and every node agrees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

NODES = 6
NODE_TIMEOUT_MS = 2000
START_TIMEOUT_S = 30.0


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (SIGKILL after 5 s) a server, paused or not, and wait for it."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ask(port: int, *command: str) -> Any:
    """One command's reply from one node, or None when it does not answer."""
    try:
        with redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=1.0, socket_connect_timeout=1.0
        ) as r:
            return r.execute_command(*command)
    except redis.RedisError:
        return None


def cluster_info(port: int) -> dict[str, str]:
    """CLUSTER INFO of one node as a dict ({} when it does not answer)."""
    info = _ask(port, "CLUSTER INFO")  # parsed into a dict by redis-py
    return {} if info is None else {str(k): str(v) for k, v in info.items()}


@dataclass
class Node:
    port: int
    bus_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spawn(self, executable: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--logfile", "redis.log",
            "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers(self) -> bool:
        return bool(_ask(self.port, "PING"))

    def pause(self) -> None:
        """SIGSTOP: its connections stay open and nothing answers."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        self.paused = False
        if proc is not None:
            terminate(proc)


@dataclass
class LocalCluster:
    """Six nodes on the given ports; `url` is the broker URL naming the three first."""

    executable: str
    cli: str
    workdir: Path
    ports: list[tuple[int, int]]  # (port, cluster bus port) per node
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.address for n in self.nodes[:3])

    def start(self) -> None:
        """Start the nodes, join them (`redis-cli --cluster create`), wait until healthy."""
        self.nodes = [Node(p, b, self.workdir / f"n{p}") for p, b in self.ports]
        for n in self.nodes:
            n.spawn(self.executable)
        self._until(lambda: all(n.answers() for n in self.nodes), "nodes answering PING")
        subprocess.run(
            [self.cli, "--cluster", "create", *(n.address for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        self.healthy()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def _until(self, ok: object, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
        # A bounded poll: a cluster converging has no event to await.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if callable(ok) and ok():
                return
            time.sleep(0.05)
        raise TimeoutError(f"redis cluster in {self.workdir}: no {what} after {timeout_s} s")

    def roles(self) -> dict[int, str | int]:
        """port -> 'master', or the port of the primary a replica follows (from each node)."""
        out: dict[int, str | int] = {}
        for n in self.nodes:
            role = None if n.paused else _ask(n.port, "ROLE")
            if role is None:
                continue
            kind = role[0].decode() if isinstance(role[0], bytes) else role[0]
            out[n.port] = "master" if kind == "master" else int(role[2])
        return out

    def owner(self, key: str, *, via: int | None = None) -> int:
        """The port of the primary serving `key`'s slot, as `via` (or any live node) sees it."""
        slot = key_slot(key.encode())
        for n in self.nodes:
            if n.paused or (via is not None and n.port != via):
                continue
            for start, end, primary, *_ in _ask(n.port, "CLUSTER SLOTS") or []:
                if start <= slot <= end:
                    return int(primary[1])
        raise LookupError(f"no node serves the slot of {key}")

    def replica_of(self, primary: int) -> int:
        """A live replica's port following `primary`."""
        for port, role in self.roles().items():
            if role == primary:
                return port
        raise LookupError(f"no replica of {primary}")

    def failover(self, key: str) -> int:
        """CLUSTER FAILOVER on a replica of `key`'s primary (they swap roles, nothing is
        lost); the replica's port."""
        replica = self.replica_of(self.owner(key))
        if _ask(replica, "CLUSTER", "FAILOVER") is None:
            raise RuntimeError(f"CLUSTER FAILOVER refused by {replica}")
        return replica

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Every node running, unpaused, `cluster_state:ok` and agreeing on 3 primaries that
        each have a replica in sync."""
        for n in self.nodes:
            n.resume()
            if n.proc is None or n.proc.poll() is not None:
                n.spawn(self.executable)

        def ok() -> bool:
            infos = [cluster_info(n.port) for n in self.nodes]
            if not all(i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(NODES)
                       and i.get("cluster_slots_ok") == "16384" for i in infos):  # fmt: skip
                return False
            roles = self.roles()
            primaries = {p for p, r in roles.items() if r == "master"}
            followed = {r for r in roles.values() if r != "master"}
            return len(roles) == NODES and len(primaries) == 3 and followed == primaries

        self._until(ok, "healthy cluster", timeout_s)
        self._until(self._replicas_synced, "replicas in sync", timeout_s)

    def _replicas_synced(self) -> bool:
        for n in self.nodes:
            info = _ask(n.port, "INFO", "replication")
            if info is None:
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def flush(self) -> None:
        """Empty every primary (their replicas follow)."""
        for port, role in self.roles().items():
            if role == "master" and not _ask(port, "FLUSHALL"):
                raise RuntimeError(f"primary {port} did not flush")
