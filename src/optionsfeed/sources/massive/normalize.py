"""Massive's JSON (WebSocket frames, REST pages) into checked values of our model.

Pure: bytes in, values and reasons for rejection out; no sockets, no clock. Unknown
fields are ignored everywhere (the venue adds fields over time). Bad provider
data never raises out of here: each rejected item comes back as a short reason
(`R_*`), which the adapter counts and logs.

Units: WebSocket timestamps `t` are Unix milliseconds, REST `last_updated` Unix
nanoseconds; both become microseconds. Massive spells contracts `O:` + compact
OSI (``O:SPY251219C00650000``); we use the compact OSI symbol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import msgspec

from ...errors import InvalidSymbol
from ...model.calendar import contract_expiry_us
from ...model.contract import Contract, Exercise
from ...model.osi import VENDOR_PREFIX, parse_osi

# Reasons for dropping provider data (the keys of the adapter's `dropped` counter).
R_NOT_JSON = "not JSON"
R_NOT_ARRAY = "not a JSON array of events"
R_UNKNOWN_EVENT = "unknown event type"
R_MALFORMED = "event with missing or wrong fields"
R_BAD_PRICE = "negative or non-finite price"
R_BAD_SIZE = "negative or non-finite size"
R_FRACTIONAL_SIZE = "fractional size"  # OPRA sizes are whole contracts: 10.5 is bad data
R_BAD_TIME = "timestamp out of range"
R_UNKNOWN_SYMBOL = "unknown symbol"
R_OUT_OF_ORDER = "out-of-order timestamp"
R_BAD_CONTRACT = "malformed contract"

# Plausible event times: 2000-01-01 to 2100-01-01 in ms. A timestamp outside is in
# the wrong unit or garbage; taken as is it would poison staleness and latency.
_MIN_MS = 946_684_800_000
_MAX_MS = 4_102_444_800_000


# -- WebSocket ----------------------------------------------------------------------


class Status(msgspec.Struct, tag="status", tag_field="ev"):
    """`{"ev":"status","status":..,"message":..}`: connection, auth and subscriptions."""

    status: str = ""
    message: str = ""


class Quote(msgspec.Struct, tag="Q", tag_field="ev"):
    """An options quote: `bp`/`ap` bid and ask, `bs`/`as` sizes, `t` Unix ms."""

    sym: str
    bp: float
    ap: float
    bs: float
    as_: float = msgspec.field(name="as")
    t: int


class Trade(msgspec.Struct, tag="T", tag_field="ev"):
    """An options trade: price `p`, size `s`, `t` Unix ms."""

    sym: str
    p: float
    s: float
    t: int


_frame_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_event_decoder = msgspec.json.Decoder(Status | Quote | Trade)
_ev_decoder = msgspec.json.Decoder(dict[str, object])


@dataclass(slots=True)
class Frame:
    """The events of one WebSocket frame, checked; `rejects`: one reason per dropped one."""

    statuses: list[Status] = field(default_factory=list)
    quotes: list[Quote] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)


def _finite_nonneg(v: float) -> bool:
    # A chained comparison (NaN and infinity fail it), called per value: this runs
    # for every quote, and all() over a generator cost 0.4 µs of Massive's ~2 µs per
    # event (bench venues).
    return 0.0 <= v < math.inf


def _time_ok(t: int) -> bool:
    return _MIN_MS <= t < _MAX_MS


def decode_frame(data: str | bytes) -> Frame:
    """Decode one frame (a JSON array of events) and check each event on its own.

    A quote needs finite prices >= 0 (a bid of 0 means no bid), whole sizes >= 0
    and a plausible `t`; a trade a finite price > 0, a whole size > 0 and a
    plausible `t`. A bad event is dropped with its reason; the rest of the frame stays.
    """
    out = Frame()
    try:
        items = _frame_decoder.decode(data)
    except msgspec.ValidationError:
        out.rejects.append(R_NOT_ARRAY)
        return out
    except msgspec.DecodeError:
        out.rejects.append(R_NOT_JSON)
        return out
    for raw in items:
        try:
            ev = _event_decoder.decode(raw)
        except msgspec.ValidationError:
            out.rejects.append(_why_not(raw))
            continue
        if isinstance(ev, Quote):
            if not (_finite_nonneg(ev.bp) and _finite_nonneg(ev.ap)):
                out.rejects.append(R_BAD_PRICE)
            elif not (_finite_nonneg(ev.bs) and _finite_nonneg(ev.as_)):
                out.rejects.append(R_BAD_SIZE)
            elif not (ev.bs.is_integer() and ev.as_.is_integer()):
                out.rejects.append(R_FRACTIONAL_SIZE)
            elif not _time_ok(ev.t):
                out.rejects.append(R_BAD_TIME)
            else:
                out.quotes.append(ev)
        elif isinstance(ev, Trade):
            if not (math.isfinite(ev.p) and ev.p > 0):
                out.rejects.append(R_BAD_PRICE)
            elif not (math.isfinite(ev.s) and ev.s > 0):
                out.rejects.append(R_BAD_SIZE)
            elif not ev.s.is_integer():
                out.rejects.append(R_FRACTIONAL_SIZE)
            elif not _time_ok(ev.t):
                out.rejects.append(R_BAD_TIME)
            else:
                out.trades.append(ev)
        else:
            out.statuses.append(ev)
    return out


def _why_not(raw: msgspec.Raw) -> str:
    """Tell an event of a type we do not take from a malformed one of ours."""
    try:
        ev = _ev_decoder.decode(raw).get("ev")
    except msgspec.ValidationError:
        return R_MALFORMED
    known = ev in ("Q", "T", "status") or not isinstance(ev, str)
    return R_MALFORMED if known else R_UNKNOWN_EVENT


def vendor_to_osi(sym: str) -> str | None:
    """``O:SPY251219C00650000`` -> ``SPY251219C00650000``; None if not an option ticker."""
    if not sym.startswith(VENDOR_PREFIX):
        return None
    try:
        return parse_osi(sym).compact()
    except InvalidSymbol:
        return None


class EventFilter:
    """Which streamed events to keep: known symbols, per-contract time order.

    `listed` maps each streamed vendor symbol to (underlying, compact OSI). A quote
    older than the contract's newest accepted quote is dropped (equal times are
    kept: `t` has millisecond resolution); trades likewise among trades. Memory is
    bounded by the listed contracts: state of a contract is dropped when it is
    unlisted.
    """

    def __init__(self) -> None:
        self.listed: dict[str, tuple[str, str]] = {}
        self._quote_ms: dict[str, int] = {}
        self._trade_ms: dict[str, int] = {}

    def relist(self, underlying: str, contracts: list[Contract]) -> None:
        """Make `contracts` the listed ones of `underlying` (others of it are forgotten)."""
        keep = {c.symbol for c in contracts}
        for vendor, (u, osi) in list(self.listed.items()):
            if u == underlying and osi not in keep:
                del self.listed[vendor]
                self._quote_ms.pop(osi, None)
                self._trade_ms.pop(osi, None)
        for c in contracts:
            self.listed[VENDOR_PREFIX + c.symbol] = (underlying, c.symbol)

    def seed(self, osi: str, ts_us: int) -> bool:
        """Whether a quote of `osi` from elsewhere (a snapshot) at `ts_us` is newer than
        every streamed one; if so it counts as the newest from now on."""
        return self._seed(osi, ts_us, self._quote_ms)

    def seed_trade(self, osi: str, ts_us: int) -> bool:
        """`seed` for a trade (a snapshot's last trade), among trades."""
        return self._seed(osi, ts_us, self._trade_ms)

    @staticmethod
    def _seed(osi: str, ts_us: int, last: dict[str, int]) -> bool:
        ms = ts_us // 1000
        if ms <= last.get(osi, 0):
            return False
        last[osi] = ms
        return True

    def symbols(self) -> set[str]:
        """The compact OSI symbols listed."""
        return {osi for _, osi in self.listed.values()}

    def quote(self, q: Quote) -> tuple[str, str] | str:
        """(underlying, OSI) of a quote to keep, else the reason to drop it."""
        return self._check(q.sym, q.t, self._quote_ms)

    def trade(self, t: Trade) -> tuple[str, str] | str:
        """(underlying, OSI) of a trade to keep, else the reason to drop it."""
        return self._check(t.sym, t.t, self._trade_ms)

    def _check(self, sym: str, t: int, last: dict[str, int]) -> tuple[str, str] | str:
        hit = self.listed.get(sym)
        if hit is None:
            return R_UNKNOWN_SYMBOL
        osi = hit[1]
        if t < last.get(osi, 0):
            return R_OUT_OF_ORDER
        last[osi] = t
        return hit


# -- REST ------------------------------------------------------------------------------


class _Page(msgspec.Struct):
    results: list[msgspec.Raw] = []
    next_url: str | None = None


class _RestContract(msgspec.Struct):
    ticker: str
    contract_type: str
    expiration_date: date
    strike_price: float
    shares_per_contract: float = 100.0
    underlying_ticker: str | None = None
    exercise_style: str | None = None


# Cash-settled index roots, European-style; the venue's `exercise_style` decides
# when it is given, these when it is not (US equity and ETF options are American).
EUROPEAN_ROOTS: frozenset[str] = frozenset(
    {"SPX", "SPXW", "NDX", "NDXP", "RUT", "RUTW", "DJX", "VIX", "VIXW", "XSP", "XEO"}
)


def exercise_of(root: str, style: str | None) -> Exercise:
    """`american` or `european`: the venue's `style` when it names one, else by root."""
    named = (style or "").lower()
    if named == "american":
        return "american"
    if named == "european":
        return "european"
    return "european" if root in EUROPEAN_ROOTS else "american"


class _SnapDetails(msgspec.Struct):
    ticker: str


class _SnapQuote(msgspec.Struct):
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last_updated: int | None = None


class _SnapTrade(msgspec.Struct):
    price: float | None = None
    size: float | None = None
    sip_timestamp: int | None = None


class _SnapDay(msgspec.Struct):
    volume: float | None = None
    last_updated: int | None = None


class _SnapUnderlying(msgspec.Struct):
    price: float | None = None
    last_updated: int | None = None


class _SnapRow(msgspec.Struct):
    details: _SnapDetails
    open_interest: float | None = None
    last_quote: _SnapQuote | None = None
    last_trade: _SnapTrade | None = None
    day: _SnapDay | None = None
    underlying_asset: _SnapUnderlying | None = None


_page_decoder = msgspec.json.Decoder(_Page)
_contract_decoder = msgspec.json.Decoder(_RestContract)
_row_decoder = msgspec.json.Decoder(_SnapRow)
_RIGHT = {"call": "C", "put": "P"}


class BadPage(ValueError):
    """A REST reply that is not a page of results at all (not JSON, wrong shape)."""


def _page(body: bytes) -> _Page:
    try:
        return _page_decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise BadPage(str(exc)) from exc


@dataclass(slots=True)
class ContractsPage:
    """One page of /v3/reference/options/contracts, checked."""

    contracts: list[Contract]
    next_url: str | None
    rejects: list[str]


def parse_contracts_page(body: bytes, underlying: str) -> ContractsPage:
    """Contracts of `underlying` on one page; raises BadPage when it is not a page.

    A row is rejected (R_BAD_CONTRACT) when its ticker is not an ``O:`` OSI symbol,
    disagrees with its own expiry, type or strike, names another underlying, or has
    a non-integer or non-positive `shares_per_contract`.
    """
    page = _page(body)
    out = ContractsPage([], page.next_url or None, [])
    for raw in page.results:
        c = _contract(raw, underlying)
        if c is None:
            out.rejects.append(R_BAD_CONTRACT)
        else:
            out.contracts.append(c)
    return out


def _contract(raw: msgspec.Raw, underlying: str) -> Contract | None:
    try:
        r = _contract_decoder.decode(raw)
    except msgspec.ValidationError:
        return None
    if not r.ticker.startswith(VENDOR_PREFIX):
        return None
    try:
        sym = parse_osi(r.ticker)
    except InvalidSymbol:
        return None
    spc = r.shares_per_contract
    if (
        sym.expiry != r.expiration_date
        or _RIGHT.get(r.contract_type.lower()) != sym.right
        or not math.isfinite(r.strike_price)
        or round(r.strike_price * 1000) != sym.strike_thousandths
        or (r.underlying_ticker is not None and r.underlying_ticker != underlying)
        or not (math.isfinite(spc) and spc > 0 and spc == int(spc))
    ):
        return None
    return Contract(
        symbol=sym.compact(),
        underlying=underlying,
        root=sym.root,
        expiry=sym.expiry,
        expiry_us=contract_expiry_us(sym.root, sym.expiry),
        strike=sym.strike,
        right=sym.right,
        multiplier=int(spc),
        exercise=exercise_of(sym.root, r.exercise_style),
    )


@dataclass(frozen=True, slots=True)
class SeedQuote:
    """A contract's last quote from a snapshot (`ts_us` from its `last_updated`)."""

    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts_us: int


@dataclass(frozen=True, slots=True)
class SeedTrade:
    """A contract's last trade from a snapshot (`ts_us` from its `sip_timestamp`)."""

    price: float
    size: float
    ts_us: int


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """What a chain snapshot says of one contract: open interest (NaN: not given), quote,
    last trade, and the day's volume (NaN: not given) as of `volume_us` (the `day`
    aggregate's `last_updated`, which says which day the volume is of)."""

    symbol: str
    open_interest: float
    quote: SeedQuote | None
    last: SeedTrade | None = None
    volume: float = math.nan
    volume_us: int = 0


@dataclass(slots=True)
class SnapshotPage:
    """One page of /v3/snapshot/options/{underlying}, checked.

    `spot` / `spot_us`: the underlying's price and its time (the newest given on
    the page), None when the page gives none (the key's plan may lack stocks data).
    """

    rows: list[SnapshotRow]
    spot: float | None
    spot_us: int | None
    next_url: str | None
    rejects: list[str]


def parse_snapshot_page(body: bytes) -> SnapshotPage:
    """Rows and underlying price of one snapshot page; raises BadPage when it is not a page.

    A row without a usable ticker is rejected; a bad open interest becomes NaN, and a
    bad `last_quote` or `last_trade` (missing fields, negative or non-finite values,
    fractional sizes, no time) or `day` volume (fractional, or with no time) is left
    out, each counted in `rejects`.
    """
    page = _page(body)
    out = SnapshotPage([], None, None, page.next_url or None, [])
    for raw in page.results:
        try:
            r = _row_decoder.decode(raw)
        except msgspec.ValidationError:
            out.rejects.append(R_MALFORMED)
            continue
        osi = vendor_to_osi(r.details.ticker)
        if osi is None:
            out.rejects.append(R_BAD_CONTRACT)
            continue
        oi = math.nan
        if r.open_interest is not None:
            if _finite_nonneg(r.open_interest):
                oi = r.open_interest
            else:
                out.rejects.append(R_BAD_SIZE)
        volume, volume_us = _day_volume(r.day, out.rejects)
        out.rows.append(SnapshotRow(
            osi, oi, _seed(r.last_quote, out.rejects), _seed_trade(r.last_trade, out.rejects),
            volume, volume_us,
        ))  # fmt: skip
        u = r.underlying_asset
        if u is not None and u.price is not None:
            if not (math.isfinite(u.price) and u.price > 0):
                out.rejects.append(R_BAD_PRICE)
                continue
            ts = u.last_updated // 1000 if u.last_updated is not None else None
            if out.spot_us is None or (ts is not None and ts >= out.spot_us):
                out.spot, out.spot_us = u.price, ts
    return out


def _seed(q: _SnapQuote | None, rejects: list[str]) -> SeedQuote | None:
    if q is None:
        return None
    bid, ask, bs, as_, ns = q.bid, q.ask, q.bid_size, q.ask_size, q.last_updated
    if bid is None or ask is None or bs is None or as_ is None or ns is None:
        rejects.append(R_MALFORMED)
        return None
    if not (_finite_nonneg(bid) and _finite_nonneg(ask)):
        rejects.append(R_BAD_PRICE)
        return None
    if not (_finite_nonneg(bs) and _finite_nonneg(as_)):
        rejects.append(R_BAD_SIZE)
        return None
    if not (bs.is_integer() and as_.is_integer()):
        rejects.append(R_FRACTIONAL_SIZE)
        return None
    if not _time_ok(ns // 1_000_000):
        rejects.append(R_BAD_TIME)
        return None
    return SeedQuote(bid, ask, bs, as_, ns // 1000)


def _seed_trade(t: _SnapTrade | None, rejects: list[str]) -> SeedTrade | None:
    if t is None or (t.price is None and t.size is None):
        return None  # a contract that has not traded
    price, size, ns = t.price, t.size, t.sip_timestamp
    if price is None or size is None or ns is None:
        rejects.append(R_MALFORMED)
        return None
    if not (math.isfinite(price) and price > 0):
        rejects.append(R_BAD_PRICE)
        return None
    if not (math.isfinite(size) and size > 0):
        rejects.append(R_BAD_SIZE)
        return None
    if not size.is_integer():
        rejects.append(R_FRACTIONAL_SIZE)
        return None
    if not _time_ok(ns // 1_000_000):
        rejects.append(R_BAD_TIME)
        return None
    return SeedTrade(price, size, ns // 1000)


def _day_volume(day: _SnapDay | None, rejects: list[str]) -> tuple[float, int]:
    """(volume, its `last_updated` in µs), or (NaN, 0) when not given or bad."""
    if day is None or day.volume is None:
        return math.nan, 0
    v, ns = day.volume, day.last_updated
    if ns is None:
        rejects.append(R_MALFORMED)  # a volume of no known day
        return math.nan, 0
    if not _finite_nonneg(v):
        rejects.append(R_BAD_SIZE)
        return math.nan, 0
    if not v.is_integer():
        rejects.append(R_FRACTIONAL_SIZE)
        return math.nan, 0
    if not _time_ok(ns // 1_000_000):
        rejects.append(R_BAD_TIME)
        return math.nan, 0
    return v, ns // 1000
