"""Massive (formerly Polygon.io) US equity options as a Source.

Per underlying, on every (re)connection:
1. REST: the contracts of the nearest expiries (/v3/reference/options/contracts)
   and, the first time, the underlying's price (/v3/snapshot/options/{U});
2. the window of contracts to stream (window.py), within `max_contracts` over all
   underlyings (split evenly between them);
3. REST: the chain snapshot of the window: open interest, last quotes, price;
4. WebSocket: auth, then a Listing of the window (a new epoch), the underlying's
   tick and the snapshot's quotes go into the buffer, the window's quotes (`Q.`)
   and trades (`T.`) are subscribed, and every quote and trade follows as it comes.

The options feed carries no underlying price and no greeks (processing computes IV
and greeks), so every `snapshot_interval_s` the window's snapshot is polled: its
underlying price becomes a tick, and when spot has moved far enough (window.py)
the window moves: a new Listing and the subscription difference (unsubscribe
first, so the venue's cap is never passed). Open interest that changed (once a
day, overnight) also gives a new Listing; processing carries the state of the
contracts listed before and after over, and a snapshot quote is put only where it
is newer than what the stream gave.

Pricing inputs: `rate` is `RATE`, a constant 4 % (no rates feed is used), and
`dividend_yield` is 0 (no dividend feed is used either); both are published with
the underlying's record, so clients see what the greeks were computed with.

Failures: a rejected key (WebSocket `auth_failed`, REST 401) or a venue that will
not serve the data (REST 403, an underlying with no contracts) raises SourceError,
which ends the source: `optionsfeed up` stops with its message. Anything else
(disconnects, timeouts, a venue down, REST 5xx) reconnects with capped
exponential backoff and jitter, authenticates and subscribes again and puts
fresh Listings (a new epoch: events may have been lost meanwhile). Bad provider
data is dropped, counted in `dropped` by reason and logged at most once per
`log_interval_s` per reason. The API key is in no log line, exception message,
repr or URL: it travels in the WebSocket auth message and a REST header only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from ...aio import cancel_and_wait, cancel_requested
from ...clock import wall_clock_us
from ...errors import SourceError
from ...model.calendar import market_session
from ...model.contract import Contract
from ..base import Listing, SourceBatch, UnderlyingTick
from ..droplog import DropCounter
from ..feed import (
    DEFAULT_MAX_REST_S,
    DEFAULT_REST_RATIO,
    FeedBuffer,
    check_rest,
    feed_batches,
)
from .connection import Connection, Disconnected, SubscriptionBook, params_for
from .normalize import R_UNKNOWN_SYMBOL, EventFilter, decode_frame
from .rest import ChainSnapshot, MassiveRest, RestUnavailable
from .tape import Tape
from .window import DEFAULT_MAX_EXPIRIES, Window, choose_window

log = logging.getLogger("optionsfeed.sources.massive")

DEFAULT_WS_URL = "wss://socket.massive.com/options"
DEFAULT_REST_URL = "https://api.massive.com"
RATE = 0.04  # continuous risk-free rate for pricing: a constant, no rates feed is used
DIVIDEND_YIELD = 0.0  # continuous dividend yield: no dividend feed is used
VENUE_MAX_CONTRACTS = 1000  # documented: quotes of 1,000 option contracts per connection
CONTRACTS_TTL_S = 6 * 3600.0  # listings change daily: fetch the contracts again this often
_EXCERPT = 120


@dataclass(slots=True)
class _Chain:
    """What the adapter keeps of one underlying (bounded by its window)."""

    underlying: str
    budget: int
    listed: list[Contract] = field(default_factory=list)
    listed_us: int = 0
    window: Window | None = None
    spot: float = math.nan
    spot_us: int = 0
    open_interest: dict[str, float] = field(default_factory=dict)


class MassiveSource:
    """Live US equity options from Massive for `underlyings`; see the module docstring.

    `max_contracts` bounds the contracts streamed on the one connection (the venue
    allows 1,000), split evenly between the underlyings. Keyword arguments after it
    tune timing (tests shrink them): `snapshot_interval_s` between snapshot polls,
    reconnect backoff from `backoff_min_s` doubling to `backoff_max_s` (times a
    random 0.5-1), `timeout_s` per REST call and for connect + auth, `heartbeat_s`
    between WebSocket pings. `rest_ratio` and `max_rest_s` pace the batches while
    processing is busy (see FeedBuffer; off by default).
    """

    name = "massive"

    def __init__(
        self,
        underlyings: list[str],
        *,
        api_key: str,
        ws_url: str = DEFAULT_WS_URL,
        rest_url: str = DEFAULT_REST_URL,
        max_contracts: int = 1000,
        max_expiries: int = DEFAULT_MAX_EXPIRIES,
        snapshot_interval_s: float = 15.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 30.0,
        timeout_s: float = 10.0,
        heartbeat_s: float = 30.0,
        contracts_ttl_s: float = CONTRACTS_TTL_S,
        log_interval_s: float = 10.0,
        clock: Callable[[], int] = wall_clock_us,
        rng: random.Random | None = None,
        rest_ratio: float = DEFAULT_REST_RATIO,
        max_rest_s: float = DEFAULT_MAX_REST_S,
    ) -> None:
        if not underlyings:
            raise ValueError("at least one underlying is needed")
        if max_contracts < len(underlyings):
            raise ValueError(f"max_contracts {max_contracts} is less than one per underlying")
        if max_contracts > VENUE_MAX_CONTRACTS:
            log.warning(
                "max_contracts %d is above the %d option contracts Massive streams per "
                "connection: the venue will refuse the rest",
                max_contracts, VENUE_MAX_CONTRACTS,
            )  # fmt: skip
        self.underlyings = list(underlyings)
        self._api_key = api_key
        self.ws_url = ws_url
        self.rest_url = rest_url
        self.max_contracts = max_contracts
        self.max_expiries = max_expiries
        self.snapshot_interval_s = snapshot_interval_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.contracts_ttl_us = int(contracts_ttl_s * 1e6)
        self.clock = clock
        self._rng = rng or random.Random()
        check_rest(rest_ratio, max_rest_s)  # here, not at the first batches()
        self.rest_ratio = rest_ratio
        self.max_rest_s = max_rest_s
        budget = max_contracts // len(underlyings)
        self._chains = {u: _Chain(u, budget) for u in underlyings}
        self._filter = EventFilter()
        self._tape = Tape()
        self._drops = DropCounter(log_interval_s)
        self._buffer_drops = (0, 0)
        # Counters (read by tests and health): sessions established, listings put,
        # events taken.
        self.connects = 0
        self.listings = 0
        self.quotes = 0
        self.trades = 0
        self._connected = False
        self._book: SubscriptionBook | None = None
        self._down: str | None = None
        self._retry_at = 0.0
        self._failed: str | None = None
        self._since: float | None = None  # when the current session was established

    def __repr__(self) -> str:
        return (
            f"MassiveSource({self.underlyings!r}, ws_url={self.ws_url!r}, "
            f"rest_url={self.rest_url!r}, max_contracts={self.max_contracts})"
        )

    @property
    def dropped(self) -> Counter[str]:
        """Provider data dropped so far, by reason (normalize.R_*)."""
        return Counter(self._drops.counts)

    @property
    def windows(self) -> dict[str, Window | None]:
        """The window streamed of each underlying (None before the first)."""
        return {u: ch.window for u, ch in self._chains.items()}

    @property
    def subscriptions(self) -> SubscriptionBook | None:
        """The current connection's subscriptions (None while not connected)."""
        return self._book

    def batches(self) -> AsyncIterator[SourceBatch]:
        """Batches of events until cancelled; ends with SourceError on a final failure."""
        buffer = FeedBuffer(rest_ratio=self.rest_ratio, max_rest_s=self.max_rest_s)
        return feed_batches(buffer, self._run(buffer))

    def health(self) -> str | None:
        """None when connected with every subscription acknowledged, else why not (one line)."""
        if self._failed is not None:
            return _line(f"massive: stopped: {self._failed}")
        if not self._connected:
            if self._down is None:
                return "massive: connecting"
            wait = self._retry_at - time.monotonic()
            when = f"retrying in {wait:.1f} s" if wait > 0 else "reconnecting"
            return _line(f"massive: disconnected ({self._down}); {when}")
        problem = self._book.problem() if self._book is not None else None
        return None if problem is None else _line(f"massive: {problem}")

    def market_hours(self, now_us: int) -> tuple[int, int] | None:
        """The US options market's session at `now_us` (NYSE hours, early closes
        included) as (open, close) µs, None while closed: a quiet feed then is the
        market's, and `/readyz` does not judge it stale."""
        return market_session(now_us)

    # -- the connection loop -------------------------------------------------------------

    async def _run(self, buffer: FeedBuffer) -> None:
        attempt = 0
        asked = 0.0  # the wait a REST reply asked for (Retry-After)
        async with aiohttp.ClientSession() as http:
            rest = MassiveRest(http, self.rest_url, self._api_key, timeout_s=self.timeout_s)
            while True:
                try:
                    await self._session(http, rest, buffer)
                except SourceError as exc:
                    self._failed = str(exc)
                    log.error("%s", exc)
                    raise
                except Disconnected as exc:
                    reason = str(exc)
                except RestUnavailable as exc:
                    reason = str(exc)
                    asked = exc.retry_after_s or 0.0
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                if cancel_requested():  # a cancel that a library turned into an error
                    raise asyncio.CancelledError
                if (
                    self._since is not None
                    and time.monotonic() - self._since >= self.stable_after_s
                ):
                    attempt = 0
                self._since = None
                delay = min(self.backoff_max_s, self.backoff_min_s * 2**attempt)
                delay = max(delay * self._rng.uniform(0.5, 1.0), asked)
                asked = 0.0
                attempt += 1
                # What was listed may have changed while the link was down (and a
                # listing is what makes the venue's contracts known at all): the
                # next session fetches the contracts again.
                for ch in self._chains.values():
                    ch.listed_us = 0
                self._down = reason.replace(self._api_key, "***")
                self._retry_at = time.monotonic() + delay
                log.warning("%s; reconnecting in %.1f s", self._down, delay)
                await asyncio.sleep(delay)

    async def _session(
        self, http: aiohttp.ClientSession, rest: MassiveRest, buffer: FeedBuffer
    ) -> None:
        """One connection: prepare over REST, connect, list, subscribe, stream, poll.

        Never returns: raises Disconnected (or another error) when it ends.
        """
        snaps: dict[str, ChainSnapshot] = {}
        windows: dict[str, Window] = {}
        for ch in self._chains.values():
            windows[ch.underlying] = window = await self._prepare(ch, rest)
            snaps[ch.underlying] = await self._snapshot(rest, ch, window.contracts)
        conn = await Connection.open(
            http, self.ws_url, self._api_key, timeout_s=self.timeout_s, heartbeat_s=self.heartbeat_s
        )
        book = SubscriptionBook()
        self._book = book
        try:
            symbols: list[str] = []
            for ch in self._chains.values():
                self._list(ch, windows[ch.underlying], snaps[ch.underlying], buffer)
                symbols += [c.symbol for c in windows[ch.underlying].contracts]
            params = params_for(symbols)
            book.sent_subscribe(params)
            await conn.send("subscribe", params)
            self.connects += 1
            self._connected, self._down = True, None
            self._since = time.monotonic()
            log.info(
                "connected to %s, streaming %d contracts of %s",
                self.ws_url, len(symbols), ",".join(self._chains),
            )  # fmt: skip
            reader = asyncio.create_task(self._read(conn, book, buffer), name="massive-reader")
            poller = asyncio.create_task(
                self._poll(conn, rest, book, buffer), name="massive-poller"
            )
            try:
                done, _ = await asyncio.wait({reader, poller}, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
            finally:
                await cancel_and_wait(reader)
                await cancel_and_wait(poller)
            raise Disconnected("the session ended")  # pragma: no cover - both loop forever
        finally:
            self._connected = False
            self._book = None
            await conn.close()

    # -- REST: contracts, windows, snapshots -----------------------------------------------

    async def _prepare(self, ch: _Chain, rest: MassiveRest) -> Window:
        """Give `ch` fresh contracts, a spot (if the venue gives one) and a window; return it."""
        now = self.clock()
        stale = now >= ch.listed_us + self.contracts_ttl_us
        refetch = not ch.listed or stale or (ch.window is not None and now >= ch.window.until_us)
        if refetch:
            await self._fetch_contracts(ch, rest, now)
        if ch.window is None and not math.isfinite(ch.spot):
            snap = await rest.snapshot(ch.underlying)
            self._drop_all(snap.rejects)
            self._take_spot(ch, snap)
            if not math.isfinite(ch.spot):
                log.warning(
                    "the snapshot of %s gives no underlying price (the key's plan "
                    "may lack stocks data): the window centres on the middle strike and "
                    "greeks stay empty",
                    ch.underlying,
                )
        if refetch or ch.window is None or ch.window.needs_move(ch.spot, now):
            ch.window = self._choose(ch, now)
        return ch.window

    async def _fetch_contracts(self, ch: _Chain, rest: MassiveRest, now: int) -> None:
        contracts, rejects = await rest.contracts(
            ch.underlying, now_us=now, max_expiries=self.max_expiries
        )
        self._drop_all(rejects)
        if not contracts:
            raise SourceError(
                f"Massive lists no option contracts for {ch.underlying}: check --underlyings"
            )
        ch.listed, ch.listed_us = contracts, now

    def _choose(self, ch: _Chain, now: int) -> Window:
        return choose_window(
            ch.listed, ch.spot, now, max_contracts=ch.budget, max_expiries=self.max_expiries
        )

    async def _snapshot(
        self, rest: MassiveRest, ch: _Chain, contracts: tuple[Contract, ...]
    ) -> ChainSnapshot:
        snap = await rest.snapshot(ch.underlying, contracts)
        self._drop_all(snap.rejects)
        self._take_spot(ch, snap)
        return snap

    def _take_spot(self, ch: _Chain, snap: ChainSnapshot) -> None:
        if snap.spot is not None:
            ch.spot = snap.spot
            ch.spot_us = snap.spot_us if snap.spot_us is not None else self.clock()

    def _list(self, ch: _Chain, window: Window, snap: ChainSnapshot, buffer: FeedBuffer) -> None:
        """Put a Listing of `window`, the tick, each contract's newest quote with its day's
        volume, and the snapshot's last trades newer than the stream's."""
        contracts = list(window.contracts)
        oi = np.array(
            [r.open_interest if (r := snap.rows.get(c.symbol)) else math.nan for c in contracts],
            dtype=np.float64,
        )
        buffer.listing(Listing(ch.underlying, contracts, RATE, DIVIDEND_YIELD, oi))
        self.listings += 1
        ch.open_interest = dict(zip((c.symbol for c in contracts), oi.tolist(), strict=True))
        self._filter.relist(ch.underlying, contracts)
        self._tape.retain(self._filter.symbols())
        if math.isfinite(ch.spot):
            buffer.tick(UnderlyingTick(ch.underlying, ch.spot, None, None, ch.spot_us))
        for c in contracts:
            row = snap.rows.get(c.symbol)
            if row is None:
                volume = self._tape.seed_volume(c.symbol, math.nan, 0)
            else:
                q = row.quote
                if q is not None and self._filter.seed(c.symbol, q.ts_us):
                    self._tape.quote(c.symbol, q.bid, q.ask, q.bid_size, q.ask_size, q.ts_us)
                volume = self._tape.seed_volume(c.symbol, row.volume, row.volume_us)
            if not self._put_volume(ch.underlying, c.symbol, volume, buffer):
                continue
            # After the volume's quote row (a batch applies quotes before trades): the
            # seeded print sets `last` and adds nothing to the venue's volume.
            last = row.last if row is not None else None
            if last is not None and self._filter.seed_trade(c.symbol, last.ts_us):
                buffer.trade(ch.underlying, c.symbol, last.price, last.size, last.ts_us)

    def _put_volume(self, underlying: str, osi: str, volume: float, buffer: FeedBuffer) -> bool:
        """Put `osi`'s volume with its newest quote; without one, keep it for its first."""
        top = self._tape.tops.get(osi)
        if top is None:
            self._tape.unsent.add(osi)
            return False
        bid, ask, bid_size, ask_size, ts = top
        buffer.quote(underlying, osi, bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size,
                     ts=ts, volume=volume)  # fmt: skip
        return True

    # -- the stream ------------------------------------------------------------------------

    async def _read(self, conn: Connection, book: SubscriptionBook, buffer: FeedBuffer) -> None:
        tape = self._tape
        async for data in conn.frames():
            frame = decode_frame(data)
            for reason in frame.rejects:
                self._drop(reason, data)
            for st in frame.statuses:
                refused = book.on_status(st)
                if refused is not None:
                    log.warning("the venue says %s", self._scrub(refused))
            for q in frame.quotes:
                hit = self._filter.quote(q)
                if isinstance(hit, str):
                    if not (hit == R_UNKNOWN_SYMBOL and _unsubscribing(book, q.sym)):
                        self._drop(hit, data)
                    continue
                ts = q.t * 1000
                tape.quote(hit[1], q.bp, q.ap, q.bs, q.as_, ts)
                volume = tape.take_unsent(hit[1]) if tape.unsent else math.nan
                buffer.quote(hit[0], hit[1], bid=q.bp, ask=q.ap, bid_size=q.bs,
                             ask_size=q.as_, ts=ts, volume=volume)  # fmt: skip
                self.quotes += 1
            for t in frame.trades:
                hit = self._filter.trade(t)
                if isinstance(hit, str):
                    if not (hit == R_UNKNOWN_SYMBOL and _unsubscribing(book, t.sym)):
                        self._drop(hit, data)
                    continue
                ts = t.t * 1000
                buffer.trade(hit[0], hit[1], t.p, t.s, ts)
                self._put_volume(hit[0], hit[1], tape.trade(hit[1], t.s, ts), buffer)
                self.trades += 1
            self._check_buffer(buffer)

    async def _poll(
        self, conn: Connection, rest: MassiveRest, book: SubscriptionBook, buffer: FeedBuffer
    ) -> None:
        wait = self.snapshot_interval_s
        while True:
            await asyncio.sleep(wait)
            wait = self.snapshot_interval_s
            for ch in self._chains.values():
                try:
                    await self._refresh(ch, conn, rest, book, buffer)
                except RestUnavailable as exc:
                    log.warning("polling the snapshot of %s: %s", ch.underlying, exc)
                    if exc.retry_after_s is not None:
                        # Rate limited: no request before the venue's time is up.
                        wait = max(wait, exc.retry_after_s)
                        break

    async def _refresh(
        self,
        ch: _Chain,
        conn: Connection,
        rest: MassiveRest,
        book: SubscriptionBook,
        buffer: FeedBuffer,
    ) -> None:
        """Poll `ch`'s snapshot: a tick; move the window or relist when needed."""
        old = ch.window
        if old is None:
            return
        snap = await self._snapshot(rest, ch, old.contracts)
        if math.isfinite(ch.spot):
            buffer.tick(UnderlyingTick(ch.underlying, ch.spot, None, None, ch.spot_us))
        now = self.clock()
        refetch = now >= ch.listed_us + self.contracts_ttl_us or now >= old.until_us
        if refetch:
            await self._fetch_contracts(ch, rest, now)
        if refetch or old.needs_move(ch.spot, now):
            new = self._choose(ch, now)
            if new.symbols != old.symbols:
                # A failure before the new listing keeps the old window (retried next poll).
                snap = await self._snapshot(rest, ch, new.contracts)
                ch.window = new
                self._list(ch, new, snap, buffer)
                removed = sorted(old.symbols - new.symbols)
                added = sorted(new.symbols - old.symbols)
                # Unsubscribe first: the venue counts contracts against its cap.
                if removed:
                    params = params_for(removed)
                    book.sent_unsubscribe(params)
                    await conn.send("unsubscribe", params)
                if added:
                    params = params_for(added)
                    book.sent_subscribe(params)
                    await conn.send("subscribe", params)
                log.info(
                    "%s window moved to spot %.2f (+%d -%d contracts)",
                    ch.underlying, new.center, len(added), len(removed),
                )  # fmt: skip
                return
            ch.window = new
        changed = [
            s for s, r in snap.rows.items()
            if math.isfinite(r.open_interest) and r.open_interest != ch.open_interest.get(s)
        ]  # fmt: skip
        if changed:
            log.info("open interest of %d %s contracts changed: relisting",
                     len(changed), ch.underlying)  # fmt: skip
            self._list(ch, old, snap, buffer)

    # -- bad data --------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def _drop(self, reason: str, sample: str | bytes | None = None) -> None:
        n = self._drops.add(reason, time.monotonic())
        if n is None:
            return
        excerpt = ""
        if sample is not None:
            text = sample if isinstance(sample, str) else sample.decode("utf-8", "replace")
            excerpt = f"; e.g. in {self._scrub(text[:_EXCERPT])!r}"
        log.warning(
            "dropped %d event(s): %s (%d so far)%s",
            n, reason, self._drops.counts[reason], excerpt,
        )  # fmt: skip

    def _drop_all(self, reasons: list[str]) -> None:
        for reason in reasons:
            self._drop(reason)

    def _check_buffer(self, buffer: FeedBuffer) -> None:
        now = (buffer.dropped_quotes, buffer.dropped_trades)
        if now != self._buffer_drops:
            self._buffer_drops = now
            self._drop("buffer full: processing is behind")


def _unsubscribing(book: SubscriptionBook, vendor_sym: str) -> bool:
    """A late event of a contract whose unsubscribe is not acknowledged yet."""
    return any(f"{ch}.{vendor_sym}" in book.unsubscribing for ch in ("Q", "T"))


def _line(text: str) -> str:
    return " ".join(text.split())
