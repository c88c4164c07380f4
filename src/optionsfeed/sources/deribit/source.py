"""Deribit's options as a Source: inverse BTC/ETH options over its public WebSocket API.

One connection carries everything. On connect it asks for heartbeats
(`public/set_heartbeat`), lists each currency's options (`public/get_instruments`),
puts a `Listing` per currency into the buffer and subscribes, in chunks, to every
option's `ticker.{instrument}.100ms`, the currency's option trades
(`trades.option.{currency}.100ms`: last price and size) and its
`deribit_price_index`.
Tickers become quotes (prices in the coin, with the venue's mark and forward),
index prices become underlying ticks. Every `refresh_s`, and just after the
nearest expiry's 08:00 UTC, the instruments are listed again; when a currency's
set changed (expiries roll, new strikes are added) a new Listing goes out and the
difference is (un)subscribed.

After any disconnect, error or silence it reconnects with capped exponential
backoff and jitter, and starts over: a fresh Listing of every currency (processing
then starts a new epoch, so clients resnapshot: events may have been missed).
`health()` says why it is not streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import cast

import aiohttp
import msgspec

from ...aio import cancel_and_wait, cancel_requested
from ...clock import wall_clock_us
from ..base import SourceBatch, UnderlyingTick
from ..droplog import DropLog
from ..feed import FeedBuffer, feed_batches
from .connection import ConnectionLost, RpcConnection, VenueError
from .normalize import (
    Decoder,
    Dropped,
    Incoming,
    ListingResult,
    Prints,
    Quote,
    build_listing,
    chunks,
    decode_channels,
    decode_instruments,
    describe_skips,
    put,
)
from .symbols import index_channel, ticker_channel, trades_channel

log = logging.getLogger("optionsfeed.sources.deribit")

DEFAULT_URL = "wss://www.deribit.com/ws/api/v2"
HEARTBEAT_S = 15.0  # Deribit's minimum is 10; we call the connection dead after 2 intervals
REFRESH_S = 600.0
EXPIRY_MARGIN_S = 30.0  # relist this long after an expiry instant
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
# Subscribe requests of ~250 channels and more have been refused as "request entity
# too large"; 200 ticker channels are about 8 kB.
CHANNELS_PER_REQUEST = 200
# A generous bound on one message: a get_instruments result of all BTC options is
# hundreds of kB, a ticker about 1 kB.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class DeribitSource:
    """Inverse options of `underlyings` (currencies, e.g. ["BTC", "ETH"]) from `url`.

    Keyword arguments exist so tests can shrink the timings: `heartbeat_s` (asked of
    the venue; nothing received for twice that closes the connection),
    `refresh_s`, `backoff_min_s` / `backoff_max_s` (reconnect delays, doubled per
    failed attempt, with jitter from `rng`), `request_timeout_s`,
    `connect_timeout_s`, `clock` (µs; decides which instruments have expired, and
    is the processing clock of the app). `buffer` bounds the events waiting for
    processing (see FeedBuffer).
    """

    name = "deribit"

    def __init__(
        self,
        underlyings: list[str],
        url: str = DEFAULT_URL,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        refresh_s: float = REFRESH_S,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        channels_per_request: int = CHANNELS_PER_REQUEST,
        clock: Callable[[], int] = wall_clock_us,
        rng: random.Random | None = None,
        buffer: FeedBuffer | None = None,
    ) -> None:
        self.underlyings = list(underlyings)
        self.url = url
        self.heartbeat_s = heartbeat_s
        self.refresh_s = refresh_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.channels_per_request = channels_per_request
        self.clock = clock
        self.rng = rng or random.Random()
        self.buffer = buffer or FeedBuffer()
        self.decoder = Decoder()
        self.drop_log = DropLog(log, "deribit")
        self.connections = 0  # WebSocket connections opened
        self.subscribed: set[str] = set()  # channels the venue confirmed, this connection
        self.rejected_channels = 0  # channels the venue left out of a subscribe result
        self.listings: dict[str, ListingResult] = {}
        self._health: str | None = f"deribit: connecting to {url}"
        self._buffer_drops = 0
        self._skips_logged: dict[str, str] = {}

    # -- the Source interface -------------------------------------------------------------

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Batches of whatever arrived since the previous one, until cancelled."""
        # feed_batches is an async generator: close it (cancelling the connection) with us.
        gen = cast(AsyncGenerator[SourceBatch, None], feed_batches(self.buffer, self._run()))
        async with contextlib.aclosing(gen) as feed:
            async for batch in feed:
                yield batch

    def health(self) -> str | None:
        """None while connected and subscribed; otherwise one line saying why not."""
        return self._health

    # -- the connection loop -----------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    await self._session(http)
                    reason = "connection closed"  # _session only returns by raising
                except ConnectionLost as exc:
                    reason = str(exc)
                except VenueError as exc:
                    reason = str(exc)
                    log.error("deribit: %s", exc)
                except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError) as exc:
                    reason = str(exc) or type(exc).__name__
                if cancel_requested():
                    raise asyncio.CancelledError
                if not self.subscribed:
                    attempt += 1  # a connection that never got going: back off further
                else:
                    attempt = 1
                self.subscribed = set()
                delay = min(self.backoff_max_s, self.backoff_min_s * 2 ** (attempt - 1))
                delay *= 0.5 + 0.5 * self.rng.random()
                self._health = f"deribit: disconnected ({reason}), retrying in {delay:.1f} s"
                log.warning("%s", self._health)
                await asyncio.sleep(delay)
                self._health = f"deribit: reconnecting to {self.url} (after: {reason})"

    async def _session(self, http: aiohttp.ClientSession) -> None:
        """One connection, from connect to loss; raises why it ended."""
        async with asyncio.timeout(self.connect_timeout_s):
            ws = await http.ws_connect(
                self.url, autoping=True, heartbeat=None, max_msg_size=MAX_MESSAGE_BYTES
            )
        self.connections += 1
        async with ws:
            conn = RpcConnection(
                ws, self.decoder, self._on_item,
                silence_s=2 * self.heartbeat_s, request_timeout_s=self.request_timeout_s,
            )  # fmt: skip
            reader = asyncio.create_task(conn.run(), name="deribit-reader")
            try:
                await self._start(conn)
                while True:
                    done, _ = await asyncio.wait({reader}, timeout=self._until_refresh())
                    if done:
                        reader.result()  # raises ConnectionLost
                        raise ConnectionLost("the reader stopped")
                    try:
                        await self._refresh(conn)
                    except (VenueError, msgspec.DecodeError) as exc:
                        # The stream is fine; a relisting can wait for the next refresh.
                        log.error("deribit: refreshing the instruments failed: %s", exc)
            finally:
                await cancel_and_wait(reader)

    def _until_refresh(self) -> float:
        """Seconds to the next relisting: `refresh_s`, or sooner when an expiry passes
        (the venue takes a few seconds to settle and delist, hence the margin)."""
        now = self.clock()
        expiries = [
            c.expiry_us
            for r in self.listings.values() if r.listing is not None
            for c in r.listing.contracts if c.expiry_us > now
        ]  # fmt: skip
        if not expiries:
            return self.refresh_s
        return min(self.refresh_s, (min(expiries) - now) / 1e6 + EXPIRY_MARGIN_S)

    async def _start(self, conn: RpcConnection) -> None:
        hb = self.heartbeat_s
        try:
            interval = int(hb) if float(hb).is_integer() else hb
            await conn.request("public/set_heartbeat", {"interval": interval})
        except VenueError as exc:
            # Our own silence check still notices a dead connection.
            log.error("deribit: heartbeats not set up: %s", exc)
        channels: list[str] = []
        for currency in self.underlyings:
            result = await self._list(conn, currency)
            # Always a fresh Listing after (re)connecting: events may have been missed,
            # and a new epoch makes clients resnapshot.
            self._apply_listing(currency, result)
            channels.append(index_channel(currency))
            channels.append(trades_channel(currency))
            channels.extend(ticker_channel(n) for n in result.names)
        await self._subscribe(conn, channels)
        self._health = None
        log.info(
            "deribit: streaming %s (%d channels) from %s",
            ", ".join(f"{c} {len(self.listings[c].names)} options" for c in self.underlyings),
            len(self.subscribed), self.url,
        )  # fmt: skip

    async def _list(self, conn: RpcConnection, currency: str) -> ListingResult:
        raw = await conn.request(
            "public/get_instruments", {"currency": currency, "kind": "option", "expired": False}
        )
        result = build_listing(currency, decode_instruments(raw), now_us=self.clock())
        if result.skipped:
            line = describe_skips(result)
            if self._skips_logged.get(currency) != line:  # once, not on every refresh
                self._skips_logged[currency] = line
                log.warning("deribit: %s: skipped instruments: %s", currency, line)
        if result.listing is None:
            log.warning("deribit: %s: no inverse options listed", currency)
        return result

    def _apply_listing(self, currency: str, result: ListingResult) -> None:
        self.listings[currency] = result
        self.decoder.set_instruments(currency, result.names)
        if result.listing is not None:
            self.buffer.listing(result.listing)

    async def _refresh(self, conn: RpcConnection) -> None:
        """List again; for each currency whose contracts changed, relist and resubscribe."""
        for currency in self.underlyings:
            result = await self._list(conn, currency)
            old = self.listings.get(currency)
            old_contracts = old.listing.contracts if old and old.listing else []
            new_contracts = result.listing.contracts if result.listing else []
            if new_contracts == old_contracts:
                continue
            before = {ticker_channel(n) for n in (old.names if old else [])}
            after = {ticker_channel(n) for n in result.names}
            log.info(
                "deribit: %s relisted: %d options (%d new, %d gone)",
                currency, len(new_contracts), len(after - before), len(before - after),
            )  # fmt: skip
            await self._unsubscribe(conn, sorted(before - after))
            self._apply_listing(currency, result)
            await self._subscribe(conn, sorted(after - before))

    async def _subscribe(self, conn: RpcConnection, channels: list[str]) -> None:
        for part in chunks(channels, self.channels_per_request):
            got = set(decode_channels(await conn.request("public/subscribe", {"channels": part})))
            self.subscribed |= got
            missing = [c for c in part if c not in got]
            if missing:
                self.rejected_channels += len(missing)
                log.warning(
                    "deribit: the venue did not subscribe %d of %d channels (e.g. %s)",
                    len(missing), len(part), missing[0],
                )  # fmt: skip

    async def _unsubscribe(self, conn: RpcConnection, channels: list[str]) -> None:
        for part in chunks(channels, self.channels_per_request):
            await conn.request("public/unsubscribe", {"channels": part})
            self.subscribed.difference_update(part)

    # -- events ---------------------------------------------------------------------

    def _on_item(self, item: Incoming) -> None:
        if isinstance(item, Quote | UnderlyingTick | Prints):
            put(self.buffer, item)
            drops = self.buffer.dropped_quotes + self.buffer.dropped_trades
            if drops != self._buffer_drops:
                self._buffer_drops = drops
                self.drop_log.note(
                    "buffer_full",
                    f"{self.buffer.dropped_quotes} quotes and {self.buffer.dropped_trades} "
                    "trades dropped so far: processing is behind",
                )
        elif isinstance(item, Dropped):
            self.drop_log.note(item.reason, item.detail)
