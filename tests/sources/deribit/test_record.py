"""`optionsfeed record --source deribit`, then the recording replays to identical output."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import date
from pathlib import Path

import pytest

from optionsfeed.sources.deribit.symbols import index_channel, ticker_channel, trades_channel
from optionsfeed.sources.record import read_recording

from ...fakes.deribit import DeribitVenue
from ..test_record_replay import _replay
from .fixtures import chain, now_ms, ticker
from .test_command import command

BTC = chain("BTC", date.today(), 90_000)


@pytest.mark.timeout(60)
async def test_a_recorded_deribit_session_replays_to_identical_output(tmp_path: Path) -> None:
    """The recording keeps Deribit's venue columns (mark, forward, currency) and
    replays twice to the same publications, coin-quoted records included."""
    out = tmp_path / "btc.ofr"
    async with DeribitVenue(BTC) as venue:
        env = {**os.environ, "OPTIONSFEED_DERIBIT_URL": venue.url}
        proc = await asyncio.create_subprocess_exec(
            *command(), "record", "--source", "deribit", "--underlyings", "BTC", "--out", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            wanted = {index_channel("BTC"), trades_channel("BTC")} | {
                ticker_channel(i["instrument_name"]) for i in BTC
            }
            await venue.wait_for(
                lambda: any(c.channels == wanted for c in venue.clients.values()), 30
            )
            for step in range(3):
                ts = now_ms() + step
                await venue.push_index("BTC", 90_010.0 + step, ts)
                for inst in BTC:
                    await venue.push_ticker(ticker(inst, ts, 90_100.0 + step))
                await asyncio.sleep(0.05)  # three batches, not one
        finally:
            await asyncio.sleep(0.3)  # let the last notifications reach the file
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()

    header, frames = read_recording(out)
    assert header["source"] == "deribit"
    batches = [b for _, b in frames]
    assert any(
        ls.inverse and ls.contracts[0].currency == "BTC" for b in batches for ls in b.listings
    )
    assert any(q.forward is not None and q.mark is not None for b in batches for q in b.quotes)

    first, second = await _replay(out), await _replay(out)
    assert first == second
    quoted = [p for p in first if b'"options":[{' in p[3]]
    assert quoted, "the replay published the recorded quotes"
