"""Recordings: the codec, files that roll, damage detection, and deterministic replay."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import SourceBatch
from optionsfeed.sources.record import (
    BadRecording,
    RecordWriter,
    decode_batch,
    encode_batch,
    part_path,
    read_recording,
)
from optionsfeed.sources.replay import ReplaySource
from optionsfeed.sources.sim.market import SimMarket
from optionsfeed.sources.sim.universe import spec_for

from ..conftest import REFERENCE_START


def sim_batches(steps: int, per_step: int = 200) -> list[tuple[int, SourceBatch]]:
    market = SimMarket([spec_for("SPY"), spec_for("QQQ")], seed=3, start_us=REFERENCE_START)
    out = [(REFERENCE_START, SourceBatch(listings=market.listings()))]
    for i in range(steps):
        now = REFERENCE_START + (i + 1) * 10_000
        out.append((now, market.step(now, per_step)))
    return out


def same_batch(a: SourceBatch, b: SourceBatch) -> bool:
    def norm(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return ("nd", x.dtype.str[1:], x.tolist())
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: norm(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, list):
            return [norm(v) for v in x]
        return x

    return json.dumps(norm(a), default=str) == json.dumps(norm(b), default=str)


def test_a_batch_survives_encode_and_decode() -> None:
    for t, batch in sim_batches(3):
        t2, back = decode_batch(encode_batch(batch, t))
        assert t2 == t
        assert same_batch(batch, back)


def test_a_recording_rolls_into_parts_and_reads_back_whole(tmp_path: Path) -> None:
    batches = sim_batches(60)
    path = tmp_path / "rec.ofr"
    w = RecordWriter(path, source="sim", started_us=REFERENCE_START, roll_bytes=50_000)
    for t, b in batches:
        w.write(b, t)
    w.close()
    assert part_path(path, 1).exists()  # it rolled
    header, it = read_recording(path)
    assert header["source"] == "sim"
    back = list(it)
    assert [t for t, _ in back] == [t for t, _ in batches]
    assert all(same_batch(a, b) for (_, a), (_, b) in zip(batches, back, strict=True))


def test_damaged_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "rec.ofr"
    w = RecordWriter(path, source="sim", started_us=REFERENCE_START)
    for t, b in sim_batches(5):
        w.write(b, t)
    w.close()
    data = path.read_bytes()
    cut = tmp_path / "cut.ofr"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadRecording, match=r"cut\.ofr"):
        list(read_recording(cut)[1])
    junk = tmp_path / "junk.ofr"
    junk.write_bytes(b"not a recording at all")
    with pytest.raises(BadRecording, match=r"junk\.ofr"):
        read_recording(junk)


async def _replay(path: Path) -> list[tuple[str, int, int, bytes]]:
    source = ReplaySource(path, speed=None)
    proc = Processor()
    out = []
    async for batch in source.batches():
        for pub in proc.apply(batch, source.clock()):
            # The epoch is random per processing start; everything else must repeat.
            payload = pub.payload.replace(pub.epoch.encode(), b"E")
            out.append((pub.underlying, pub.prev, pub.seq, payload))
    return out


async def test_the_same_file_replays_to_identical_publications(tmp_path: Path) -> None:
    path = tmp_path / "rec.ofr"
    w = RecordWriter(path, source="sim", started_us=REFERENCE_START)
    for t, b in sim_batches(150):
        w.write(b, t)
    w.close()
    first, second = await _replay(path), await _replay(path)
    assert len(first) > 150
    assert first == second


async def test_replay_paces_batches_by_their_recorded_spacing(tmp_path: Path) -> None:
    path = tmp_path / "rec.ofr"
    w = RecordWriter(path, source="sim", started_us=REFERENCE_START)
    for t, b in sim_batches(20):  # 200 ms of recording
        w.write(b, t)
    w.close()
    source = ReplaySource(path, speed=2.0)  # -> about 100 ms
    t0 = time.monotonic()
    n = 0
    async for _ in source.batches():
        n += 1
    elapsed = time.monotonic() - t0
    assert n == 21
    assert elapsed >= 0.09


@pytest.mark.timeout(90)
def test_record_then_up_from_the_recording(tmp_path: Path) -> None:
    """`optionsfeed record`, then `optionsfeed up --source replay:FILE --speed max`."""
    out = tmp_path / "sim.ofr"
    subprocess.run(
        [sys.executable, "-m", "optionsfeed.cli", "record", "--out", str(out), "--seconds", "2",
         "--underlyings", "SPY", "--rate", "3000"],
        check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    header, it = read_recording(out)
    assert header["source"] == "sim"
    assert sum(b.event_count() for _, b in it) > 2000

    from ..integration.test_up import get
    from ..ports import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "optionsfeed.cli", "up", "--source", f"replay:{out}",
         "--speed", "max", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        status, body = 0, dict[str, Any]()
        for _ in range(100):
            status, body = get(f"http://127.0.0.1:{port}/api/v1/chain/SPY")
            if status == 200 and body["seq"] > 1:  # the listing, then the quotes
                break
            asyncio.run(asyncio.sleep(0.1))
        assert status == 200
        assert len(body["data"]) > 1000
        assert body["seq"] > 1
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_version_1_frame_still_decodes() -> None:
    """Frames written before venue columns (version 1) read back with none of them."""
    for t, batch in sim_batches(2):
        frame = encode_batch(batch, t)
        frame["listings"] = [ls[:5] for ls in frame["listings"]]
        frame["quotes"] = [q[:7] for q in frame["quotes"]]
        _, back = decode_batch(frame)
        assert same_batch(batch, back)
