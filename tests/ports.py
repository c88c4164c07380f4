"""Free TCP ports on loopback for the servers the tests start.

A port the OS hands out for `bind(("127.0.0.1", 0))` comes from the ephemeral range
(Linux: 32768-60999), the same range every outgoing connection takes its local port
from: between closing the probe socket and the server binding, a client connection
of another test can take it ("address already in use"). So ports are chosen at random
below that range, where nothing is allocated without asking, and each xdist worker
draws from its own slice, so two workers never pick the same one.
"""

from __future__ import annotations

import os
import random
import socket

LOW, HIGH = 20_000, 32_000  # below the ephemeral range
ATTEMPTS = 200


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker.removeprefix("gw") or 0) % max(count, 1)
    width = (HIGH - LOW) // max(count, 1)
    return range(LOW + index * width, LOW + (index + 1) * width)


def free_ports(n: int) -> list[int]:
    """`n` distinct ports that nothing on loopback listens on or holds right now."""
    pool = _slice()
    socks: list[socket.socket] = []
    try:
        for port in random.sample(pool, min(len(pool), ATTEMPTS)):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            if len(socks) == n:
                return [s.getsockname()[1] for s in socks]
        raise RuntimeError(f"no {n} free ports in {pool}")
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One port, as `free_ports(1)`."""
    return free_ports(1)[0]
