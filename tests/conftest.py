"""Fixtures shared by every test: a real `redis-server` of the test session's own;
`REFERENCE_START`, the simulated markets' start; and a guard that fails any test during
which asyncio reported an exception nobody handled."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis

from .cluster import NODES, LocalCluster, terminate
from .ports import free_port, free_ports

# What asyncio logs (through its default exception handler) when a task or a callback
# failed and nobody owned the failure: in this project that is always a bug.
UNHANDLED = (
    "Task exception was never retrieved",
    "Future exception was never retrieved",
    "Exception in callback",
)

# A fixed market instant for simulated markets (a Wednesday, 11:00 New York: open),
# so a test's chain does not depend on the day it runs.
REFERENCE_START = int(
    datetime(2026, 11, 25, 11, 0, tzinfo=ZoneInfo("America/New_York")).timestamp() * 1e6
)

START_ATTEMPTS = 5
START_TIMEOUT_S = 10.0


def _free_port() -> int:
    # redis-server cannot listen on port 0 and report the port: pick one (ports.py);
    # another process may still take it before redis binds it (start() retries then).
    return free_port()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A `redis-server` on 127.0.0.1 with no persistence, which tests may stop and restart.

    `url` and `port` stay the same across `stop()` / `start()`, so clients see an
    outage and a recovery of "their" Redis, with an empty dataset after it.
    """

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or restart on the same port) and return once it answers PING."""
        if self.running:
            return
        for _ in range(START_ATTEMPTS if self.port == 0 else 1):
            port = self.port or _free_port()
            if self._spawn(port):
                self.port = port
                return
        pytest.fail(f"redis-server did not start (port {port}); see {self.workdir}/redis.log")

    def _spawn(self, port: int) -> bool:
        args = [
            self.executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--logfile", "redis.log",
        ]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        # A bounded poll: an external process coming up has no event to await.
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_ping(port):
                self._proc = proc
                return True
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        return False

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a silent network)."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s) and wait: clients see their connections close."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session (stopped at its end)."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(
            "redis-server is not on PATH: the tests need a real Redis "
            "(Debian/Ubuntu: apt-get install redis-server)"
        )
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running (an earlier test may have stopped it) and empty."""
    redis_server.start()
    with redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster of 6 nodes (3 primaries, 3 replicas) for the whole session."""
    executable, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if executable is None or cli is None:
        pytest.fail("redis-server and redis-cli must be on PATH (apt-get install redis-server)")
    workdir = tmp_path_factory.mktemp("redis-cluster")
    for attempt in range(START_ATTEMPTS):
        # 12 ports: each node's own and its cluster bus port (which would otherwise be
        # port + 10000, maybe past 65535 or taken).
        ports = free_ports(2 * NODES)
        cluster = LocalCluster(
            executable, cli, workdir / str(attempt), list(zip(ports[::2], ports[1::2], strict=True))
        )
        try:
            cluster.start()
        except (TimeoutError, subprocess.SubprocessError):
            cluster.stop()
            continue
        try:
            yield cluster
        finally:
            cluster.stop()
        return
    pytest.fail(f"the redis cluster did not start; see {workdir}")


@pytest.fixture
def redis_cluster_url(redis_cluster: LocalCluster) -> str:
    """The session's cluster, healthy (an earlier test may have failed a node over) and empty."""
    redis_cluster.healthy()
    redis_cluster.flush()
    return redis_cluster.url


class _Unhandled(logging.Handler):
    """Keeps the records of the "asyncio" logger that report an unhandled exception."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if any(record.getMessage().startswith(u) for u in UNHANDLED):
            self.records.append(record)


_unhandled = _Unhandled()
logging.getLogger("asyncio").addHandler(_unhandled)


@pytest.fixture(autouse=True)
def _no_unhandled_exceptions() -> Iterator[None]:
    """Fails the test when asyncio reports an exception nobody handled.

    "Task exception was never retrieved" is logged when the task is collected, which
    can be after the test's event loop is closed (this fixture's teardown runs after
    the loop's): hence the gc.collect(). A report logged between two tests is raised
    by the next test's teardown and says so.
    """
    gc.collect()
    before, _unhandled.records[:] = list(_unhandled.records), []
    yield
    gc.collect()
    found, _unhandled.records[:] = before + _unhandled.records, []
    if found:
        lines = []
        for r in found:
            text = r.getMessage()
            if r.exc_info and r.exc_info[1] is not None:
                exc = r.exc_info[1]
                text += f"\n    {type(exc).__name__}: {exc}"
            if r in before:
                text = "(logged before this test began, by an earlier one) " + text
            lines.append(text)
        pytest.fail("asyncio reported unhandled exceptions:\n" + "\n".join(lines), pytrace=False)
