"""Each WebSocket server of `optionsfeed bench wslib` runs at a tiny size, delivers every
message and gives a sane figure (no timing asserted)."""

from __future__ import annotations

import math

import pytest

from benchmarks.wslib import IMPLEMENTATIONS, MESSAGE, run_once


def test_the_message_is_400_bytes_of_text() -> None:
    assert len(MESSAGE.encode()) == 400


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_every_message_is_delivered_and_the_cpu_per_send_is_a_number(impl: str) -> None:
    if impl == "websockets":
        pytest.importorskip("websockets")
    res = run_once(impl, clients=20, rounds=5, interval_s=0.005)
    assert res.connected == 20
    assert res.sends == 100
    assert res.delivered == res.expected == 100
    assert res.cpu_s > 0
    assert math.isfinite(res.us_per_send)
    assert res.us_per_send > 0
