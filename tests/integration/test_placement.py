"""N `optionsfeed process` on one Redis share the underlyings (real subprocesses).

The default lease timing (`--lease-ttl-s 3`; renewal, retries and hysteresis scale
with it): shorter ones lapse on a loaded 2-core machine, where three processors each
pricing eight chains can hold their event loops past the second of validity a 1.5 s
TTL leaves. A low simulated rate keeps the pricing light.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from optionsfeed.broker.redis import RedisBroker
from optionsfeed.client import Client
from optionsfeed.gateway.session import Limits
from optionsfeed.processing.placement import spread
from tests.gateway.conftest import start_gateway
from tests.integration.test_leases import Proc, epochs, placed, wait_for

# Times processes against each other: runs alone (scripts/test), not beside other tests.
pytestmark = pytest.mark.alone

# Twelve simulated underlyings of about 1,100-1,700 contracts each.
TWELVE = ["T03", "T06", "T52", "T17", "T55", "T08", "T32", "T01", "T39", "T18", "T49", "T10"]
FIVE = TWELVE[:5]
SHORT = ("--lease-ttl-s", "3", "--rate", "300")


class Procs:
    """Processors started on demand, every one stopped at the end."""

    def __init__(self, redis_url: str, tmp_path: Path, universe: list[str]) -> None:
        self.redis_url = redis_url
        self.tmp_path = tmp_path
        self.universe = universe
        self.all: list[Proc] = []

    def start(self) -> Proc:
        p = Proc(self.redis_url, self.tmp_path / f"p{len(self.all)}.log", self.universe, SHORT)
        self.all.append(p)
        return p

    def stop(self) -> None:
        for p in self.all:
            p.stop()


@pytest.fixture
def procs(redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Procs]:
    ps = Procs(redis_url, tmp_path, getattr(request, "param", TWELVE))
    try:
        yield ps
    finally:
        ps.stop()


def owners(procs: list[Proc]) -> dict[str, list[str]]:
    return {str(p.port): sorted(p.owned()) for p in procs}


@pytest.mark.timeout(120)
def test_three_share_twelve_one_leaves_one_joins(procs: Procs, redis_url: str) -> None:
    """Three processors own 4 underlyings each; one leaves (SIGTERM) and its share spreads
    over the two others (6 each); a new one joins and gets its share (4 each again)."""
    r = redis.Redis.from_url(redis_url)
    a, b, c = procs.start(), procs.start(), procs.start()
    wait_for(lambda: placed([a, b, c], TWELVE), 60, "three own 4 each", step_s=0.2)
    assert sorted(len(p.owned()) for p in (a, b, c)) == [4, 4, 4]
    wait_for(lambda: None not in epochs(r, TWELVE).values(), 10, "all published")
    before = epochs(r, TWELVE)
    leaving = c.owned()
    c.popen.send_signal(signal.SIGTERM)
    assert c.popen.wait(10) == 0
    wait_for(lambda: placed([a, b], TWELVE), 15, "two own 6 each", step_s=0.1)
    assert sorted(len(p.owned()) for p in (a, b)) == [6, 6]
    wait_for(
        lambda: all(epochs(r, TWELVE)[u] != before[u] for u in leaving), 5, "the share published"
    )
    d = procs.start()
    wait_for(lambda: placed([a, b, d], TWELVE), 40, "the newcomer gets its share", step_s=0.2)
    assert sorted(len(p.owned()) for p in (a, b, d)) == [4, 4, 4]
    assert sorted(u for p in (a, b, d) for u in p.owned()) == sorted(TWELVE)


class Recorder:
    """Every live envelope of `universe`, in the order Redis delivered them (a thread)."""

    def __init__(self, redis_url: str, universe: list[str]) -> None:
        self.r = redis.Redis.from_url(redis_url)
        self.pubsub = self.r.pubsub()
        self.pubsub.subscribe(*(f"of:{{{u}}}:live" for u in universe))
        self.got: list[tuple[str, str, int, int]] = []  # underlying, epoch, prev, seq
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if m is not None:
                env = json.loads(m["data"])
                self.got.append((env["u"], env["epoch"], env["prev"], env["seq"]))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.pubsub.close()


def interleaved(got: list[tuple[str, str, int, int]]) -> list[str]:
    """Where envelopes of two writers mix: each must continue the last one of its
    underlying, or start an epoch never seen before (a reset, seq 1)."""
    last: dict[str, tuple[str, int]] = {}
    seen: set[tuple[str, str]] = set()
    bad = []
    for u, epoch, prev, seq in got:
        if prev == 0 and seq == 1:
            if (u, epoch) in seen:
                bad.append(f"{u}: epoch {epoch} started twice")
            seen.add((u, epoch))
        elif last.get(u) != (epoch, prev):
            bad.append(f"{u}: {epoch}/{prev}->{seq} after {last.get(u)}")
        last[u] = (epoch, seq)
    return bad


@pytest.mark.parametrize("procs", [FIVE], indirect=True)
@pytest.mark.timeout(120)
def test_two_on_five_one_publisher_at_every_moment(procs: Procs, redis_url: str) -> None:
    """One processor alone, a second joins (hand-overs), the first leaves (SIGTERM), a
    third joins: in every underlying's live stream, no two writers' envelopes mix."""
    r = redis.Redis.from_url(redis_url)
    rec = Recorder(redis_url, FIVE)
    try:
        a = procs.start()
        wait_for(lambda: sorted(a.owned()) == sorted(FIVE), 40, "the first owns all", step_s=0.2)
        b = procs.start()
        wait_for(lambda: placed([a, b], FIVE), 40, "two share five", step_s=0.2)
        assert sorted(len(p.owned()) for p in (a, b)) == [2, 3]
        a.popen.send_signal(signal.SIGTERM)
        assert a.popen.wait(10) == 0
        wait_for(lambda: sorted(b.owned()) == sorted(FIVE), 10, "the second owns all", step_s=0.1)
        c = procs.start()
        wait_for(lambda: placed([b, c], FIVE), 40, "two share five again", step_s=0.2)
        wait_for(lambda: None not in epochs(r, FIVE).values(), 5, "all published")
        time.sleep(0.5)
    finally:
        rec.close()
    assert len(rec.got) > 100
    assert interleaved(rec.got) == []
    resets = sum(1 for _, _, prev, seq in rec.got if prev == 0 and seq == 1)
    # 5 first, then one per hand-over or takeover: never a storm of epochs.
    moves = len(spread(FIVE, ["x", "y"])["x"])  # about half move at each step
    assert 5 <= resets <= 5 + 5 + 5 + moves + 5, resets


THREE = TWELVE[:3]


@pytest.mark.parametrize("procs", [THREE], indirect=True)
@pytest.mark.timeout(150)
async def test_kill_9_under_50_clients(procs: Procs, redis_url: str) -> None:
    """kill -9 of a processor under 50 WebSocket clients (a real gateway over Redis): each
    underlying it owned is published again within 5 s with exactly one new epoch, and
    every client ends equal to a fresh snapshot of its channel."""
    r = redis.Redis.from_url(redis_url)
    a, b = procs.start(), procs.start()
    await asyncio.to_thread(wait_for, lambda: placed([a, b], THREE), 60, "placed", 0.2)
    await asyncio.to_thread(
        wait_for, lambda: None not in epochs(r, THREE).values(), 10, "published"
    )
    async with RedisBroker(redis_url) as broker:
        _, addr, stop_gateway = await start_gateway(broker, Limits(max_channels=5))
        clients = [Client(f"ws://{addr}/ws") for _ in range(50)]
        try:
            for i, c in enumerate(clients):
                await c.__aenter__()
                await c.subscribe([f"chain.{THREE[i % 3]}"])
            dead = max((a, b), key=lambda p: len(p.owned()))
            alive = b if dead is a else a
            moved = await asyncio.to_thread(dead.owned)
            before = epochs(r, THREE)
            t0 = time.monotonic()
            dead.popen.kill()
            while any(epochs(r, THREE)[u] == before[u] for u in moved):
                assert time.monotonic() - t0 < 5.0, "published again within 5 s"
                await asyncio.sleep(0.02)
            took = time.monotonic() - t0
            print(f"kill -9 -> every underlying published again: {took:.2f} s ({moved})")
            after = epochs(r, THREE)
            await asyncio.sleep(1.5)
            assert epochs(r, THREE) == after  # exactly one new epoch each
            # Freeze the survivor, so that the data stands still, then compare.
            alive.popen.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(0.3)
                fresh = {u: await rest_chain(addr, u) for u in THREE}

                def differ() -> list[str]:
                    out = []
                    for i, c in enumerate(clients):
                        st = c.state(f"chain.{THREE[i % 3]}")
                        want = fresh[THREE[i % 3]]
                        # A client's seq is that of the last envelope that changed its
                        # channel: one that moved only the spot or the stats leaves it.
                        if st.epoch != want["epoch"] or st.seq > want["seq"]:
                            out.append(f"client {i}: at {st.epoch}/{st.seq}, "
                                       f"cache {want['epoch']}/{want['seq']}")  # fmt: skip
                        elif st.rows != {row["symbol"]: row for row in want["data"]}:
                            rows = {row["symbol"]: row for row in want["data"]}
                            bad = [k for k in rows if st.rows.get(k) != rows[k]][:3]
                            out.append(f"client {i}: rows differ at {bad}")
                    return out

                end = time.monotonic() + 20
                while wrong := differ():
                    assert time.monotonic() < end, (
                        f"every client equals a fresh snapshot: {wrong[:5]}"
                    )
                    await asyncio.sleep(0.1)
                assert all(fresh[u]["epoch"] == after[u] for u in THREE)
            finally:
                alive.popen.send_signal(signal.SIGCONT)
        finally:
            for c in clients:
                await c.aclose()
            await stop_gateway()


async def rest_chain(addr: str, underlying: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{addr}/api/v1/chain/{underlying}") as resp,
    ):
        body: dict[str, Any] = await resp.json()
        return body
