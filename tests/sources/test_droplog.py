"""The rate-limited count and log of dropped provider data."""

from __future__ import annotations

import logging

import pytest

from optionsfeed.sources.droplog import DropCounter, DropLog


def test_drops_are_logged_once_per_reason_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The first drop of a reason at once; then one line per interval with the count."""
    now = [100.0]
    drops = DropLog(
        logging.getLogger("test.droplog"), "deribit", every_s=10.0, clock=lambda: now[0]
    )
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


def test_the_counter_reports_the_first_then_at_most_once_per_interval() -> None:
    """Counts everything; says how many to report, per reason, at most every interval."""
    counter = DropCounter(interval_s=10.0)
    assert counter.add("a", 0.0) == 1
    assert counter.add("a", 1.0) is None
    assert counter.add("a", 2.0) is None
    assert counter.add("b", 2.0) == 1
    assert counter.add("a", 10.5) == 3
    assert counter.counts == {"a": 4, "b": 1}
