"""A Python client of the optionsfeed WebSocket protocol (PROTOCOL.md, version 1).

```python
async with Client("ws://localhost:8000/ws") as c:
    await c.subscribe(["chain.SPY", "stats.SPY"])
    async for change in c.changes():
        rows = c.state(change.channel).rows
```

The states are exact (every update applied, gaps healed by resuming); only the
notifications of `changes()` may be coalesced when the consumer falls behind.
"""

from .connection import (
    Client,
    ClientClosed,
    ClientError,
    ConnectionClosed,
    InvalidRequest,
    RequestError,
    SubscribeError,
)
from .state import Change, ChannelState, Gap, merge_changes

__all__ = [
    "Change",
    "ChannelState",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionClosed",
    "Gap",
    "InvalidRequest",
    "RequestError",
    "SubscribeError",
    "merge_changes",
]
