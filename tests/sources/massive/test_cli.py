"""`optionsfeed up --source massive` as a user runs it: a subprocess against the local venue."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ...fakes.massive import Venue
from ...ports import free_port

COMMAND = str(Path(sys.executable).parent / "optionsfeed")


def env_for(venue: Venue, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIONSFEED_")}
    return {
        **env,
        "PYTHONUNBUFFERED": "1",
        "OPTIONSFEED_MASSIVE_API_KEY": key,
        "OPTIONSFEED_MASSIVE_URL": venue.ws_url,
        "OPTIONSFEED_MASSIVE_REST_URL": venue.rest_url,
        "OPTIONSFEED_MAX_CONTRACTS": "100",
    }


async def test_up_serves_the_chain_of_the_venue(tmp_path: Path) -> None:
    """GET /api/v1/chain/SPY returns the streamed window's records, priced."""
    port = free_port()
    async with Venue() as venue:
        with (tmp_path / "up.log").open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                COMMAND, "up", "--source", "massive", "--underlyings", "SPY", "--port", str(port),
                stdout=asyncio.subprocess.PIPE, stderr=err, env=env_for(venue, venue.api_key),
            )  # fmt: skip
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert f":{port}/" in line.decode(), (tmp_path / "up.log").read_text()
            body: dict[str, Any] = {}
            async with aiohttp.ClientSession() as http, asyncio.timeout(30):
                while True:
                    async with http.get(f"http://127.0.0.1:{port}/api/v1/chain/SPY") as r:
                        if r.status == 200:
                            body = await r.json()
                            if body["data"] and all(x["bid"] is not None for x in body["data"]):
                                break
                    # An external process coming up: nothing to await but its HTTP answers.
                    await asyncio.sleep(0.1)
            data = body["data"]
            assert 0 < len(data) <= 100
            assert {x["underlying"] for x in data} == {"SPY"}
            assert all(x["symbol"].startswith("SPY") and len(x["symbol"]) == 18 for x in data)
            assert any(x["iv"] is not None for x in data)
            assert len(venue.quote_subscriptions()) == len(data)
            async with aiohttp.ClientSession() as http, asyncio.timeout(15):
                while True:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                    await asyncio.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert proc.returncode == 0, (tmp_path / "up.log").read_text()


@pytest.mark.parametrize("where", ["rest", "websocket"])
async def test_up_with_a_wrong_key_exits_with_a_clear_message(where: str) -> None:
    """The venue rejects the key (over REST, or only on the WebSocket): exit 1, and the
    message names the variable, never the key."""
    key = "wrong-key-0c7e"
    async with Venue(api_key=key if where == "websocket" else "right-key", ws_key="right") as venue:
        proc = await asyncio.create_subprocess_exec(
            COMMAND, "up", "--source", "massive", "--underlyings", "SPY",
            "--port", str(free_port()),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env_for(venue, key),
        )  # fmt: skip
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = stderr.decode()
        assert proc.returncode == 1, text
        assert "rejected the API key" in text
        assert "OPTIONSFEED_MASSIVE_API_KEY" in text.splitlines()[-1]
        assert key not in text
