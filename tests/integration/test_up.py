"""`optionsfeed up --redis ...` as a user runs it: a subprocess, a real Redis, HTTP."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from optionsfeed.model.envelope import Envelope, decode_envelope

from ..ports import free_port


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def up(redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "optionsfeed.cli", "up", "--redis", redis_url,
             "--port", str(port), "--rate", "3000"],
            stdout=subprocess.PIPE,
            stderr=err,  # a file, not a pipe: nobody drains it while the test runs
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline().decode()  # printed once the HTTP server listens
        assert f":{port}/" in line, (line, log.read_text())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    assert proc.returncode == 0, log.read_text()


@pytest.mark.timeout(60)
def test_up_moves_spy_through_redis(up: str, redis_url: str) -> None:
    """Within 10 s: >= 1,000 SPY records cached, a stream, pub/sub envelopes; REST serves them."""
    r = redis.Redis.from_url(redis_url)
    pubsub = r.pubsub()
    pubsub.subscribe("of:{SPY}:live")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and r.hlen("of:{SPY}:chain") < 1000:
        time.sleep(0.1)
    assert r.hlen("of:{SPY}:chain") >= 1000
    envelopes: list[Envelope] = []
    while len(envelopes) < 5 and time.monotonic() < deadline + 5:
        msg = pubsub.get_message(timeout=1.0)
        if msg and msg["type"] == "message":
            envelopes.append(decode_envelope(msg["data"]))
    assert len(envelopes) == 5
    seqs = [e.seq for e in envelopes]
    assert all(b.prev == a.seq for a, b in itertools.pairwise(envelopes)), seqs
    assert r.xlen("of:{SPY}:hist") > 0
    assert r.hget("of:{SPY}:meta", "epoch") == envelopes[0].epoch.encode()
    pubsub.close()
    r.close()

    status, body = get(f"{up}/api/v1/chain/SPY")
    assert status == 200
    assert body["underlying"] == "SPY"
    assert body["epoch"] == envelopes[0].epoch
    assert body["seq"] >= envelopes[0].seq
    assert len(body["data"]) >= 1000
    quoted = [rec for rec in body["data"] if rec["bid"] is not None]
    assert quoted, "some contracts are quoted"
    rec = quoted[0]
    for key in (
        "symbol",
        "expiry",
        "strike",
        "right",
        "iv",
        "delta",
        "gamma",
        "theta",
        "vega",
        "rho",
        "ts",
        "flags",
    ):
        assert key in rec

    status, listing = get(f"{up}/api/v1/underlyings")
    assert status == 200
    spy = next(u for u in listing["underlyings"] if u["symbol"] == "SPY")
    assert spy["contracts"] >= 4000
    assert spy["expiries"]
    status, one = get(f"{up}/api/v1/chain/SPY?expiry={spy['expiries'][0]}")
    assert status == 200
    assert {x["expiry"] for x in one["data"]} == {spy["expiries"][0]}
    assert get(f"{up}/api/v1/chain/NOPE")[0] == 404
    assert get(f"{up}/api/v1/chain/spy")[0] == 400
    assert get(f"{up}/api/v1/chain/SPY?expiry=2026-02-30")[0] == 400
    assert get(f"{up}/api/v1/chain/SPY?expiry=2031-01-17")[0] == 404
    assert get(f"{up}/healthz")[0] == 200
    deadline = time.monotonic() + 10
    while get(f"{up}/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(f"{up}/readyz")[0] == 200


def test_bad_settings_exit_with_a_message() -> None:
    """An unknown OPTIONSFEED_* variable stops the command with exit 2 and a clear message."""
    proc = subprocess.run(
        [sys.executable, "-m", "optionsfeed.cli", "up"],
        env={**os.environ, "OPTIONSFEED_RAET": "1"},
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert b"unknown setting OPTIONSFEED_RAET" in proc.stderr
