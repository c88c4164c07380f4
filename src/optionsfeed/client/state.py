"""What a client holds for one channel, and the Sequence rule of PROTOCOL.md. No I/O.

A channel's state is its rows (record key -> the latest value of every field),
the `epoch` of its sequence space and the `seq` it is current as of. A snapshot
replaces it; an update applies only on top of exactly the state it was computed
from (`prev` == our `seq`, same `epoch`), otherwise it is a `Gap` and the caller
must resubscribe with `resume`. That check is what makes conflation (prev/seq
jumping ahead together) safe and loss (prev not matching) detectable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Record = dict[str, Any]
Kind = Literal["snapshot", "update"]
MAX_SEQ = 2**53 - 1  # PROTOCOL.md: seqs are integers in 0..2^53-1


def _is_seq(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_SEQ


class Gap(Exception):
    """An update that does not follow the state it would be applied to."""

    def __init__(
        self, channel: str, epoch: str | None, seq: int | None, msg_epoch: Any, msg_prev: Any
    ) -> None:
        super().__init__(
            f"{channel}: gap, holding epoch {epoch!r} seq {seq}, "
            f"got an update for epoch {msg_epoch!r} prev {msg_prev}"
        )
        self.channel = channel
        self.epoch = epoch
        self.seq = seq


@dataclass(frozen=True, slots=True)
class Change:
    """A notification that `channel`'s state changed (read the rows from the state).

    `keys` are the record keys that changed; for a snapshot, every key it holds.
    `epoch` and `seq` are those of the state right after the change.
    """

    channel: str
    kind: Kind
    keys: list[str]
    epoch: str
    seq: int


def merge_changes(old: Change, new: Change) -> Change:
    """`old` then `new` of one channel as one notification (used when the queue is full).

    The keys are the union (a consumer re-reading those rows misses nothing) and a
    snapshot anywhere in the run makes the result a snapshot (rows may have gone).
    """
    keys = dict.fromkeys(old.keys)
    keys.update(dict.fromkeys(new.keys))
    kind: Kind = "snapshot" if "snapshot" in (old.kind, new.kind) else "update"
    return Change(new.channel, kind, list(keys), new.epoch, new.seq)


def key_field(channel: str) -> str:
    """The field that keys a channel's records: `underlying` for stats, else `symbol`."""
    return "underlying" if channel.startswith("stats.") else "symbol"


class ChannelState:
    """One channel's rows, epoch and seq; `epoch` is None until the first snapshot."""

    __slots__ = ("channel", "epoch", "key", "rows", "seq")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.key = key_field(channel)
        self.rows: dict[str, Record] = {}
        self.epoch: str | None = None
        self.seq: int | None = None

    @property
    def ready(self) -> bool:
        """True once a snapshot (or a resumed state) has been applied."""
        return self.epoch is not None

    def resume_point(self) -> dict[str, Any] | None:
        """The `resume` entry for this channel, or None when there is nothing to resume."""
        if self.epoch is None or self.seq is None:
            return None
        return {"epoch": self.epoch, "seq": self.seq}

    def _keys(self, data: Any) -> list[str]:
        if not isinstance(data, list):
            raise ValueError(f"{self.channel}: data must be a list of records")
        keys: list[str] = []
        for rec in data:
            k = rec.get(self.key) if isinstance(rec, dict) else None
            if not isinstance(k, str):
                raise ValueError(f"{self.channel}: a record without a {self.key!r} string")
            keys.append(k)
        return keys

    def apply_snapshot(self, msg: dict[str, Any]) -> list[str]:
        """Replace the whole state; returns every key it now holds."""
        epoch, seq = msg["epoch"], msg["seq"]
        if not isinstance(epoch, str) or not _is_seq(seq):
            # A seq out of range would come back as a resume point the server refuses.
            raise ValueError(
                f"{self.channel}: snapshot needs a string epoch and a seq in 0..2^53-1"
            )
        data = msg["data"]
        # Keys are checked before anything changes, so a malformed message leaves
        # the state as it was.
        keys = self._keys(data)
        self.rows = {k: dict(rec) for k, rec in zip(keys, data, strict=True)}
        self.epoch, self.seq = epoch, seq
        return list(self.rows)

    def apply_update(self, msg: dict[str, Any]) -> list[str]:
        """Merge an update field by field; returns the changed keys, or raises `Gap`.

        A field sent as null is stored as None: the value is now unknown, which is
        not the same as "unchanged" (an absent field).
        """
        epoch, prev, seq = msg.get("epoch"), msg.get("prev"), msg.get("seq")
        if self.epoch is None or epoch != self.epoch or prev != self.seq:
            raise Gap(self.channel, self.epoch, self.seq, epoch, prev)
        if not _is_seq(seq):
            raise ValueError(f"{self.channel}: update needs a seq in 0..2^53-1")
        data = msg["data"]
        keys = self._keys(data)
        for k, rec in zip(keys, data, strict=True):
            row = self.rows.get(k)
            if row is None:
                self.rows[k] = dict(rec)  # a record new to the channel (e.g. a new listing)
            else:
                row.update(rec)
        self.seq = seq
        return keys
