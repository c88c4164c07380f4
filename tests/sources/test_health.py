"""health.py: /readyz's judgment (pure) and the watch over a source's health."""

from __future__ import annotations

from datetime import datetime

from optionsfeed.model.calendar import NEW_YORK, market_session
from optionsfeed.sources.health import Link, LinkWatch, Verdict, judge

S = 1_000_000  # µs


def ny(text: str) -> int:
    """New York wall time `text` (ISO) in µs."""
    return int(datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).timestamp()) * S


def verdict(now: int, newest_s_ago: float, link: Link | None = None, *, xnys: bool = True,
            fresh: float = 10.0, grace: float = 10.0) -> Verdict:  # fmt: skip
    return judge(now, ("SPY", now - int(newest_s_ago * S)), link,
                 hours=market_session if xnys else None, fresh_within_s=fresh,
                 grace_s=grace)  # fmt: skip


def test_a_quiet_feed_outside_market_hours_is_ready_and_says_why() -> None:
    """Weekend, holiday, night, after the 13:00 early close of 2026-11-27: ready, "market
    closed", however old the data; the same hours on a trading day are not."""
    closed = [
        ny("2026-11-28T11:00:00"),  # Saturday
        ny("2026-11-26T11:00:00"),  # Thanksgiving
        ny("2026-11-25T03:00:00"),  # a night
        ny("2026-11-24T16:00:00"),  # the close itself
        ny("2026-11-27T13:00:00"),  # the early close
        ny("2026-11-27T15:00:00"),
    ]
    for now in closed:
        assert verdict(now, 7200) == Verdict(True, "market closed"), now
    stale = verdict(ny("2026-11-27T12:59:00"), 60)
    assert stale == Verdict(False, "SPY: newest data is 60.0 s old (limit 10 s)")
    assert not verdict(ny("2026-11-25T11:00:00"), 60).ready


def test_the_first_minute_after_the_open_is_not_judged() -> None:
    """09:30-09:31 New York: last night's data is fine; from 09:31 it is stale."""
    assert verdict(ny("2026-11-25T09:30:00"), 50_000) == Verdict(True, "market just opened")
    assert verdict(ny("2026-11-25T09:30:59"), 50_000).ready
    assert not verdict(ny("2026-11-25T09:31:00"), 50_000).ready


def test_a_venue_without_hours_is_always_judged() -> None:
    """Deribit never closes: a Saturday's stale data is not ready; fresh data is."""
    saturday = ny("2026-11-28T11:00:00")
    assert not verdict(saturday, 11, xnys=False).ready
    assert verdict(saturday, 9, xnys=False) == Verdict(True, None)
    assert judge(saturday, None, None, hours=None, fresh_within_s=10, grace_s=10) == Verdict(
        False, "no data yet"
    )


def test_a_brief_reconnect_is_a_note_and_a_long_disconnect_is_not_ready() -> None:
    """Down for 0.5 s with fresh data: ready, the problem noted; down for the grace: not
    ready with the source's reason, even with fresh data or a closed market."""
    now = ny("2026-11-25T11:00:00")
    brief = Link("massive: disconnected (reset); retrying in 0.3 s", now - S // 2)
    assert verdict(now, 1, brief) == Verdict(True, brief.problem)
    long = Link("massive: disconnected (reset); reconnecting", now - 10 * S)
    assert verdict(now, 1, long) == Verdict(False, long.problem)
    saturday = ny("2026-11-28T11:00:00")
    assert verdict(saturday, 1, Link(long.problem, saturday - 10 * S)) == Verdict(
        False, long.problem
    )
    assert verdict(saturday, 1, Link(brief.problem, saturday)) == Verdict(
        True, f"market closed; {brief.problem}"
    )
    # Stale data while open is not ready, brief trouble or not.
    assert verdict(now, 11, brief).reason == "SPY: newest data is 11.0 s old (limit 10 s)"


def test_the_watch_dates_a_problem_from_its_first_sight_whatever_its_wording() -> None:
    """Changing wording continues one problem; None ends it; the next starts afresh."""
    health: list[str | None] = [None]
    watch = LinkWatch(lambda: health[0])
    assert watch.observe(1) is None
    health[0] = retrying = "massive: disconnected (reset); retrying in 0.4 s"
    assert watch.observe(2) == Link(retrying, 2)
    health[0] = again = "massive: disconnected (reset); reconnecting"
    assert watch.observe(9) == Link(again, 2)
    health[0] = None
    assert watch.observe(10) is None
    health[0] = connecting = "massive: connecting"
    assert watch.observe(11) == Link(connecting, 11)
