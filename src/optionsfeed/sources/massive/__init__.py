"""Massive (formerly Polygon.io): US equity options over its WebSocket and REST APIs.

`window` chooses the contracts to stream, `normalize` turns the venue's JSON into
our events (both pure); `rest` and `connection` do the I/O; `source` ties them
into `MassiveSource`.
"""

from __future__ import annotations

from .source import MassiveSource

__all__ = ["MassiveSource"]
