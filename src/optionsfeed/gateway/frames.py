"""WebSocket text frames from server to client (RFC 6455 section 5.2), no I/O.

Server frames are never masked, so a frame is a 2-10 byte header and the payload:
the gateway builds each frame once per flush and writes it to the socket itself,
one write per client per flush, instead of a library call per message.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying `payload` (UTF-8 JSON)."""
    n = len(payload)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, n) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, n) + payload
