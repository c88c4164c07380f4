"""Client messages in, server messages out (docs/protocol.md), no I/O.

Decoding follows the protocol's table of replies: whatever a client sends maps
to exactly one typed request or one `ProtocolError` carrying the error code and
the message's `id` when that is an integer within range. Every number of a
request is range-checked here, so nothing out of range reaches a timer or Redis.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

PROTOCOL_VERSION = 1

# The protocol's number ranges: integers a JavaScript client holds exactly.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_THROTTLE_MS = 60_000
MAX_EPOCH_CHARS = 64  # epochs the processor makes are 8-16 characters

Id = Annotated[int, msgspec.Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INTEGER)]
ThrottleMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_THROTTLE_MS)]
Epoch = Annotated[str, msgspec.Meta(max_length=MAX_EPOCH_CHARS)]


class ResumePoint(msgspec.Struct, forbid_unknown_fields=True):
    epoch: Epoch
    seq: Seq


class Subscribe(msgspec.Struct):
    channels: list[str]
    id: Id | None = None
    throttle_ms: ThrottleMs = 0
    resume: dict[str, ResumePoint] = msgspec.field(default_factory=dict)


class Unsubscribe(msgspec.Struct):
    channels: list[str]
    id: Id | None = None


class Ping(msgspec.Struct):
    id: Id | None = None


Request = Subscribe | Unsubscribe | Ping
_TYPES: dict[str, type[Request]] = {
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "ping": Ping,
}

ErrorCode = Literal[
    "bad_request", "unknown_op", "invalid_channel", "unknown_symbol", "not_entitled",
    "too_many_channels", "rate_limited", "internal",
]  # fmt: skip


class ProtocolError(Exception):
    """A request the server answers with an `error` message."""

    def __init__(self, code: ErrorCode, message: str, id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


def _int_id(obj: dict[str, Any]) -> int | None:
    """The message's `id` to echo: an integer within range, else None."""
    v = obj.get("id")
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_SAFE_INTEGER:
        return v
    return None


def decode_request(data: str | bytes) -> Request:
    """One client text frame -> a request; raises ProtocolError per the table.

    Raises nothing else, whatever `data` holds: JSON nested deeper than the
    decoder recurses is `bad_request` like any other unparseable message.
    """
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError("bad_request", f"not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("bad_request", "JSON nested too deep") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", "a message must be a JSON object")
    mid = _int_id(obj)
    op = obj.get("op")
    if not isinstance(op, str):
        raise ProtocolError("bad_request", 'a message needs an "op" string', mid)
    cls = _TYPES.get(op)
    if cls is None:
        shown = op[:40] + ("..." if len(op) > 40 else "")
        raise ProtocolError(
            "unknown_op", f"unknown op {shown!r} (subscribe, unsubscribe, ping)", mid
        )
    fields = {k: v for k, v in obj.items() if k != "op"}
    try:
        return msgspec.convert(fields, cls)
    except msgspec.ValidationError as exc:
        raise ProtocolError("bad_request", str(exc), mid) from None
    except RecursionError:
        raise ProtocolError("bad_request", "JSON nested too deep", mid) from None


_enc = msgspec.json.Encoder()


def encode(msg: dict[str, Any]) -> bytes:
    return _enc.encode(msg)


def error(code: ErrorCode, message: str, id: int | None = None) -> bytes:
    return encode({"type": "error", "id": id, "error": {"code": code, "message": message}})


def channel_error(channel: str, code: ErrorCode, message: str) -> bytes:
    """The server stops serving an acknowledged `channel`: it is no longer subscribed."""
    body = {"code": code, "message": message}
    return encode({"type": "error", "id": None, "channel": channel, "error": body})


def welcome(connection_id: str, node: str, heartbeat_ms: int, limits: dict[str, int]) -> bytes:
    return encode(
        {
            "type": "welcome", "protocol": PROTOCOL_VERSION, "connection_id": connection_id,
            "node": node, "heartbeat_ms": heartbeat_ms, "limits": limits,
        }
    )  # fmt: skip


def ack(id: int | None, results: list[dict[str, Any]]) -> bytes:
    return encode({"type": "ack", "id": id, "results": results})


def ok(channel: str) -> dict[str, Any]:
    return {"channel": channel, "ok": True}


def refused(channel: str, code: ErrorCode, message: str) -> dict[str, Any]:
    return {"channel": channel, "ok": False, "error": {"code": code, "message": message}}


def pong(id: int | None, ts: int) -> bytes:
    return encode({"type": "pong", "id": id, "ts": ts})


def heartbeat(ts: int) -> bytes:
    return encode({"type": "heartbeat", "ts": ts})


def snapshot(channel: str, epoch: str, seq: int, records: list[bytes]) -> bytes:
    """A `snapshot` message around already-encoded full records (no re-encoding)."""
    head = encode({"type": "snapshot", "channel": channel, "epoch": epoch, "seq": seq})
    return head[:-1] + b',"data":[' + b",".join(records) + b"]}"


def update_head(channel: str, epoch: str) -> bytes:
    """`{"type":"update","channel":..,"epoch":..,"prev":` — the prev and the rest follow."""
    return encode({"type": "update", "channel": channel, "epoch": epoch})[:-1] + b',"prev":'


def update_tail(seq: int, records: list[bytes]) -> bytes:
    return b',"seq":' + str(seq).encode() + b',"data":[' + b",".join(records) + b"]}"
