"""`optionsfeed process` + `optionsfeed gateway --workers 2` as deployed: subprocesses,
a real Redis, real WebSocket clients; SIGTERM drains the clients with 1001."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from ..ports import free_port


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "optionsfeed.cli", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def deployment(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    processor = spawn(["process", "--redis", redis_url, "--rate", "2000"], tmp_path / "p.log")
    port = free_port()
    gw = spawn(
        ["gateway", "--redis", redis_url, "--port", str(port), "--workers", "2"],
        tmp_path / "g.log",
    )
    assert gw.stdout is not None
    try:
        # Each worker prints its URL once it listens.
        for _ in range(2):
            line = gw.stdout.readline().decode()
            assert f":{port}/" in line, (line, (tmp_path / "g.log").read_text())
        yield f"127.0.0.1:{port}", gw
    finally:
        stop(gw)
        stop(processor)


@pytest.mark.timeout(90)
async def test_workers_share_the_port_and_drain_on_sigterm(
    deployment: tuple[str, subprocess.Popen[bytes]],
) -> None:
    addr, gw = deployment
    async with aiohttp.ClientSession() as http:
        clients, nodes = [], set()
        for _ in range(40):
            ws = await http.ws_connect(f"ws://{addr}/ws", max_msg_size=0)
            welcome = await ws.receive_json(timeout=5)
            nodes.add(welcome["node"])
            clients.append(ws)
        assert len(nodes) == 2, "SO_REUSEPORT should spread connections over both workers"
        ws = clients[0]
        await ws.send_json({"op": "subscribe", "id": 1, "channels": ["stats.SPY"]})
        got = set()
        for _ in range(50):
            msg = await ws.receive_json(timeout=15)
            for m in msg if isinstance(msg, list) else [msg]:
                got.add(m["type"])
            if {"ack", "snapshot"} <= got:
                break
        assert {"ack", "snapshot"} <= got
        gw.send_signal(signal.SIGTERM)
        codes = []
        for c in clients:
            while (m := await c.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT:
                pass
            assert m.type is aiohttp.WSMsgType.CLOSE, m
            codes.append(m.data)  # the code in the server's close frame
        assert set(codes) == {1001}
    await asyncio.to_thread(gw.wait, 15)
    assert gw.returncode == 0
