"""Deribit's JSON-RPC messages in, our events out. Pure: no sockets, no clock, no logging.

`Decoder` turns one WebSocket text message into one `Incoming` item: a response to
one of our requests, a heartbeat, a quote, an underlying tick, or a `Dropped` that
says why the message was refused. It keeps the little state that takes (which
instruments are listed, the newest timestamp seen per instrument and index, drop
counters), so the I/O driver only routes what comes out.

`build_listing` turns a `public/get_instruments` result into our `Listing`,
skipping (and counting) whatever is not a well-formed inverse option.

Units: Deribit timestamps are milliseconds, ours microseconds. Option prices stay
in the coin (BTC); the ticker's `underlying_price` (the forward of the option's
expiry, in USD) goes into `forward`, and processing converts to USD with it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ...errors import InvalidSymbol
from ...model.contract import Contract
from ..base import Listing, UnderlyingTick
from ..feed import FeedBuffer
from .symbols import (
    INDEX_PREFIX,
    TRADES_PREFIX,
    index_name,
    instrument_of_ticker_channel,
    parse_name,
    utc_date_of_ms,
)

NAN = float("nan")

# Why a message was dropped (the keys of `Decoder.dropped`).
MALFORMED = "malformed"  # not JSON, not an object, a missing or wrongly-typed field
BAD_VALUE = "bad_value"  # a non-finite or negative number, a zero forward or timestamp
UNKNOWN_INSTRUMENT = "unknown_instrument"  # a ticker of an instrument we do not list
UNKNOWN_CHANNEL = "unknown_channel"  # a notification on a channel we never asked for
OUT_OF_ORDER = "out_of_order"  # older than the newest one seen for the same instrument
UNEXPECTED = "unexpected"  # valid JSON-RPC we have no use for (an unknown method)

# Why an instrument was left out of a listing (the keys of `ListingResult.skipped`).
SKIP_NOT_OPTION = "not an option"
SKIP_NOT_INVERSE = "not inverse (coin-quoted)"
SKIP_INACTIVE = "inactive"
SKIP_EXPIRED = "expired"
SKIP_BAD_NAME = "name does not parse"
SKIP_DISAGREES = "name disagrees with the instrument's fields"
SKIP_MALFORMED = "malformed"
SKIP_DUPLICATE = "duplicate"


# -- wire types (unknown fields are ignored) -------------------------------------------


class RpcError(msgspec.Struct):
    """The `error` member of a JSON-RPC response."""

    code: int
    message: str
    data: Any = None


class _Params(msgspec.Struct):
    channel: str | None = None  # subscription notifications
    data: msgspec.Raw = msgspec.Raw()  # decoded by channel, see Decoder.decode
    type: str | None = None  # heartbeat notifications


class _Message(msgspec.Struct):
    id: int | None = None
    method: str | None = None
    params: _Params | None = None
    result: msgspec.Raw = msgspec.Raw()
    error: RpcError | None = None


class _Stats(msgspec.Struct):
    volume: float | None = None


class Ticker(msgspec.Struct):
    """The fields of a `ticker.{instrument}.{interval}` notification that we use."""

    instrument_name: str
    timestamp: int
    state: str
    mark_price: float
    underlying_price: float
    best_bid_price: float | None = None
    best_bid_amount: float | None = None
    best_ask_price: float | None = None
    best_ask_amount: float | None = None
    last_price: float | None = None
    open_interest: float | None = None
    stats: _Stats | None = None


class TradeMsg(msgspec.Struct):
    """One trade of a `trades.option.{currency}.{interval}` notification (a list of them)."""

    instrument_name: str
    timestamp: int
    price: float
    amount: float


class IndexPrice(msgspec.Struct):
    """A `deribit_price_index.{index_name}` notification."""

    index_name: str
    price: float
    timestamp: int


class Instrument(msgspec.Struct):
    """One element of a `public/get_instruments` result (fields checked by `build_listing`)."""

    instrument_name: str
    kind: str | None = None
    option_type: str | None = None
    strike: float | None = None
    expiration_timestamp: int | None = None
    contract_size: float | None = None
    base_currency: str | None = None
    quote_currency: str | None = None
    settlement_currency: str | None = None
    is_active: bool = True


class _Request(msgspec.Struct):
    jsonrpc: str
    id: int
    method: str
    params: dict[str, Any]


_message_decoder = msgspec.json.Decoder(_Message)
_ticker_decoder = msgspec.json.Decoder(Ticker)
_index_decoder = msgspec.json.Decoder(IndexPrice)
_trades_decoder = msgspec.json.Decoder(list[TradeMsg])
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_instrument_decoder = msgspec.json.Decoder(Instrument)
_channels_decoder = msgspec.json.Decoder(list[str])
_encoder = msgspec.json.Encoder()


def encode_request(request_id: int, method: str, params: dict[str, Any]) -> bytes:
    """A JSON-RPC 2.0 request, e.g. ``{"jsonrpc":"2.0","id":1,"method":"public/test",...}``."""
    return _encoder.encode(_Request("2.0", request_id, method, params))


def decode_channels(result: msgspec.Raw) -> list[str]:
    """The channel list of a `public/subscribe` / `public/unsubscribe` result.

    Raises msgspec.DecodeError when it is not a list of strings.
    """
    return _channels_decoder.decode(result)


# -- what a message becomes --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """The venue's answer to our request `id`: `result` (raw JSON) or `error`."""

    id: int
    result: msgspec.Raw
    error: RpcError | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A `heartbeat` notification; `test_request` ones must be answered with `public/test`."""

    test_request: bool


@dataclass(frozen=True, slots=True)
class Quote:
    """A ticker as `FeedBuffer.quote` takes it (see `Quotes` for the columns' meaning)."""

    underlying: str
    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts: int
    mark: float
    forward: float
    last: float
    volume: float
    open_interest: float
    halted: bool


@dataclass(frozen=True, slots=True)
class Print:
    """One trade as `FeedBuffer.trade` takes it: price in the coin, amount in contracts."""

    underlying: str
    symbol: str
    price: float
    size: float
    ts: int


@dataclass(frozen=True, slots=True)
class Prints:
    """The usable trades of one notification (the unusable ones were counted as drops)."""

    trades: list[Print]


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message refused, `reason` one of the module's drop reasons, `detail` for the log."""

    reason: str
    detail: str


Incoming = Response | Heartbeat | Quote | UnderlyingTick | Prints | Dropped


def put(buffer: FeedBuffer, item: Quote | UnderlyingTick | Prints) -> None:
    """Hand a decoded quote, tick or trades to `buffer`."""
    if isinstance(item, UnderlyingTick):
        buffer.tick(item)
        return
    if isinstance(item, Prints):
        for t in item.trades:
            buffer.trade(t.underlying, t.symbol, t.price, t.size, t.ts)
        return
    buffer.quote(
        item.underlying, item.symbol, bid=item.bid, ask=item.ask, bid_size=item.bid_size,
        ask_size=item.ask_size, ts=item.ts, mark=item.mark, forward=item.forward,
        last=item.last, volume=item.volume, open_interest=item.open_interest,
        halted=item.halted,
    )  # fmt: skip


def _bad(x: float | None) -> bool:
    """True for a number that cannot be a price or an amount (non-finite or negative)."""
    return x is not None and not (math.isfinite(x) and x >= 0.0)


class Decoder:
    """Deribit messages -> `Incoming` items, with the state that takes.

    Bounded: `last_ts` holds one entry per listed instrument and index (entries of
    delisted instruments are removed by `set_instruments`).
    """

    def __init__(self) -> None:
        self.instruments: dict[str, str] = {}  # instrument name -> underlying
        self.indexes: dict[str, str] = {}  # index name (btc_usd) -> underlying
        self.last_ts: dict[str, int] = {}
        self.dropped: Counter[str] = Counter()

    def set_instruments(self, underlying: str, names: Iterable[str]) -> None:
        """Make `names` the listed instruments of `underlying` (and follow its index)."""
        keep = set(names)
        for name, u in list(self.instruments.items()):
            if u == underlying and name not in keep:
                del self.instruments[name]
                self.last_ts.pop(name, None)
        for name in keep:
            self.instruments[name] = underlying
        self.indexes[index_name(underlying)] = underlying

    def decode(self, text: str | bytes) -> Incoming:
        """One message in, one item out; never raises for bad provider data."""
        try:
            msg = _message_decoder.decode(text)
        except msgspec.DecodeError as exc:
            return self._drop(MALFORMED, f"not a JSON-RPC message: {exc}")
        if msg.id is not None and msg.method is None:
            return Response(msg.id, msg.result, msg.error)
        params = msg.params
        if msg.method == "subscription" and params is not None and params.channel is not None:
            return self._notification(params.channel, params.data)
        if msg.method == "heartbeat" and params is not None:
            return Heartbeat(params.type == "test_request")
        return self._drop(UNEXPECTED, f"unexpected message: method {msg.method!r}")

    def _drop(self, reason: str, detail: str) -> Dropped:
        self.dropped[reason] += 1
        return Dropped(reason, detail)

    def _notification(self, channel: str, data: msgspec.Raw) -> Incoming:
        instrument = instrument_of_ticker_channel(channel)
        if instrument is not None:
            return self._ticker(channel, instrument, data)
        if channel.startswith(INDEX_PREFIX):
            return self._index(channel, data)
        if channel.startswith(TRADES_PREFIX):
            return self._trades(channel, data)
        return self._drop(UNKNOWN_CHANNEL, f"notification on channel {channel!r}")

    def _ticker(self, channel: str, instrument: str, data: msgspec.Raw) -> Incoming:
        try:
            t = _ticker_decoder.decode(data)
        except msgspec.DecodeError as exc:
            return self._drop(MALFORMED, f"{channel}: {exc}")
        name = t.instrument_name
        if name != instrument:
            return self._drop(MALFORMED, f"{channel}: carries instrument {name!r}")
        underlying = self.instruments.get(name)
        if underlying is None:
            return self._drop(UNKNOWN_INSTRUMENT, f"{channel}: {name} is not listed")
        volume = t.stats.volume if t.stats is not None else None
        if (
            t.timestamp <= 0
            or not (math.isfinite(t.underlying_price) and t.underlying_price > 0.0)
            or _bad(t.mark_price)
            or _bad(t.best_bid_price)
            or _bad(t.best_ask_price)
            or _bad(t.best_bid_amount)
            or _bad(t.best_ask_amount)
            or _bad(t.last_price)
            or _bad(t.open_interest)
            or _bad(volume)
        ):
            return self._drop(BAD_VALUE, f"{channel}: a price, amount or timestamp out of range")
        last = self.last_ts.get(name, 0)
        if t.timestamp < last:
            return self._drop(OUT_OF_ORDER, f"{channel}: timestamp {t.timestamp} < {last}")
        self.last_ts[name] = t.timestamp
        bid = t.best_bid_price or 0.0  # null or 0: no bid
        ask = t.best_ask_price or NAN  # null or 0: no ask
        return Quote(
            underlying, name, bid, ask,
            t.best_bid_amount if bid > 0.0 and t.best_bid_amount is not None else 0.0,
            t.best_ask_amount if ask > 0.0 and t.best_ask_amount is not None else 0.0,
            t.timestamp * 1000,
            t.mark_price,  # 0 too: a mark of 0 is a mark (no IV fits it), not a missing one
            t.underlying_price,
            NAN if t.last_price is None else t.last_price,
            NAN if volume is None else volume,
            NAN if t.open_interest is None else t.open_interest,
            t.state != "open",
        )  # fmt: skip

    def _trades(self, channel: str, data: msgspec.Raw) -> Incoming:
        """Trades of listed instruments; an unusable one is counted and skipped, so one
        bad print does not cost the others (trades add to volume: none may be lost)."""
        try:
            trades = _trades_decoder.decode(data)
        except msgspec.DecodeError as exc:
            return self._drop(MALFORMED, f"{channel}: {exc}")
        out: list[Print] = []
        for t in trades:
            underlying = self.instruments.get(t.instrument_name)
            if underlying is None:
                self._drop(UNKNOWN_INSTRUMENT, f"{channel}: {t.instrument_name} is not listed")
            elif t.timestamp <= 0 or _bad(t.price) or _bad(t.amount) or t.amount == 0.0:
                self._drop(BAD_VALUE, f"{channel}: a trade's price, amount or timestamp")
            else:
                out.append(Print(underlying, t.instrument_name, t.price, t.amount,
                                 t.timestamp * 1000))  # fmt: skip
        if not out:
            return self._drop(UNKNOWN_INSTRUMENT if trades else MALFORMED,
                              f"{channel}: no usable trade")  # fmt: skip
        return Prints(out)

    def _index(self, channel: str, data: msgspec.Raw) -> Incoming:
        try:
            p = _index_decoder.decode(data)
        except msgspec.DecodeError as exc:
            return self._drop(MALFORMED, f"{channel}: {exc}")
        if channel != INDEX_PREFIX + p.index_name:
            return self._drop(MALFORMED, f"{channel}: carries index {p.index_name!r}")
        underlying = self.indexes.get(p.index_name)
        if underlying is None:
            return self._drop(UNKNOWN_CHANNEL, f"{channel}: index not followed")
        if p.timestamp <= 0 or not (math.isfinite(p.price) and p.price > 0.0):
            return self._drop(BAD_VALUE, f"{channel}: price or timestamp out of range")
        key = INDEX_PREFIX + p.index_name
        last = self.last_ts.get(key, 0)
        if p.timestamp < last:
            return self._drop(OUT_OF_ORDER, f"{channel}: timestamp {p.timestamp} < {last}")
        self.last_ts[key] = p.timestamp
        return UnderlyingTick(underlying, p.price, None, None, p.timestamp * 1000)


# -- listings ------------------------------------------------------------------------


@dataclass(slots=True)
class ListingResult:
    """A listing built from `public/get_instruments` and what was left out of it.

    `listing` is None when no instrument qualified. `skipped` counts by reason;
    `examples` holds one instrument name per reason (for the log line).
    """

    listing: Listing | None
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The listed instrument names, in listing order."""
        return [] if self.listing is None else [c.symbol for c in self.listing.contracts]


def decode_instruments(result: msgspec.Raw) -> list[msgspec.Raw]:
    """The elements of a `public/get_instruments` result, each still raw JSON.

    Raises msgspec.DecodeError when the result is not a list. Elements are decoded
    one by one (`build_listing`), so one bad instrument does not cost the others.
    """
    return _raw_list_decoder.decode(result)


def build_listing(
    currency: str, instruments: Sequence[msgspec.Raw | Instrument], *, now_us: int | None = None
) -> ListingResult:
    """The `Listing` of `currency` ("BTC") from its instruments: inverse options only.

    An instrument is listed when it is an active option quoted, based and settled in
    `currency`, its name parses (`parse_name`) and agrees with its currency, strike,
    type and expiry date, its contract size is a positive integer, and (given
    `now_us`) it has not expired. Contracts are ordered by expiry, strike, calls first.
    """
    out = ListingResult(None)
    contracts: list[Contract] = []
    seen: set[str] = set()
    for item in instruments:
        inst, reason = _instrument(item)
        if inst is not None:
            contract, reason = _contract(currency, inst, now_us)
            if contract is not None and contract.symbol in seen:
                reason = SKIP_DUPLICATE
            elif contract is not None:
                seen.add(contract.symbol)
                contracts.append(contract)
                continue
        out.skipped[reason] += 1
        name = inst.instrument_name if inst is not None else "?"
        out.examples.setdefault(reason, name)
    if contracts:
        contracts.sort(key=lambda c: (c.expiry_us, c.strike, c.right))
        out.listing = Listing(currency, contracts, rate=0.0, dividend_yield=0.0, inverse=True)
    return out


def _instrument(item: msgspec.Raw | Instrument) -> tuple[Instrument | None, str]:
    if isinstance(item, Instrument):
        return item, ""
    try:
        return _instrument_decoder.decode(item), ""
    except msgspec.DecodeError:
        return None, SKIP_MALFORMED


def _contract(currency: str, i: Instrument, now_us: int | None) -> tuple[Contract | None, str]:
    if i.kind != "option":
        return None, SKIP_NOT_OPTION
    if not (i.base_currency == i.quote_currency == i.settlement_currency == currency):
        return None, SKIP_NOT_INVERSE
    if not i.is_active:
        return None, SKIP_INACTIVE
    try:
        name = parse_name(i.instrument_name)
    except InvalidSymbol:
        return None, SKIP_BAD_NAME
    size = i.contract_size
    right = {"call": "C", "put": "P"}.get(i.option_type or "")
    if (
        name.currency != currency
        or right != name.right
        or i.strike != name.strike
        or i.expiration_timestamp is None
        or i.expiration_timestamp <= 0
        or utc_date_of_ms(i.expiration_timestamp) != name.expiry
        or size is None
        or not (math.isfinite(size) and size >= 1 and size == int(size))
    ):
        return None, SKIP_DISAGREES
    expiry_us = i.expiration_timestamp * 1000
    if now_us is not None and expiry_us <= now_us:
        return None, SKIP_EXPIRED
    contract = Contract(
        symbol=i.instrument_name, underlying=currency, root=currency, expiry=name.expiry,
        expiry_us=expiry_us, strike=name.strike, right=name.right, multiplier=int(size),
        currency=currency, exercise="european",
    )  # fmt: skip
    return contract, ""


def describe_skips(result: ListingResult) -> str:
    """One line for the log: how many were skipped, by reason, with an example each."""
    parts = [
        f"{n} {reason} (e.g. {result.examples.get(reason, '?')})"
        for reason, n in sorted(result.skipped.items())
    ]
    return ", ".join(parts)


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    """`items` in lists of at most `size` (a request's channel limit)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
