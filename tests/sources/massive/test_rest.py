"""rest.py against the venue: pagination, errors by status, and where the key may go."""

from __future__ import annotations

import time

import aiohttp
import pytest

from optionsfeed.errors import SourceError
from optionsfeed.sources.massive.rest import (
    MAX_RETRY_AFTER_S,
    MassiveRest,
    RestUnavailable,
    retry_after_s,
)

from ...fakes.massive import Venue

NOW_US = time.time_ns() // 1000


async def test_contracts_follow_next_url_and_stop_after_the_expiries_wanted() -> None:
    """1,000 a page: 8 expiries of 130 need a second page, and no third."""
    async with Venue(expiries=12) as venue, aiohttp.ClientSession() as http:
        rest = MassiveRest(http, venue.rest_url, venue.api_key)
        contracts, rejects = await rest.contracts("SPY", now_us=NOW_US, max_expiries=8)
        assert rejects == []
        assert len({c.expiry for c in contracts}) == 8
        assert len(contracts) == 8 * 130
        pages = [q for path, q, _ in venue.rest_log if path.endswith("/contracts")]
        assert len(pages) == 2
        assert "cursor" in pages[1]
        assert pages[0]["sort"] == "expiration_date"
        assert all("apiKey" not in q for q in pages)
        assert all(bearer for _, _, bearer in venue.rest_log)
        assert "venue-test-key" not in repr(rest)


async def test_snapshots_page_through_wide_windows_and_give_the_price() -> None:
    """More than 250 rows of one expiry come from several pages; the price is the venue's."""
    async with Venue(expiries=1, strike_step=1.0) as venue, aiohttp.ClientSession() as http:
        rest = MassiveRest(http, venue.rest_url, venue.api_key)
        contracts, _ = await rest.contracts("SPY", now_us=NOW_US, max_expiries=1)
        assert len(contracts) > 600
        snap = await rest.snapshot("SPY", tuple(contracts))
        assert set(snap.rows) == {c.symbol for c in contracts}
        assert snap.spot == 650.0
        assert snap.spot_us is not None
        assert len([p for p, _, _ in venue.rest_log if "/snapshot/" in p]) == 3
        spot_only = await rest.snapshot("SPY")
        assert (spot_only.spot, spot_only.rows) == (650.0, {})


async def test_errors_by_status_and_no_key_for_another_host() -> None:
    """401 and 403 are final (SourceError), 429 and 5xx transient; foreign next_url refused."""
    async with Venue() as venue, aiohttp.ClientSession() as http:
        rest = MassiveRest(http, venue.rest_url, venue.api_key)
        for status, error, match in [
            (401, SourceError, "OPTIONSFEED_MASSIVE_API_KEY"),
            (403, SourceError, "does not include it"),
            (404, SourceError, "HTTP 404"),
            (429, RestUnavailable, "HTTP 429"),
            (502, RestUnavailable, "HTTP 502"),
        ]:
            venue.fail_next(status)
            with pytest.raises(error, match=match):
                await rest.snapshot("SPY")
        venue.foreign_next_url = True
        with pytest.raises(SourceError, match="not sending the API key there"):
            await rest.contracts("SPY", now_us=NOW_US, max_expiries=8)
        await venue.down()
        with pytest.raises(RestUnavailable, match="HTTP 503"):
            await rest.snapshot("SPY")
    with pytest.raises(RestUnavailable, match="ClientConnectorError"):
        async with aiohttp.ClientSession() as http:
            await MassiveRest(http, venue.rest_url, venue.api_key).snapshot("SPY")


def test_retry_after_reads_seconds_and_http_dates_within_a_minute() -> None:
    """Seconds or an HTTP date (GMT); past dates are 0, far ones 60; garbage is None."""
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s(" 0 ", now) == 0.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:30 GMT", now) == 30.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:30 -0000", now) == 30.0
    assert retry_after_s("Wed, 21 Oct 2015 07:27:00 GMT", now) == 0.0
    assert retry_after_s("3600", now) == MAX_RETRY_AFTER_S == 60.0
    assert retry_after_s("Thu, 21 Oct 2027 07:28:00 GMT", now) == 60.0
    for bad in (None, "", "soon", "-5", "1.5e9", "١٢"):
        assert retry_after_s(bad, now) is None


async def test_a_429_carries_the_venues_retry_after() -> None:
    """HTTP 429 with Retry-After: RestUnavailable says how long to wait; without, None."""
    async with Venue() as venue, aiohttp.ClientSession() as http:
        rest = MassiveRest(http, venue.rest_url, venue.api_key)
        venue.fail_next(429, retry_after="12")
        with pytest.raises(RestUnavailable, match=r"HTTP 429.*retry after 12 s") as info:
            await rest.snapshot("SPY")
        assert info.value.retry_after_s == 12.0
        venue.fail_next(429)
        with pytest.raises(RestUnavailable) as info:
            await rest.snapshot("SPY")
        assert info.value.retry_after_s is None
