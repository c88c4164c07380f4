"""Small asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_S = 0.1


async def cancel_and_wait(task: asyncio.Task[Any], *, limit_s: float = 10.0) -> bool:
    """Cancel `task` and wait until it is done; True when it ended within `limit_s`.

    A single `cancel()` is not always enough: redis-py's pipeline can swallow a
    cancellation that lands while it reads a reply (seen with redis-py 8.1 on
    Python 3.11 in about a quarter of tries), and the task then runs on. So the
    request is repeated every `RECANCEL_S` until the task ends.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_S)
        if loop.time() > deadline:
            return task.done()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
    return True


def cancel_requested() -> bool:
    """True when the current task has a cancellation request pending.

    Code that catches connection errors and goes on (retry loops) must check this:
    a cancellation that a library turned into a connection error (redis-py does,
    when cancelled mid-command) would otherwise be lost and the task run forever.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
