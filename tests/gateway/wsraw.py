"""A raw WebSocket client over asyncio streams (RFC 6455), for hostile tests only.

Unlike a client library it sends whatever it is told: fragments, invalid UTF-8 in
text frames, binary frames, floods of control frames, messages past any limit. It
answers the server's pings, counts its pongs, and tells a close frame (its code)
from a connection that ended without one (1006).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
ABNORMAL = 1006  # no close frame: the connection just ended


class Closed(Exception):
    """The connection is over; `code` is the server's close code, or 1006 without one."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


class RawWS:
    """One connection: send frames, receive messages (server pings answered)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.close_code: int | None = None
        self.pongs = 0  # pong frames received (answers to our pings), counted by recv()
        self._fragments: list[bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int, *, rcvbuf: int | None = None) -> RawWS:
        """Open /ws on host:port (loopback) and finish the upgrade."""
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        limit = 64 * 1024 * 1024 if rcvbuf is None else 2**16
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        return cls(reader, writer)

    async def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        if self.close_code is not None:
            raise Closed(self.close_code)
        self.writer.write(frame(opcode, payload, fin=fin))
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            await self._lost()
            raise Closed(self.close_code or ABNORMAL) from exc

    async def send_text(self, text: str | bytes) -> None:
        await self.send(OP_TEXT, text.encode() if isinstance(text, str) else text)

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        try:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            await self._lost()
            raise Closed(self.close_code or ABNORMAL) from None
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def _lost(self) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL
        self.writer.close()

    async def recv(self) -> list[dict[str, Any]]:
        """The messages of the next text message (a JSON array unpacked); raises Closed."""
        while True:
            if self.close_code is not None:
                raise Closed(self.close_code)
            fin, op, payload = await self._read_frame()
            if op == OP_PING:
                self.writer.write(frame(OP_PONG, payload))
                continue
            if op == OP_PONG:
                self.pongs += 1
                continue
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_code = code
                try:
                    self.writer.write(frame(OP_CLOSE, payload[:2]))
                    self.writer.close()
                except (ConnectionError, OSError):
                    pass
                raise Closed(code, payload[2:].decode(errors="replace"))
            self._fragments.append(payload)
            if not fin:
                continue
            data, self._fragments = b"".join(self._fragments), []
            msg = json.loads(data)
            return msg if isinstance(msg, list) else [msg]

    async def close(self) -> None:
        """Close politely (1000) and wait briefly for the server's close frame."""
        if self.close_code is not None:
            return
        try:
            self.writer.write(frame(OP_CLOSE, struct.pack("!H", 1000)))
            async with asyncio.timeout(2):
                while True:
                    await self.recv()
        except (Closed, TimeoutError, ConnectionError, OSError):
            pass
        self.writer.close()
