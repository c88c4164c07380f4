"""`optionsfeed bench wslib`: server CPU per WebSocket send, four server implementations.

Each run starts one server in its own process (spawn, uvloop) and, in a second
process, `clients` picows clients that only count the text frames they receive.
Once every client is connected the server sends the same ~400-byte text message
to all of them, `rounds` times, `interval_s` apart, and measures its own CPU time
(`time.process_time()`, user + system, so the socket writes' kernel time counts)
from the first round until its write buffers have drained. The figure is that CPU
divided by the sends (rounds x connected clients). The client process then reports
how many frames arrived, so a figure never hides lost messages.

The implementations (`IMPLEMENTATIONS`):

- ``aiohttp-send_str``: `await WebSocketResponse.send_str(message)` per client;
- ``aiohttp-transport``: an aiohttp upgrade, then the frame built once per round
  (`gateway.frames.text_frame`) written with `request.transport.write`, as the
  gateway's `Session.flush` does;
- ``websockets``: `websockets.asyncio.server.serve` and its `broadcast()`;
- ``picows``: `ws_create_server` and `WSTransport.send(WSMsgType.TEXT, payload)`.

Runs alternate between implementations (a b c d a b c d ...) so that a noisy
machine spreads its noise over all of them; the median per implementation is
reported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import multiprocessing
import os
import resource
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

import picows
from aiohttp import web

from optionsfeed.gateway.frames import text_frame

if TYPE_CHECKING:
    from websockets.asyncio.server import Server as WebsocketsServer
    from websockets.asyncio.server import ServerConnection

CLIENTS = 1000
ROUNDS = 200
INTERVAL_S = 0.02
MESSAGE_BYTES = 400
CONNECT_CONCURRENCY = 64  # handshakes in flight from the client process
BACKLOG = 2048
SETTLE_S = 0.3  # after the last client connects, before measuring
DRAIN_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 60.0
DELIVERY_GRACE_S = 2.0  # how long the clients wait for stragglers after the server is done

IMPLEMENTATIONS: dict[str, str] = {
    "aiohttp-send_str": "aiohttp send_str (awaited per client)",
    "aiohttp-transport": "aiohttp upgrade + transport.write(frame)",
    "websockets": "websockets broadcast()",
    "picows": "picows transport.send",
}


def _message(size: int = MESSAGE_BYTES) -> str:
    """A JSON update much like the gateway's, padded to exactly `size` bytes."""
    records = [
        {"k": f"SPY 2025-06-20 C {500 + i}", "bid": 12.35 + i, "ask": 12.41 + i, "iv": 0.1834,
         "delta": 0.5123, "ts": 1_750_000_000_000_000 + i}
        for i in range(2)
    ]  # fmt: skip
    head = {"type": "update", "channel": "chain.SPY", "epoch": "e1", "seq": 2, "prev": 1}
    body = json.dumps({**head, "data": records, "pad": ""}, separators=(",", ":"))
    if len(body) > size:
        raise ValueError(f"message template is {len(body)} bytes, more than {size}")
    return body.replace('"pad":""', '"pad":"' + "x" * (size - len(body)) + '"')


MESSAGE = _message()


def unavailable(impl: str) -> str | None:
    """Why `impl` cannot run here (None when it can)."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {impl!r}; one of {', '.join(IMPLEMENTATIONS)}")
    if impl == "websockets" and importlib.util.find_spec("websockets") is None:
        return "skipped (websockets is missing: pip install -e '.[bench]')"
    return None


@dataclass(frozen=True)
class RunResult:
    impl: str
    clients: int  # asked for
    rounds: int
    connected: int  # clients the server broadcast to
    sends: int  # rounds x connected
    cpu_s: float  # the server's CPU over the rounds and the drain
    user_s: float  # the same split in user and system time (clock ticks, coarser)
    sys_s: float
    wall_s: float
    delivered: int  # text frames the clients received

    @property
    def expected(self) -> int:
        return self.rounds * self.clients

    @property
    def us_per_send(self) -> float:
        return self.cpu_s / self.sends * 1e6 if self.sends else math.nan


# -- the servers (each runs in its own process) ------------------------------------------


class _Server(Protocol):
    async def start(self, sock: socket.socket) -> None: ...

    def connections(self) -> int: ...

    async def broadcast(self) -> None:
        """Send `MESSAGE` once to every connected client."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the sockets, all connections."""

    async def stop(self) -> None: ...


class _AiohttpServer:
    """aiohttp; `raw` writes a pre-built frame to the transport (the gateway's way)."""

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.clients: dict[web.WebSocketResponse, asyncio.Transport] = {}
        self.runner: web.AppRunner | None = None

    async def _handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        self.clients[ws] = transport
        try:
            async for _ in ws:
                pass
        finally:
            del self.clients[ws]
        return ws

    async def start(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_get("/", self._handler)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.SockSite(self.runner, sock, backlog=BACKLOG).start()

    def connections(self) -> int:
        return len(self.clients)

    async def broadcast(self) -> None:
        if self.raw:
            frame = text_frame(MESSAGE.encode())
            for transport in self.clients.values():
                transport.write(frame)
        else:
            for ws in list(self.clients):
                await ws.send_str(MESSAGE)

    def buffered(self) -> int:
        return sum(t.get_write_buffer_size() for t in self.clients.values())

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class _WebsocketsServer:
    """websockets' asyncio implementation (imported here: it is optional)."""

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self.server: WebsocketsServer | None = None

    async def _handler(self, connection: ServerConnection) -> None:
        self.clients.add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.clients.discard(connection)

    async def start(self, sock: socket.socket) -> None:
        from websockets.asyncio.server import serve

        self.server = await serve(
            self._handler, sock=sock, backlog=BACKLOG, compression=None, ping_interval=None
        )

    def connections(self) -> int:
        return len(self.clients)

    async def broadcast(self) -> None:
        from websockets.asyncio.server import broadcast

        broadcast(self.clients, MESSAGE)

    def buffered(self) -> int:
        return sum(c.transport.get_write_buffer_size() for c in self.clients)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class _PicowsServerListener(picows.WSListener):
    def __init__(self, clients: set[picows.WSTransport]) -> None:
        self.clients = clients

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.clients.add(transport)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.clients.discard(transport)


class _PicowsServer:
    def __init__(self) -> None:
        self.clients: set[picows.WSTransport] = set()
        self.server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self.server = await picows.ws_create_server(
            lambda _request: _PicowsServerListener(self.clients), sock=sock, backlog=BACKLOG
        )

    def connections(self) -> int:
        return len(self.clients)

    async def broadcast(self) -> None:
        payload = MESSAGE.encode()
        for transport in self.clients:
            transport.send(picows.WSMsgType.TEXT, payload)

    def buffered(self) -> int:
        return sum(t.underlying_transport.get_write_buffer_size() for t in self.clients)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


_SERVERS: dict[str, Callable[[], _Server]] = {
    "aiohttp-send_str": lambda: _AiohttpServer(raw=False),
    "aiohttp-transport": lambda: _AiohttpServer(raw=True),
    "websockets": _WebsocketsServer,
    "picows": _PicowsServer,
}


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _wait_for(cond: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> bool:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() >= end:
            return False
        await asyncio.sleep(step_s)
    return True


async def _recv(conn: Connection) -> Any:
    """The next message from the parent, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        if not conn.poll():
            await readable
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


async def _serve(impl: str, rounds: int, interval_s: float, conn: Connection) -> None:
    server = _SERVERS[impl]()
    sock = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
    await server.start(sock)
    conn.send(("port", sock.getsockname()[1]))
    try:
        _, expected = await _recv(conn)  # ("go", clients the client process connected)
        await _wait_for(lambda: server.connections() >= expected, CONNECT_TIMEOUT_S)
        await asyncio.sleep(SETTLE_S)
        connected = server.connections()
        loop = asyncio.get_running_loop()
        wall0, cpu0, times0 = time.perf_counter(), time.process_time(), os.times()
        start = loop.time()
        for r in range(rounds):
            await server.broadcast()
            await asyncio.sleep(max(0.0, start + (r + 1) * interval_s - loop.time()))
        await _wait_for(lambda: server.buffered() == 0, DRAIN_TIMEOUT_S, step_s=0.002)
        cpu_s, wall_s, times = time.process_time() - cpu0, time.perf_counter() - wall0, os.times()
        user_s, sys_s = times.user - times0.user, times.system - times0.system
        conn.send(("done", connected, cpu_s, user_s, sys_s, wall_s))
        await _recv(conn)  # ("stop",): the clients have counted and hung up
        await _wait_for(lambda: server.connections() == 0, 5.0)
    finally:
        await asyncio.wait_for(server.stop(), 10.0)


def _server_entry(impl: str, rounds: int, interval_s: float, conn: Connection) -> None:
    import uvloop

    _raise_fd_limit()
    try:
        uvloop.run(_serve(impl, rounds, interval_s, conn))
    except Exception as exc:
        conn.send(("error", f"{impl} server: {exc!r}"))
        raise


# -- the clients (one process) -----------------------------------------------------------


class _Tally:
    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames = 0


class _CountingListener(picows.WSListener):
    """A client that only counts text frames: a callback per frame, nothing else."""

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type == picows.WSMsgType.TEXT:
            self.tally.frames += 1


async def _clients(url: str, count: int, expected: int, conn: Connection) -> None:
    tally = _Tally()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> picows.WSTransport | None:
        async with gate:
            try:
                transport, _ = await picows.ws_connect(
                    lambda: _CountingListener(tally), url,
                    websocket_handshake_timeout=CONNECT_TIMEOUT_S,
                )  # fmt: skip
            except (OSError, TimeoutError, picows.WSError):
                return None
            return transport

    found = await asyncio.gather(*(connect() for _ in range(count)))
    transports = [t for t in found if t is not None]
    conn.send(("connected", len(transports)))
    # Count until everything arrived or, once the server is done, nothing more comes.
    await _recv(conn)  # ("finish",)
    seen, quiet_since = -1, time.monotonic()
    while tally.frames < expected and time.monotonic() - quiet_since < DELIVERY_GRACE_S:
        if tally.frames != seen:
            seen, quiet_since = tally.frames, time.monotonic()
        await asyncio.sleep(0.01)
    conn.send(("received", tally.frames))
    for t in transports:
        t.send_close(picows.WSCloseCode.OK)
        t.disconnect()
    await asyncio.wait_for(asyncio.gather(*(t.wait_disconnected() for t in transports)), 10.0)


def _client_entry(url: str, count: int, expected: int, conn: Connection) -> None:
    import uvloop

    _raise_fd_limit()
    try:
        uvloop.run(_clients(url, count, expected, conn))
    except Exception as exc:
        conn.send(("error", f"clients: {exc!r}"))
        raise


# -- the parent ---------------------------------------------------------------------------


def _expect(conn: Connection, tag: str, proc: Any, timeout_s: float) -> tuple[Any, ...]:
    """The next message from a child, which must be `tag` (its fields after the tag)."""
    end = time.monotonic() + timeout_s
    while not conn.poll(0.2):
        if not proc.is_alive():
            raise RuntimeError(f"{proc.name} exited ({proc.exitcode}) before sending {tag!r}")
        if time.monotonic() >= end:
            raise RuntimeError(f"{proc.name}: no {tag!r} within {timeout_s:g} s")
    try:
        msg: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise RuntimeError(f"{proc.name} closed its pipe before sending {tag!r}") from None
    if msg[0] == "error":
        raise RuntimeError(msg[1])
    if msg[0] != tag:
        raise RuntimeError(f"{proc.name}: expected {tag!r}, got {msg[0]!r}")
    return msg[1:]


def run_once(
    impl: str, clients: int = CLIENTS, rounds: int = ROUNDS, interval_s: float = INTERVAL_S
) -> RunResult:
    """One measurement: a fresh server process and a fresh client process."""
    reason = unavailable(impl)
    if reason is not None:
        raise RuntimeError(f"{impl}: {reason}")
    ctx = multiprocessing.get_context("spawn")
    srv_conn, srv_child = ctx.Pipe()
    cli_conn, cli_child = ctx.Pipe()
    procs: list[Any] = []

    def spawn(name: str, target: Callable[..., None], *args: Any) -> Any:
        proc = ctx.Process(target=target, args=args, name=f"wslib-{impl}-{name}", daemon=True)
        proc.start()
        procs.append(proc)
        return proc

    try:
        server = spawn("server", _server_entry, impl, rounds, interval_s, srv_child)
        srv_child.close()
        (port,) = _expect(srv_conn, "port", server, CONNECT_TIMEOUT_S)
        url = f"ws://127.0.0.1:{port}/"
        client = spawn("clients", _client_entry, url, clients, rounds * clients, cli_child)
        cli_child.close()
        (n_connected,) = _expect(cli_conn, "connected", client, CONNECT_TIMEOUT_S * 2)
        srv_conn.send(("go", n_connected))
        budget = CONNECT_TIMEOUT_S + rounds * interval_s * 10 + DRAIN_TIMEOUT_S
        connected, cpu_s, user_s, sys_s, wall_s = _expect(srv_conn, "done", server, budget)
        cli_conn.send(("finish",))
        (delivered,) = _expect(cli_conn, "received", client, DELIVERY_GRACE_S + 60)
        srv_conn.send(("stop",))
        for proc in procs:
            proc.join(15)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for c in (srv_conn, cli_conn, srv_child, cli_child):
            c.close()
    return RunResult(
        impl=impl, clients=clients, rounds=rounds, connected=connected, sends=rounds * connected,
        cpu_s=cpu_s, user_s=user_s, sys_s=sys_s, wall_s=wall_s, delivered=delivered,
    )  # fmt: skip


# -- the report ---------------------------------------------------------------------------


def main(
    runs: int = 3, clients: int = CLIENTS, rounds: int = ROUNDS, interval_s: float = INTERVAL_S
) -> int:
    """Measure every available implementation `runs` times, alternating, and print the
    medians; 1 when a run failed or lost messages."""
    impls = [i for i in IMPLEMENTATIONS if unavailable(i) is None]
    results: dict[str, list[RunResult]] = {i: [] for i in impls}
    errors: dict[str, list[str]] = {i: [] for i in impls}
    print(
        f"{clients} clients, {rounds} rounds {interval_s * 1e3:g} ms apart, "
        f"{len(MESSAGE.encode())}-byte text message, {runs} runs each (median)",
        flush=True,
    )
    for _ in range(runs):
        for impl in impls:
            try:
                results[impl].append(run_once(impl, clients, rounds, interval_s))
            except RuntimeError as exc:
                errors[impl].append(str(exc))
    ok = True
    for impl in IMPLEMENTATIONS:
        reason = unavailable(impl)
        if reason is not None:
            print(f"{impl}: {reason}")
            continue
        done = results[impl]
        delivered = sum(r.delivered for r in done)
        expected = sum(r.expected for r in done)
        line = f"{impl}: "
        if done:
            us = statistics.median(r.us_per_send for r in done)
            line += f"{us:.2f} µs CPU per send (median of {len(done)}), "
        else:
            line += "no successful run, "
        line += f"delivered {delivered}/{expected}"
        if delivered < expected:
            ok = False
            line += f" (SHORT by {expected - delivered})"
        if errors[impl]:
            ok = False
            line += f"; {len(errors[impl])} failed run(s): {errors[impl][0]}"
        print(line, flush=True)
    return 0 if ok else 1
