"""The rate-limited log of dropped messages."""

from __future__ import annotations

import logging

import pytest

from optionsfeed.sources.deribit.connection import DropLog


def test_drops_are_logged_once_per_reason_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The first drop of a reason at once; then one line per interval with the count."""
    now = [100.0]
    drops = DropLog(logging.getLogger("test.droplog"), every_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.droplog"):
        for _ in range(5):
            drops.note("malformed", "not JSON")
        drops.note("out_of_order", "late")
        now[0] += 9.9
        drops.note("malformed", "still not JSON")
        now[0] += 0.2
        drops.note("malformed", "again")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "deribit: dropped a message (malformed): not JSON",
        "deribit: dropped a message (out_of_order): late",
        "deribit: dropped a message (malformed): again (5 more since the last report)",
    ]
