"""`Client`: one self-healing WebSocket connection to an optionsfeed gateway.

One background task owns the socket. It reads every frame, applies snapshots and
updates to the channels' `ChannelState`s, answers a gap by resubscribing that
channel with `resume`, and on a lost connection reconnects (capped exponential
backoff with jitter) and resubscribes every channel with `resume` from its state,
so the state stays exact across drops. User calls (`subscribe`, `unsubscribe`)
register a request and wait for the reply the reader routes to them by `id`;
a request still unanswered when the connection drops is sent again on the next.

Every subscribe of a channel already held carries its resume point, and from the
moment it is sent until its `ack` the channel's data is ignored: what arrives then
belongs to the subscription being replaced, and after the `ack` the server starts
the new base (a snapshot, or the updates from that resume point). Holding the
state still meanwhile keeps it equal to the resume point that was sent.

Notifications (`changes()`) go through a bounded queue. When the consumer falls
behind and the queue is full, further changes of a channel are merged into one
pending change per channel (`merge_changes`: keys united, latest epoch/seq), so
memory stays bounded by the number of channels. The states themselves are
always applied in full: only notifications coalesce, never data.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import msgspec

from ..aio import cancel_and_wait
from .state import Change, ChannelState, Gap, merge_changes

log = logging.getLogger("optionsfeed.client")

# Close codes after which reconnecting cannot help (PROTOCOL.md): 1008 the server
# refuses us (auth expired, entitlement); 1009 we sent something too big, which a
# retry would send again. Every other close reconnects and resumes: 1000 (the server
# is done with that connection, not with us), 1001 (going away: reach another
# gateway), 1011, 1013, a lost connection, and 1007 too: we send only valid UTF-8
# (`_channel_list` refuses what cannot be encoded), so a 1007 means a frame was
# damaged on the way, not one a retry repeats.
FATAL_CODES = frozenset({1008, 1009})
# The server asked us to slow down (slow consumer, rate limited): reconnect, but
# not at once.
PENALTY_CODES = frozenset({4008, 4029})
PENALTY_FLOOR_S = 1.0
PENALTY_RESET_S = 60.0  # a connection that lasted this long forgives earlier penalties
# Handshake statuses that a retry cannot fix (bad token, no such endpoint).
FATAL_STATUSES = frozenset({401, 403, 404})
# Error codes of a channel (a refused resubscribe, or an `error` naming an
# acknowledged channel) worth subscribing again after a pause: the server's trouble
# (`internal`, e.g. its broker is unreachable) or our pace. The others
# (`not_entitled`, `unknown_symbol`, `invalid_channel`, `too_many_channels`) would
# be refused again: the channel is dropped and listed in `Client.lost`.
RETRY_CODES = frozenset({"internal", "rate_limited"})
# The protocol's number ranges (PROTOCOL.md, "Numbers").
MAX_SAFE_INTEGER = 2**53 - 1
MAX_THROTTLE_MS = 60_000
# Channels per subscribe message when resubscribing: far below max_message_bytes.
RESUBSCRIBE_CHUNK = 100
CLOSE_TIMEOUT_S = 2.0

Results = list[dict[str, Any]]


class ClientError(Exception):
    """Base of the client's errors."""


class SubscribeError(ClientError):
    """Some channels of a subscribe were refused; the accepted ones are kept."""

    def __init__(self, results: Results) -> None:
        self.results = results
        self.refused: dict[str, dict[str, Any]] = {
            str(r.get("channel")): r.get("error") or {} for r in results if not r.get("ok")
        }
        detail = "; ".join(
            f"{ch}: {e.get('code')} ({e.get('message')})" for ch, e in self.refused.items()
        )
        super().__init__(f"subscribe refused {detail}")


class InvalidRequest(ClientError, ValueError):
    """A request the protocol does not allow, refused before anything is sent."""


class RequestError(ClientError):
    """The server answered a request with an `error` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionClosed(ClientError):
    """The server closed the connection in a way that reconnecting cannot fix."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code = code
        self.reason = reason


class ClientClosed(ClientError):
    """The client was closed by its owner."""


@dataclass(eq=False)
class _Request:
    id: int
    op: str
    channels: list[str]
    throttle_ms: int = 0
    # The waiting caller; None for the client's own resubscribes, which are not
    # carried over a reconnect (the full resubscribe after it covers them).
    future: asyncio.Future[Results] | None = None


def _channel_list(channels: Iterable[str]) -> list[str]:
    if isinstance(channels, str):
        raise InvalidRequest(f"channels must be a list of names, not the string {channels!r}")
    names = list(channels)
    for ch in names:
        if not isinstance(ch, str):
            raise InvalidRequest(f"a channel name must be a string, not {ch!r}")
        try:
            ch.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 frame can carry it
            raise InvalidRequest(f"channel name {ch!r} is not valid Unicode") from exc
    return names


def _decode(data: str) -> list[dict[str, Any]]:
    """A text frame's messages: one JSON object or an array of them."""
    obj = msgspec.json.decode(data)
    items = obj if isinstance(obj, list) else [obj]
    return [m for m in items if isinstance(m, dict)]


class Client:
    """`async with Client(url) as c:` then `subscribe`, `state`, `changes()`.

    One consumer may iterate `changes()`. The state of a channel is updated before
    its change is queued, so the rows read at a change are at least as new as it.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        max_queue: int = 10_000,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 5.0,
        open_timeout_s: float = 10.0,
        max_penalty_closes: int | None = None,
        retry_min_s: float = 1.0,
    ) -> None:
        """`max_penalty_closes`: give up (`ConnectionClosed`) after that many 4008/4029
        closes in a row; None (the protocol's policy) reconnects after every one.
        `retry_min_s`: the first pause before subscribing again to a channel the
        server stopped serving for a transient reason; it doubles per failure of
        that channel, up to `backoff_max_s`."""
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.max_penalty_closes = max_penalty_closes
        self.retry_min_s = retry_min_s
        self._states: dict[str, ChannelState] = {}
        self._throttle: dict[str, int] = {}
        # channel -> id of our latest subscribe of it not yet acknowledged; its data
        # is ignored until then (see the module's docstring).
        self._awaiting: dict[str, int] = {}
        # Channels to subscribe again after a pause, and failures in a row of each.
        self._to_retry: set[str] = set()
        self._failures: dict[str, int] = {}
        self._pending: dict[int, _Request] = {}
        self._last_id = 0
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue(max_queue)
        self._overflow: dict[str, Change] = {}
        self._end: ClientError | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        # What happened, for monitoring and tests.
        self.connection_id: str | None = None
        self.heartbeat_ms = 0
        self.limits: dict[str, int] = {}
        self.reconnects = 0
        self.gaps = 0
        self.heartbeat_timeouts = 0
        self.coalesced_changes = 0
        self.last_close: tuple[int | None, str] | None = None
        self.channel_errors = 0  # `error`s naming an acknowledged channel
        # Channels the server stopped serving for good: channel -> its `error` object.
        self.lost: dict[str, dict[str, Any]] = {}

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._http = aiohttp.ClientSession()
        try:
            ws, backlog = await self._open()
        except BaseException:
            await self._http.close()
            raise
        self._task = asyncio.create_task(self._run(ws, backlog), name=f"client {self.url}")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._retry_task is not None:
            await cancel_and_wait(self._retry_task)
        self._finish(ClientClosed("the client is closed"))
        if self._http is not None:
            await self._http.close()

    # -- the public API --------------------------------------------------------------

    def state(self, channel: str) -> ChannelState:
        """The live state of a subscribed channel (KeyError when not subscribed)."""
        return self._states[channel]

    @property
    def channels(self) -> list[str]:
        return list(self._states)

    async def subscribe(self, channels: Iterable[str], throttle_ms: int = 0) -> Results:
        """Subscribe; returns the ack's results, or raises `SubscribeError` when some
        were refused (the accepted ones stay subscribed).

        `throttle_ms` must be an integer in 0..60000 and `channels` strings, else
        `InvalidRequest` (a `ValueError`) is raised and nothing is sent. A channel
        already held is subscribed again from its resume point (with the new
        throttle): its state carries on without a fresh snapshot.
        """
        if type(throttle_ms) is not int or not 0 <= throttle_ms <= MAX_THROTTLE_MS:
            raise InvalidRequest(
                f"throttle_ms must be an integer in 0..{MAX_THROTTLE_MS}, not {throttle_ms!r}"
            )
        req = self._new_request("subscribe", _channel_list(channels), throttle_ms)
        results = await self._call(req)
        if any(not r.get("ok") for r in results):
            raise SubscribeError(results)
        return results

    async def unsubscribe(self, channels: Iterable[str]) -> Results:
        """Unsubscribe (idempotent); the channels' states are forgotten at once.

        `channels` must be strings, else `InvalidRequest` is raised and nothing is sent.
        """
        req = self._new_request("unsubscribe", _channel_list(channels))
        # Forget the channels now: what is still in flight for them is ignored, and a
        # reconnect before the ack does not bring them back.
        for ch in req.channels:
            self._forget(ch)
        return await self._call(req)

    async def changes(self) -> AsyncIterator[Change]:
        """Notifications, in order per channel; ends when the client is closed, raises
        `ConnectionClosed` when the server ended the connection for good."""
        while True:
            if self._queue.empty():
                self._refill()
                if self._queue.empty() and self._end is not None:
                    if isinstance(self._end, ClientClosed):
                        return
                    raise self._end
            change = await self._queue.get()
            self._refill()
            if change is not None and change.channel in self._states:
                yield change

    # -- requests --------------------------------------------------------------------

    def _new_request(self, op: str, channels: list[str], throttle_ms: int = 0) -> _Request:
        # Ids stay within the protocol's range; wrapping after 2^53-1 requests cannot
        # meet a request still waiting for its reply.
        self._last_id = self._last_id % MAX_SAFE_INTEGER + 1
        return _Request(self._last_id, op, channels, throttle_ms)

    async def _call(self, req: _Request) -> Results:
        if self._end is not None:
            raise self._end
        if self._task is None:
            raise RuntimeError("use the client as `async with Client(url) as c:`")
        size = len(msgspec.json.encode(self._message(req)))
        limit = self.limits.get("max_message_bytes")
        if limit is not None and size > limit:
            # The server would close the connection with 1009; refuse it here instead.
            raise InvalidRequest(f"request of {size} bytes exceeds the server's {limit}; split it")
        req.future = asyncio.get_running_loop().create_future()
        self._pending[req.id] = req
        try:
            await self._send(req)
            return await req.future
        finally:
            self._pending.pop(req.id, None)

    def _message(self, req: _Request) -> dict[str, Any]:
        msg: dict[str, Any] = {"op": req.op, "id": req.id, "channels": req.channels}
        if req.op != "subscribe":
            return msg
        if req.throttle_ms:
            msg["throttle_ms"] = req.throttle_ms
        points = {}
        for ch in req.channels:
            st = self._states.get(ch)
            point = None if st is None else st.resume_point()
            if point is not None:
                points[ch] = point
        if points:
            msg["resume"] = points
        return msg

    async def _send(self, req: _Request) -> None:
        """Send `req` on the current connection; without one it waits for the next."""
        ws = self._ws
        if ws is None or ws.closed:
            return
        data = msgspec.json.encode(self._message(req)).decode()
        if req.op == "subscribe":
            # Before the send: the ack may be read while it is under way.
            for ch in req.channels:
                if ch in self._states:
                    self._awaiting[ch] = req.id
        try:
            async with self._send_lock:
                await ws.send_str(data)
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.debug("send failed (%s); the reader will reconnect", exc)

    async def _resubscribe(self, channels: list[str]) -> None:
        """Our own subscribe of held channels, each from its resume point."""
        by_throttle: dict[int, list[str]] = {}
        for ch in channels:
            by_throttle.setdefault(self._throttle.get(ch, 0), []).append(ch)
        for throttle, chans in by_throttle.items():
            for i in range(0, len(chans), RESUBSCRIBE_CHUNK):
                req = self._new_request("subscribe", chans[i : i + RESUBSCRIBE_CHUNK], throttle)
                self._pending[req.id] = req
                await self._send(req)

    def _retry_later(self, channels: list[str]) -> None:
        """Subscribe to held `channels` again (with resume) after a pause that doubles
        with each failure in a row of a channel, up to `backoff_max_s`. Channels that
        fail while a pause runs join it, so a fault of many channels at once costs a
        few subscribe messages, not one per channel."""
        for ch in channels:
            if ch in self._states:
                self._to_retry.add(ch)
                self._failures[ch] = self._failures.get(ch, 0) + 1
        if self._to_retry and (self._retry_task is None or self._retry_task.done()):
            self._retry_task = asyncio.create_task(self._retrying(), name="client retry")

    async def _retrying(self) -> None:
        # `_to_retry` holds only channels of the current connection: the end of one
        # empties it (the next resubscribes every channel).
        while self._to_retry:
            n = max(self._failures.get(ch, 1) for ch in self._to_retry)
            delay = min(self.retry_min_s * 2 ** (n - 1), self.backoff_max_s)
            await asyncio.sleep(delay * random.uniform(1.0, 1.5))
            held = [ch for ch in self._to_retry if ch in self._states]
            self._to_retry.clear()
            if held and self._ws is not None:
                await self._resubscribe(held)

    # -- the connection ----------------------------------------------------------------

    async def _open(self) -> tuple[aiohttp.ClientWebSocketResponse, list[dict[str, Any]]]:
        """Connect and read the welcome; returns the socket and any messages after it."""
        assert self._http is not None
        async with asyncio.timeout(self.open_timeout_s):
            ws = await self._http.ws_connect(
                self.url,
                headers=self._headers,
                max_msg_size=0,  # a full snapshot of a big chain may be large
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
            )
            try:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"no welcome: {msg.type.name} {msg.data!r}")
                msgs = _decode(msg.data)
                if not msgs or msgs[0].get("type") != "welcome":
                    raise ConnectionError(f"expected a welcome, got {msgs[:1]}")
            except BaseException:
                await ws.close()
                raise
        welcome = msgs[0]
        self.connection_id = welcome.get("connection_id")
        self.heartbeat_ms = int(welcome.get("heartbeat_ms") or 0)
        self.limits = dict(welcome.get("limits") or {})
        return ws, msgs[1:]

    async def _run(
        self, ws: aiohttp.ClientWebSocketResponse, backlog: list[dict[str, Any]]
    ) -> None:
        try:
            await self._reconnecting(ws, backlog)
        except Exception as exc:  # a bug here must not leave the consumer waiting forever
            log.exception("client task failed")
            self._finish(ClientError(f"client task failed: {exc!r}"))

    async def _reconnecting(
        self, ws: aiohttp.ClientWebSocketResponse, backlog: list[dict[str, Any]]
    ) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff_min_s
        penalties = 0
        while True:
            up = loop.time()
            code, reason = await self._serve(ws, backlog)
            self.last_close = (code, reason)
            lived = loop.time() - up
            if lived >= self.backoff_max_s:
                # Only a connection that lived a while resets the backoff: a server
                # that accepts and drops at once is not hammered every 0.1 s.
                delay = self.backoff_min_s
            if lived >= PENALTY_RESET_S:
                penalties = 0
            if code in FATAL_CODES:
                self._finish(ConnectionClosed(code, reason))
                return
            if code in PENALTY_CODES:
                penalties += 1
                if self.max_penalty_closes is not None and penalties > self.max_penalty_closes:
                    self._finish(ConnectionClosed(code, f"{reason} ({penalties} times in a row)"))
                    return
                delay = max(delay, min(PENALTY_FLOOR_S, self.backoff_max_s))
            log.info("connection lost (%s %s); reconnecting", code, reason)
            while True:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max_s)
                try:
                    ws, backlog = await self._open()
                    break
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status in FATAL_STATUSES:
                        self._finish(ConnectionClosed(None, f"HTTP {exc.status}: {exc.message}"))
                        return
                    log.info("reconnect refused: HTTP %s", exc.status)
                except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError) as exc:
                    log.info("reconnect failed: %r", exc)
            self.reconnects += 1

    async def _serve(
        self, ws: aiohttp.ClientWebSocketResponse, backlog: list[dict[str, Any]]
    ) -> tuple[int | None, str]:
        """Run one connection until it ends; returns its close code and reason."""
        self._ws = ws
        # Callers' requests the last connection lost (taken before any await: one made
        # from now on is sent by its caller on this connection).
        unanswered = [r for r in self._pending.values() if r.future is not None]
        try:
            await self._resubscribe(list(self._states))
            for req in unanswered:
                await self._send(req)
            for m in backlog:
                await self._dispatch(m)
            # The protocol: a client that hears nothing for 3 heartbeats reconnects.
            silence = 3 * self.heartbeat_ms / 1000 or None
            while True:
                try:
                    msg = await ws.receive(timeout=silence)
                except TimeoutError:
                    self.heartbeat_timeouts += 1
                    return None, f"nothing received for {silence} s"
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        msgs = _decode(msg.data)
                    except msgspec.DecodeError as exc:
                        log.error("undecodable frame ignored: %s", exc)
                        continue
                    for m in msgs:
                        await self._dispatch(m)
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    return int(msg.data), str(msg.extra or "")
                elif msg.type is not aiohttp.WSMsgType.BINARY:
                    return ws.close_code, f"{msg.type.name} {msg.data or ''}".strip()
        finally:
            self._ws = None
            # Our own resubscribes die with the connection; the next one redoes them all.
            self._awaiting.clear()
            self._to_retry.clear()
            for rid in [r.id for r in self._pending.values() if r.future is None]:
                del self._pending[rid]
            await ws.close()

    # -- inbound messages --------------------------------------------------------------

    async def _dispatch(self, m: dict[str, Any]) -> None:
        t = m.get("type")
        if t == "snapshot" or t == "update":
            await self._on_data(m)
        elif t == "ack":
            self._on_ack(m)
        elif t == "error":
            self._on_error(m)
        # welcome, heartbeat, pong and future types need nothing: any message is a
        # sign of life, which the receive timeout already counts.

    async def _on_data(self, m: dict[str, Any]) -> None:
        ch = m.get("channel")
        st = self._states.get(ch) if isinstance(ch, str) else None
        if st is None or st.channel in self._awaiting:
            # Unsubscribed meanwhile, or of the subscription a pending subscribe
            # replaces: its new base comes after the ack.
            return
        try:
            keys = st.apply_snapshot(m) if m["type"] == "snapshot" else st.apply_update(m)
        except (Gap, ValueError, KeyError, TypeError) as exc:
            # The state is unchanged by a message that does not apply, so resuming
            # from it loses nothing; what is still in flight is ignored until the
            # resubscribe is acknowledged.
            self.gaps += 1
            log.info("%s; resubscribing with resume", exc)
            await self._resubscribe([st.channel])
            return
        self._failures.pop(st.channel, None)
        assert st.epoch is not None
        assert st.seq is not None
        self._emit(Change(st.channel, m["type"], keys, st.epoch, st.seq))

    def _on_ack(self, m: dict[str, Any]) -> None:
        rid = m.get("id")
        req = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if req is None:
            return
        results: Results = [r for r in m.get("results") or [] if isinstance(r, dict)]
        if req.op == "subscribe":
            self._answered(req)
            retry: list[str] = []
            for r in results:
                ch = str(r.get("channel"))
                if r.get("ok"):
                    if req.future is not None and ch not in self._states:
                        self._states[ch] = ChannelState(ch)
                        self.lost.pop(ch, None)
                    if req.future is not None:
                        self._throttle[ch] = req.throttle_ms
                elif ch in self._states:
                    self._unserved(ch, r.get("error") or {}, retry)
            if retry:
                self._retry_later(retry)
        if req.future is not None and not req.future.done():
            req.future.set_result(results)

    def _on_error(self, m: dict[str, Any]) -> None:
        err = m.get("error") or {}
        code, text = str(err.get("code")), str(err.get("message", ""))
        rid, ch = m.get("id"), m.get("channel")
        if rid is None and isinstance(ch, str):
            # The server stopped serving an acknowledged channel (PROTOCOL.md): it is
            # no longer subscribed there, whatever we still hold.
            self.channel_errors += 1
            if ch in self._states:
                retry: list[str] = []
                self._unserved(ch, err, retry)
                self._retry_later(retry)
            return
        req = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if req is None:
            log.warning("server error %s: %s", code, text)
            return
        # The server did not act on the request: the subscription it would have
        # replaced goes on.
        self._answered(req)
        if req.future is None:
            self._retry_later(req.channels)  # e.g. our resubscribe was rate limited
        elif not req.future.done():
            req.future.set_exception(RequestError(code, text))

    # -- state bookkeeping ---------------------------------------------------------------

    def _answered(self, req: _Request) -> None:
        """The server answered `req`: what it sends of its channels from now on is the
        new base (an `ack`) or the old subscription's (an `error`)."""
        for ch in req.channels:
            if self._awaiting.get(ch) == req.id:
                del self._awaiting[ch]

    def _unserved(self, ch: str, err: dict[str, Any], retry: list[str]) -> None:
        """The server does not serve held channel `ch` (a refusal, or an `error`
        naming it): it goes into `retry` when worth trying again, else it is dropped."""
        if err.get("code") in RETRY_CODES:
            log.warning("%s is not served for now (%s); subscribing again later", ch, err)
            retry.append(ch)
        else:
            self._drop(ch, err)

    def _forget(self, ch: str) -> None:
        self._states.pop(ch, None)
        self._throttle.pop(ch, None)
        self._awaiting.pop(ch, None)
        self._to_retry.discard(ch)
        self._failures.pop(ch, None)
        self._overflow.pop(ch, None)

    def _drop(self, ch: str, err: dict[str, Any]) -> None:
        log.warning("%s is no longer served: %s", ch, err)
        self._forget(ch)
        self.lost[ch] = err

    # -- notifications -----------------------------------------------------------------

    def _emit(self, change: Change) -> None:
        # Once anything waits in the overflow, later changes wait there too, so a
        # channel's changes still come out in order.
        if not self._overflow and not self._queue.full():
            self._queue.put_nowait(change)
            return
        old = self._overflow.get(change.channel)
        if old is None:
            self._overflow[change.channel] = change
        else:
            self._overflow[change.channel] = merge_changes(old, change)
            self.coalesced_changes += 1

    def _refill(self) -> None:
        while self._overflow and not self._queue.full():
            ch = next(iter(self._overflow))
            self._queue.put_nowait(self._overflow.pop(ch))

    def _finish(self, exc: ClientError) -> None:
        """The stream ends with `exc`: waiting callers fail, the consumer wakes up."""
        if self._end is None:
            self._end = exc
            if not isinstance(exc, ClientClosed):
                log.error("%s", exc)
        for req in list(self._pending.values()):
            if req.future is not None and not req.future.done():
                req.future.set_exception(self._end)
        self._pending.clear()
        if not self._queue.full():
            self._queue.put_nowait(None)  # wakes a consumer blocked on an empty queue
