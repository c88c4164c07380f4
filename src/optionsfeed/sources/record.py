"""Recording normalized source batches to files, and reading them back.

A recording is a zstd-compressed stream of msgpack frames. The first frame is a
header (`format`, `version`, `source`, `started_us`, `optionsfeed`); every other
frame is one `SourceBatch` with the clock time `t` (µs) at which the source
produced it. NumPy columns are stored as raw little-endian bytes, so writing and
reading a batch costs a few buffer copies. A recording may span several files:
`PATH`, then `PATH.1`, `PATH.2`, ... (a new one starts when the current one passes
`roll_bytes` of compressed output).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from datetime import date
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
import zstandard

from .. import __version__
from ..errors import InvalidInput
from ..model.contract import Contract
from .base import Listing, Quotes, SourceBatch, Trades, UnderlyingTick

FORMAT = "optionsfeed-record"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 2 added venue quote columns and `inverse`
DEFAULT_ROLL_BYTES = 256 * 1024 * 1024


class BadRecording(InvalidInput):
    """A file that is not a readable recording; the message says which and why."""


# -- batch <-> plain data (pure) ----------------------------------------------------


def _f64(a: np.ndarray[Any, Any] | None) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, dtype="<f8").tobytes()


def _i64(a: np.ndarray[Any, Any]) -> bytes:
    return np.ascontiguousarray(a, dtype="<i8").tobytes()


def _bool(a: np.ndarray[Any, Any] | None) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, dtype=np.bool_).tobytes()


def _opt(b: bytes | None, dtype: str) -> np.ndarray[Any, Any] | None:
    return None if b is None else _arr(b, dtype)


def _contract(c: Contract) -> list[Any]:
    return [c.symbol, c.underlying, c.root, c.expiry.isoformat(), c.expiry_us, c.strike,
            c.right, c.multiplier, c.currency, c.exercise]  # fmt: skip


def encode_batch(batch: SourceBatch, t_us: int) -> dict[str, Any]:
    """`batch` as plain msgpack-able data, stamped with the clock time `t_us`."""
    return {
        "t": t_us,
        "listings": [
            [ls.underlying, [_contract(c) for c in ls.contracts], ls.rate, ls.dividend_yield,
             _f64(ls.open_interest), ls.inverse]
            for ls in batch.listings
        ],
        "ticks": [[k.underlying, k.price, k.bid, k.ask, k.ts] for k in batch.ticks],
        "quotes": [
            [q.underlying, q.symbols, _f64(q.bid), _f64(q.ask), _f64(q.bid_size),
             _f64(q.ask_size), _i64(q.ts), _f64(q.mark), _f64(q.forward), _f64(q.last),
             _f64(q.volume), _f64(q.open_interest), _bool(q.halted)]
            for q in batch.quotes
        ],
        "trades": [
            [t.underlying, t.symbols, _f64(t.price), _f64(t.size), _i64(t.ts)]
            for t in batch.trades
        ],
    }  # fmt: skip


def _arr(b: bytes, dtype: str) -> np.ndarray[Any, Any]:
    return np.frombuffer(b, dtype=dtype).astype(dtype[1:] if dtype[0] == "<" else dtype)


def decode_batch(obj: dict[str, Any]) -> tuple[int, SourceBatch]:
    """The clock time and the batch of one recorded frame; KeyError/ValueError if malformed."""
    listings = []
    for u, contracts, rate, q, oi, *more in obj["listings"]:
        cs = [
            # Recordings made before `exercise` was recorded replay as European.
            Contract(s, und, root, date.fromisoformat(exp), int(exp_us), float(k), right,
                     int(mult), cur, ex[0] if ex else "european")
            for s, und, root, exp, exp_us, k, right, mult, cur, *ex in contracts
        ]  # fmt: skip
        inverse = bool(more[0]) if more else False
        listings.append(Listing(u, cs, rate, q, _opt(oi, "<f8"), inverse=inverse))
    batch = SourceBatch(
        listings=listings,
        ticks=[UnderlyingTick(u, p, b, a, ts) for u, p, b, a, ts in obj["ticks"]],
        quotes=[_quotes(q) for q in obj["quotes"]],
        trades=[
            Trades(u, list(s), _arr(p, "<f8"), _arr(z, "<f8"), _arr(ts, "<i8"))
            for u, s, p, z, ts in obj["trades"]
        ],
    )  # fmt: skip
    return int(obj["t"]), batch


def _quotes(q: list[Any]) -> Quotes:
    u, s, b, a, bs, az, ts, *venue = q
    mark, forward, last, volume, oi, halted = venue if venue else [None] * 6
    return Quotes(
        u, list(s), _arr(b, "<f8"), _arr(a, "<f8"), _arr(bs, "<f8"), _arr(az, "<f8"),
        _arr(ts, "<i8"), mark=_opt(mark, "<f8"), forward=_opt(forward, "<f8"),
        last=_opt(last, "<f8"), volume=_opt(volume, "<f8"), open_interest=_opt(oi, "<f8"),
        halted=_opt(halted, "|b1"),
    )  # fmt: skip


# -- files --------------------------------------------------------------------------


def part_path(path: Path, index: int) -> Path:
    """The file of part `index` of a recording at `path` (0 is `path` itself)."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


class RecordWriter:
    """Appends batches to a recording at `path`, rolling to a new file past `roll_bytes`."""

    def __init__(
        self, path: Path, *, source: str, started_us: int, roll_bytes: int = DEFAULT_ROLL_BYTES
    ) -> None:
        self.path = path
        self.roll_bytes = roll_bytes
        self.header = {"format": FORMAT, "version": VERSION, "source": source,
                       "started_us": started_us, "optionsfeed": __version__}  # fmt: skip
        self._enc = msgspec.msgpack.Encoder()
        self._part = 0
        self._raw: IO[bytes] | None = None
        self._z: Any = None
        self.batches = 0
        self._open()

    def _open(self) -> None:
        self._raw = part_path(self.path, self._part).open("wb")
        self._z = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)
        self._frame({**self.header, "part": self._part})

    def _frame(self, obj: dict[str, Any]) -> None:
        body = self._enc.encode(obj)
        self._z.write(len(body).to_bytes(4, "little") + body)

    def write(self, batch: SourceBatch, t_us: int) -> None:
        self._frame(encode_batch(batch, t_us))
        self.batches += 1
        assert self._raw is not None
        if self._raw.tell() >= self.roll_bytes:
            self._close_part()
            self._part += 1
            self._open()

    def _close_part(self) -> None:
        if self._z is not None:
            self._z.flush(zstandard.FLUSH_FRAME)
            self._z.close()
        if self._raw is not None:
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
        self._z = self._raw = None

    def flush(self) -> None:
        """Make what was written so far readable (ends a zstd block)."""
        if self._z is not None:
            self._z.flush(zstandard.FLUSH_BLOCK)

    def close(self) -> None:
        self._close_part()


def read_recording(path: Path) -> tuple[dict[str, Any], Iterator[tuple[int, SourceBatch]]]:
    """The header of the recording at `path`, and an iterator over its batches (all parts)."""
    first = _frames(path)
    try:
        header = next(first, None)
    finally:
        first.close()
    if header is None:
        raise BadRecording(f"{path}: empty file")
    _check_header(path, header)

    def batches() -> Iterator[tuple[int, SourceBatch]]:
        index = 0
        while (p := part_path(path, index)).exists():
            frames = _frames(p)
            try:
                _check_header(p, next(frames, {}))
                for n, obj in enumerate(frames, start=1):
                    try:
                        yield decode_batch(obj)
                    except (KeyError, ValueError, TypeError) as exc:
                        raise BadRecording(f"{p}: frame {n} is malformed: {exc!r}") from exc
            finally:
                frames.close()
            index += 1

    return header, batches()


def _check_header(path: Path, obj: Any) -> None:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise BadRecording(f"{path}: not an optionsfeed recording")
    if obj.get("version") not in READABLE_VERSIONS:
        raise BadRecording(
            f"{path}: recording version {obj.get('version')}, this optionsfeed reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )


def _read_exact(reader: Any, n: int) -> bytes:
    """Up to `n` bytes: fewer only at the end of the data."""
    parts, got = [], 0
    while got < n:
        chunk = reader.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _frames(path: Path) -> Generator[Any, None, None]:
    dec = msgspec.msgpack.Decoder()
    try:
        with path.open("rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            while True:
                head = _read_exact(reader, 4)
                if not head:
                    return
                size = int.from_bytes(head, "little")
                body = _read_exact(reader, size)
                if len(head) < 4 or len(body) < size:
                    raise BadRecording(f"{path}: truncated (the recording was cut off)")
                yield dec.decode(body)
    except zstandard.ZstdError as exc:
        raise BadRecording(f"{path}: not zstd data or corrupt: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRecording(f"{path}: corrupt frame: {exc}") from exc
    except OSError as exc:
        raise BadRecording(f"{path}: {exc}") from exc
