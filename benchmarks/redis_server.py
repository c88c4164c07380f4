"""A throwaway redis-server for benchmarks (the tests have their own fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def temporary_redis() -> AsyncIterator[str]:
    """Start `redis-server` on a free port with no persistence; yield its URL; stop it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", tmp,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(200):
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.025)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
