"""`optionsfeed` commands as child processes of a benchmark, and their CPU time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def optionsfeed_proc(
    args: list[str], pythonpath: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`optionsfeed ARGS` in a child process (stdout piped, stderr dropped), stopped
    with SIGTERM (SIGKILL after 15 s) on exit. `pythonpath`: a source tree to run
    instead of the installed package."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    # Leaving the Popen closes its stdout pipe (a test runs scenarios in-process).
    with subprocess.Popen(
        [sys.executable, "-m", "optionsfeed.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    ) as p:  # fmt: skip
        try:
            yield p
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """`n` processes spinning on a CPU each while inside (a machine shared with
    other busy processes, as the gateways and the load generator share it)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
