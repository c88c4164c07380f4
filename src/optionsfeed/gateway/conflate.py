"""Merging pending updates of one channel (slow consumers and throttle), no I/O.

Latest value wins per record and field; records keep the order in which they
first changed. The merged update spans the pending ones: its `prev` is the
first's `prev`, its `seq` the last's `seq`. Memory is bounded by the records of
the channel, however long the updates keep coming.
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import protocol

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


def record_key(rec: dict[str, Any]) -> str:
    """Options and underlyings are keyed by `symbol`, stats records by `underlying`."""
    key = rec.get("symbol", rec.get("underlying"))
    return key if isinstance(key, str) else ""


class MergedUpdates:
    """Updates of one channel merged since `prev` (the client's last applied seq)."""

    __slots__ = ("prev", "records", "seq")

    def __init__(self, prev: int) -> None:
        self.prev = prev
        self.seq = prev
        self.records: dict[str, dict[str, Any]] = {}

    def add(self, seq: int, records: list[bytes]) -> None:
        for raw in records:
            rec = _decode(raw)
            merged = self.records.get(k := record_key(rec))
            if merged is None:
                self.records[k] = rec
            else:
                merged.update(rec)
        self.seq = seq

    def __bool__(self) -> bool:
        return self.seq > self.prev

    def message(self, channel: str, epoch: str) -> bytes:
        """The merged `update` message."""
        data = [_encode(r) for r in self.records.values()]
        head = protocol.update_head(channel, epoch)
        return head + str(self.prev).encode() + protocol.update_tail(self.seq, data)
