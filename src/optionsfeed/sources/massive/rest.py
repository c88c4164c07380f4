"""Massive's REST endpoints the adapter needs: an underlying's contracts, chain snapshots.

Thin I/O over normalize.py. The key travels in an `Authorization: Bearer` header,
never in a URL (URLs end up in logs and exception messages), and `next_url`
pagination is followed only on the configured host, so the key is never sent
anywhere else. Pages are bounded (`limit` at the endpoint's maximum, at most
`max_pages` per query).

Errors: HTTP 401 raises SourceError (the key is wrong: check
OPTIONSFEED_MASSIVE_API_KEY), 403 SourceError (the key's plan lacks the data), any
other 4xx SourceError with the status (retrying would not help); 429, 5xx,
timeouts, connection errors and replies that are not pages raise RestUnavailable
(retry later). A 429 or 503 that says when to come back (`Retry-After`, seconds or
an HTTP date) puts that wait, at most `MAX_RETRY_AFTER_S`, in the exception's
`retry_after_s`: the caller waits at least that long before its next request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp
import msgspec
from yarl import URL

from ...errors import OptionsFeedError, SourceError
from ...model.calendar import trading_day
from ...model.contract import Contract
from .normalize import BadPage, SnapshotRow, parse_contracts_page, parse_snapshot_page

CONTRACTS_PATH = "/v3/reference/options/contracts"
SNAPSHOT_PATH = "/v3/snapshot/options/{underlying}"
CONTRACTS_LIMIT = 1000  # the endpoint's maximum page size
SNAPSHOT_LIMIT = 250  # the endpoint's maximum page size
MAX_PAGES = 50
KEY_HINT = "check OPTIONSFEED_MASSIVE_API_KEY"
_EXCERPT = 200
# A venue's Retry-After is honoured up to this: a garbled or hostile header (a date
# next year) must not park the adapter for longer than a minute.
MAX_RETRY_AFTER_S = 60.0


class RestUnavailable(OptionsFeedError):
    """A REST call failed in a way that may pass (outage, rate limit, bad page).

    `retry_after_s`: how long the venue asked us to wait (its `Retry-After`, at most
    `MAX_RETRY_AFTER_S`), or None when it did not say.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """A `Retry-After` header's wait in seconds at Unix time `now_s`, within
    [0, MAX_RETRY_AFTER_S]; None when absent or unreadable.

    RFC 9110: either a whole number of seconds or an HTTP date (a date already
    past means now: 0).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        wait = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        wait = when.timestamp() - now_s
    if not math.isfinite(wait):
        return None
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


class _Error(msgspec.Struct):
    error: str | None = None
    message: str | None = None


@dataclass(slots=True)
class ChainSnapshot:
    """A snapshot of part of a chain: rows by compact OSI symbol, the underlying's price."""

    rows: dict[str, SnapshotRow] = field(default_factory=dict)
    spot: float | None = None
    spot_us: int | None = None
    rejects: list[str] = field(default_factory=list)


class MassiveRest:
    """The REST client of one adapter; `http` is owned by the caller."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.http = http
        self.base = URL(base_url.rstrip("/"))
        self._api_key = api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_pages = max_pages

    def __repr__(self) -> str:
        return f"MassiveRest({str(self.base)!r})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***")[:_EXCERPT]

    async def _get(self, url: URL) -> bytes:
        what = url.path  # the path only: the query is nobody's business in a log line
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        try:
            async with self.http.get(url, headers=headers, timeout=self.timeout) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RestUnavailable(f"GET {what}: {type(exc).__name__}: {exc}") from None
        if status == 200:
            return body
        detail = self._detail(body)
        if status == 401:
            raise SourceError(
                f"Massive rejected the API key (HTTP 401 on {what}{detail}): {KEY_HINT}"
            )
        if status == 403:
            raise SourceError(
                f"Massive refused {what} (HTTP 403{detail}): the plan of the key in "
                "OPTIONSFEED_MASSIVE_API_KEY does not include it (options contracts, "
                "chain snapshots and real-time quotes are needed)"
            )
        if status == 429 or status >= 500:
            wait = retry_after_s(retry_after, time.time())
            hint = f" (retry after {wait:g} s)" if wait is not None else ""
            raise RestUnavailable(f"GET {what}: HTTP {status}{detail}{hint}", retry_after_s=wait)
        raise SourceError(f"Massive answered HTTP {status} on {what}{detail}")

    def _detail(self, body: bytes) -> str:
        try:
            err = msgspec.json.decode(body, type=_Error)
        except msgspec.DecodeError:
            return ""
        text = err.error or err.message
        return f": {self._scrub(text)}" if text else ""

    def _url(self, path: str, params: dict[str, str]) -> URL:
        return (self.base / path.lstrip("/")).with_query(params)

    def _follow(self, next_url: str) -> URL:
        """`next_url` as the next page's URL, if it is on our host."""
        url = URL(next_url)
        if not url.is_absolute():
            url = self.base.join(url)
        if url.origin() != self.base.origin():
            raise SourceError(
                f"Massive's next_url points to {url.host}, not {self.base.host}: "
                "not sending the API key there"
            )
        return url

    async def contracts(
        self, underlying: str, *, now_us: int, max_expiries: int
    ) -> tuple[list[Contract], list[str]]:
        """The contracts of the `max_expiries` nearest expiries not yet expired at `now_us`.

        Asks for contracts sorted by expiration date and stops paging once a later
        expiry shows up, so SPY's thousands of far contracts are not fetched.
        Returns (contracts, reasons for rows rejected).
        """
        url = self._url(CONTRACTS_PATH, {
            "underlying_ticker": underlying,
            "expired": "false",
            "expiration_date.gte": trading_day(now_us).isoformat(),
            "sort": "expiration_date",
            "order": "asc",
            "limit": str(CONTRACTS_LIMIT),
        })  # fmt: skip
        found: list[Contract] = []
        rejects: list[str] = []
        for _ in range(self.max_pages):
            try:
                page = parse_contracts_page(await self._get(url), underlying)
            except BadPage as exc:
                raise RestUnavailable(f"GET {url.path}: not a page of results: {exc}") from None
            rejects += page.rejects
            found += [c for c in page.contracts if c.expiry_us > now_us]
            if len({c.expiry_us for c in found}) > max_expiries or not page.next_url:
                break
            url = self._follow(page.next_url)
        else:
            raise RestUnavailable(f"GET {CONTRACTS_PATH}: more than {self.max_pages} pages")
        keep = set(sorted({c.expiry_us for c in found})[:max_expiries])
        return [c for c in found if c.expiry_us in keep], rejects

    async def snapshot(
        self, underlying: str, contracts: tuple[Contract, ...] | None = None
    ) -> ChainSnapshot:
        """The snapshot rows of `contracts` and the underlying's price.

        One query per expiry, limited to the strikes in between; None: just the
        underlying's price (a one-row query).
        """
        out = ChainSnapshot()
        path = SNAPSHOT_PATH.format(underlying=underlying)
        if contracts is None:
            await self._snapshot_query(self._url(path, {"limit": "1"}), out, None)
            return out
        by_expiry: dict[str, list[float]] = {}
        for c in contracts:
            by_expiry.setdefault(c.expiry.isoformat(), []).append(c.strike)
        wanted = {c.symbol for c in contracts}
        for expiry, strikes in by_expiry.items():
            url = self._url(path, {
                "expiration_date": expiry,
                "strike_price.gte": _num(min(strikes)),
                "strike_price.lte": _num(max(strikes)),
                "limit": str(SNAPSHOT_LIMIT),
            })  # fmt: skip
            await self._snapshot_query(url, out, wanted)
        return out

    async def _snapshot_query(self, url: URL, out: ChainSnapshot, wanted: set[str] | None) -> None:
        for _ in range(self.max_pages):
            try:
                page = parse_snapshot_page(await self._get(url))
            except BadPage as exc:
                raise RestUnavailable(f"GET {url.path}: not a page of results: {exc}") from None
            out.rejects += page.rejects
            if wanted is not None:
                out.rows.update((r.symbol, r) for r in page.rows if r.symbol in wanted)
            if page.spot is not None and (
                out.spot_us is None or (page.spot_us or 0) >= out.spot_us
            ):
                out.spot, out.spot_us = page.spot, page.spot_us
            if not page.next_url or wanted is None:
                return
            url = self._follow(page.next_url)
        raise RestUnavailable(f"GET {url.path}: more than {self.max_pages} pages")


def _num(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")
