"""`optionsfeed up --source deribit` as a user runs it, pointed at the local venue."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from optionsfeed.sources.deribit.symbols import index_channel, ticker_channel, trades_channel

from ...fakes.deribit import DeribitVenue
from ...ports import free_port
from .fixtures import chain, now_ms, ticker

TODAY = date.today()
BTC = chain("BTC", TODAY, 90_000)
ETH = chain("ETH", TODAY, 3_000)


def command() -> list[str]:
    """The installed `optionsfeed` script of this environment (else the module)."""
    script = Path(sys.executable).parent / "optionsfeed"
    return [str(script)] if script.exists() else [sys.executable, "-m", "optionsfeed.cli"]


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


@pytest.mark.timeout(60)
async def test_up_serves_the_venues_chain(tmp_path: Path) -> None:
    """The command connects to OPTIONSFEED_DERIBIT_URL, and /api/v1/chain/BTC serves the
    venue's contracts with its quotes; /readyz turns 200 once both currencies have data."""
    port = free_port()
    log = tmp_path / "up.log"
    async with DeribitVenue(BTC + ETH) as venue:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPTIONSFEED_DERIBIT_URL": venue.url}
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *command(), "up", "--source", "deribit", "--port", str(port),
                stdout=asyncio.subprocess.PIPE, stderr=err, env=env,
            )  # fmt: skip
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert f":{port}/" in line.decode(), (line, log.read_text())
            wanted = (
                {index_channel(c) for c in ("BTC", "ETH")}
                | {trades_channel(c) for c in ("BTC", "ETH")}
                | {ticker_channel(i["instrument_name"]) for i in BTC + ETH}
            )
            await venue.wait_for(
                lambda: any(c.channels == wanted for c in venue.clients.values()), 30
            )
            ts = now_ms()
            await venue.push_index("BTC", 90_010.0, ts)
            await venue.push_index("ETH", 3_001.0, ts)
            for inst in BTC:
                await venue.push_ticker(ticker(inst, ts, 90_100.0))
            for inst in ETH:
                await venue.push_ticker(ticker(inst, ts, 3_002.0))

            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                async with asyncio.timeout(20):
                    while True:
                        status, body = await get(http, f"{base}/api/v1/chain/BTC")
                        if status == 200 and all(r["bid"] is not None for r in body["data"]):
                            break
                        await asyncio.sleep(0.1)  # another process's state: poll
                assert {r["symbol"] for r in body["data"]} == {i["instrument_name"] for i in BTC}
                rec = next(r for r in body["data"] if r["symbol"] == BTC[2]["instrument_name"])
                assert rec["currency"] == "BTC"
                assert rec["bid"] == ticker(BTC[2], ts, 90_100.0)["best_bid_price"]
                assert rec["iv"] is not None
                async with asyncio.timeout(20):
                    while (await get(http, f"{base}/readyz"))[0] != 200:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                # The stream speaks the venue's names: option.{instrument} and chain.BTC.{date}.
                name = BTC[2]["instrument_name"]
                day = rec["expiry"].replace("-", "")
                async with http.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
                    await ws.send_json(
                        {
                            "op": "subscribe",
                            "id": 1,
                            "channels": [f"option.{name}", f"chain.BTC.{day}"],
                        }
                    )
                    snaps: dict[str, Any] = {}
                    async with asyncio.timeout(10):
                        while len(snaps) < 2:
                            frame = await ws.receive_json()
                            for msg in frame if isinstance(frame, list) else [frame]:
                                if msg["type"] == "ack":
                                    assert all(r["ok"] for r in msg["results"]), msg
                                if msg["type"] == "snapshot":
                                    snaps[msg["channel"]] = msg
                    (one,) = snaps[f"option.{name}"]["data"]
                    assert (one["symbol"], one["currency"]) == (name, "BTC")
                    assert all(
                        r["expiry"] == rec["expiry"] for r in snaps[f"chain.BTC.{day}"]["data"]
                    )
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert "deribit: streaming BTC 12 options, ETH 12 options" in log.read_text()
