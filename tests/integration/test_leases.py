"""Two `optionsfeed process` on one Redis: one publisher per underlying, takeover, fencing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from optionsfeed.processing.placement import spread
from tests.ports import free_port

# Times processes against each other: runs alone (scripts/test), not beside other tests.
pytestmark = pytest.mark.alone

UNDERLYINGS = ["SPY", "QQQ", "AAPL"]


class Proc:
    """One `optionsfeed process` subprocess with its HTTP port (for /readyz)."""

    def __init__(
        self,
        redis_url: str,
        log: Path,
        underlyings: list[str] = UNDERLYINGS,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.log = log
        with log.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "optionsfeed.cli", "process", "--redis", redis_url,
                 "--port", str(self.port), "--rate", "1000",
                 "--underlyings", ",".join(underlyings), *extra],  # a later --rate wins
                stdout=subprocess.DEVNULL, stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def ready(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                body: dict[str, Any] = json.loads(r.read())
                return body
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
            return body
        except OSError:
            return None

    def owned(self) -> list[str]:
        body = self.ready()
        return [] if body is None else list(body.get("owned", []))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
        self.popen.wait()


def placed(procs: list[Proc], universe: list[str] = UNDERLYINGS) -> bool:
    """Every processor sees all of `procs` and owns exactly its share (the placement's)."""
    bodies = [p.ready() for p in procs]
    if any(b is None or "processor" not in b for b in bodies):
        return False
    ids = sorted(cast("dict[str, Any]", b)["processor"] for b in bodies)
    if any(sorted(cast("dict[str, Any]", b)["processors"]) != ids for b in bodies):
        return False
    share = spread(universe, ids)
    return all(sorted(b["owned"]) == sorted(share[b["processor"]]) for b in bodies if b is not None)


def wait_for(cond: Callable[[], bool], limit_s: float, what: str, step_s: float = 0.05) -> float:
    """Poll `cond` (state in other processes) until true; the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < limit_s, what
        time.sleep(step_s)
    return time.monotonic() - t0


def epochs(r: redis.Redis, universe: list[str] = UNDERLYINGS) -> dict[str, str | None]:
    out = {}
    for u in universe:
        e = cast("bytes | None", r.hget(f"of:{{{u}}}:meta", "epoch"))
        out[u] = None if e is None else e.decode()
    return out


@pytest.fixture
def pair(redis_url: str, tmp_path: Path) -> Iterator[tuple[Proc, Proc]]:
    """Two processors with the same flags; every underlying owned by exactly one of them."""
    a = Proc(redis_url, tmp_path / "a.log")
    b = Proc(redis_url, tmp_path / "b.log")
    try:
        wait_for(lambda: placed([a, b]), 30, "the underlyings are owned", step_s=0.2)
        # Owning a lease comes before the reset that puts the epoch in the cache.
        r = redis.Redis.from_url(redis_url)
        wait_for(lambda: None not in epochs(r).values(), 15, "every underlying is published")
        yield a, b
    finally:
        a.stop()
        b.stop()


def stable_epochs(r: redis.Redis, seconds: float) -> dict[str, str | None]:
    """Sample the caches' epochs for `seconds`: they must not change (no flapping)."""
    first = epochs(r)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert epochs(r) == first
        time.sleep(0.1)
    return first


def owner_of_spy(a: Proc, b: Proc) -> tuple[Proc, Proc]:
    return (a, b) if "SPY" in a.owned() else (b, a)


@pytest.mark.timeout(40)
def test_one_publisher_each_then_kill_9_moves_all(pair: tuple[Proc, Proc], redis_url: str) -> None:
    """Epochs do not flap with two processors; after kill -9 the other publishes each within 5 s, one new epoch."""
    r = redis.Redis.from_url(redis_url)
    a, b = pair
    before = stable_epochs(r, 2.5)
    assert sorted(a.owned() + b.owned()) == sorted(UNDERLYINGS)
    dead, alive = owner_of_spy(a, b)
    moved = dead.owned()
    dead.popen.kill()
    took = wait_for(
        lambda: all(epochs(r)[u] != before[u] for u in moved), 5, "the survivor takes over"
    )
    print(f"kill -9 -> new epoch of every underlying: {took:.2f} s")
    after = stable_epochs(r, 1.5)  # exactly one new epoch each
    assert all(after[u] != before[u] for u in moved)
    assert sorted(alive.owned()) == sorted(UNDERLYINGS)
    seq = int(r.hget("of:{SPY}:meta", "seq") or 0)
    wait_for(lambda: int(r.hget("of:{SPY}:meta", "seq") or 0) > seq, 3, "SPY is published")


@pytest.mark.timeout(40)
def test_sigterm_hands_over_within_a_second(pair: tuple[Proc, Proc], redis_url: str) -> None:
    """SIGTERM: the leases are released first, the peer's first envelope of each underlying
    (a new epoch) comes within 1 s of the signal."""
    r = redis.Redis.from_url(redis_url)
    a, b = pair
    before = epochs(r)
    leaving, staying = owner_of_spy(a, b)
    moved = leaving.owned()
    leaving.popen.send_signal(signal.SIGTERM)
    took = wait_for(
        lambda: all(epochs(r)[u] != before[u] for u in moved), 1.0, "handover", step_s=0.01
    )
    print(f"SIGTERM -> first new envelope of every underlying: {took:.3f} s")
    assert leaving.popen.wait(10) == 0, leaving.log.read_text()
    assert "leases released" in leaving.log.read_text()
    stable_epochs(r, 1.0)
    assert sorted(staying.owned()) == sorted(UNDERLYINGS)


@pytest.mark.timeout(40)
def test_a_frozen_owner_is_fenced_and_gets_its_share_back_later(
    pair: tuple[Proc, Proc], redis_url: str
) -> None:
    """SIGSTOP past the TTL, SIGCONT: the peer owns everything, the resumed one resets
    nothing itself and gets its share back by hand-over, one new epoch each."""
    r = redis.Redis.from_url(redis_url)
    a, b = pair
    before = epochs(r)
    frozen, _ = owner_of_spy(a, b)
    moved = frozen.owned()
    frozen.popen.send_signal(signal.SIGSTOP)
    wait_for(lambda: all(epochs(r)[u] != before[u] for u in moved), 6, "the peer takes over")
    taken = epochs(r)
    time.sleep(0.5)
    frozen.popen.send_signal(signal.SIGCONT)
    # The resumed processor starts no epoch of its own; its peer hands its share back
    # only once it has seen it live for the settling time (2 s), one epoch each.
    after = stable_epochs(r, 1.0)
    assert after == taken
    # (What it reports as owned at this moment races the hand-over back; the epochs
    # above and below are the proof: no reset of its own, then one per hand-over.)
    # It noticed: its leases lapsed, or (when the freeze caught it inside a Redis
    # read, whose timeout fires on resume) their renewal was refused first.
    log = frozen.log.read_text()
    assert any(m in log for m in ("lapsed", "fenced", "another processor holds it")), log
    wait_for(lambda: sorted(frozen.owned()) == sorted(moved), 6, "its share comes back")
    wait_for(lambda: all(epochs(r)[u] != taken[u] for u in moved), 3, "published by it")
    back = stable_epochs(r, 1.0)
    assert all(back[u] == taken[u] for u in UNDERLYINGS if u not in moved)
