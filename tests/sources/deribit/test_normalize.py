"""Deribit messages -> our events, and instruments -> listings (pure, no sockets)."""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Any

import msgspec
import pytest

from optionsfeed.sources.base import UnderlyingTick
from optionsfeed.sources.deribit import normalize as n
from optionsfeed.sources.deribit.normalize import (
    Decoder,
    Dropped,
    Heartbeat,
    Quote,
    Response,
    build_listing,
    chunks,
    decode_channels,
    decode_instruments,
    encode_request,
    put,
)
from optionsfeed.sources.feed import FeedBuffer

from .fixtures import RECORDED, expiry_ms, instrument, notification, ticker, unusable

EXPIRY = date(2026, 12, 25)
INST = instrument("BTC", EXPIRY, 100_000, "call")
NAME = INST["instrument_name"]
CHANNEL = f"ticker.{NAME}.100ms"
TS = 1_796_000_000_000  # ms


def raw(obj: Any) -> msgspec.Raw:
    return msgspec.Raw(json.dumps(obj).encode())


def decoder() -> Decoder:
    d = Decoder()
    d.set_instruments("BTC", [NAME])
    return d


def tick_msg(**override: Any) -> str:
    return json.dumps(notification(CHANNEL, ticker(INST, TS, 95_000.0, **override)))


# -- JSON-RPC -------------------------------------------------------------------------


def test_requests_are_json_rpc_2() -> None:
    msg = json.loads(encode_request(7, "public/subscribe", {"channels": ["a"]}))
    assert msg == {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "public/subscribe",
        "params": {"channels": ["a"]},
    }


def test_responses_carry_result_or_error_and_tolerate_extra_fields() -> None:
    d = Decoder()
    ok = d.decode(
        '{"jsonrpc":"2.0","id":3,"result":["deribit_price_index.btc_usd"],'
        '"usIn":1,"usOut":2,"usDiff":1,"testnet":false}'
    )
    assert isinstance(ok, Response)
    assert ok.id == 3
    assert ok.error is None
    assert decode_channels(ok.result) == ["deribit_price_index.btc_usd"]
    err = d.decode(
        '{"jsonrpc":"2.0","id":4,"error":{"message":"Invalid params","data":'
        '{"reason":"value must be a list","param":"channels"},"code":-32602}}'
    )
    assert isinstance(err, Response)
    assert err.error is not None
    assert (err.error.code, err.error.message) == (-32602, "Invalid params")


def test_heartbeats() -> None:
    d = Decoder()
    hb = '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"%s"}}'
    assert d.decode(hb % "test_request") == Heartbeat(test_request=True)
    assert d.decode(hb % "heartbeat") == Heartbeat(test_request=False)


# -- tickers ----------------------------------------------------------------------------


def test_a_ticker_becomes_a_quote_in_the_coin_with_the_venues_columns() -> None:
    item = decoder().decode(tick_msg())
    assert isinstance(item, Quote)
    t = ticker(INST, TS, 95_000.0)
    assert item.underlying == "BTC"
    assert item.symbol == NAME
    assert (item.bid, item.ask) == (t["best_bid_price"], t["best_ask_price"])
    assert (item.bid_size, item.ask_size) == (10.0, 12.5)
    assert item.ts == TS * 1000
    assert item.mark == t["mark_price"]
    assert item.forward == 95_000.0
    assert item.last == t["last_price"]
    assert item.volume == 12.3
    assert item.open_interest == 42.5
    assert item.halted is False


def test_recorded_tickers_decode() -> None:
    """The recorded real notifications, some without last price or stats."""
    for rec in RECORDED:
        d = Decoder()
        d.set_instruments("BTC", [rec.data["instrument_name"]])
        channel = f"ticker.{rec.data['instrument_name']}.100ms"
        item = d.decode(json.dumps(notification(channel, rec.data)))
        assert isinstance(item, Quote), item
        assert item.forward == rec.data["underlying_price"]
        assert item.bid == rec.data["best_bid_price"]
        if "last_price" in rec.data:
            assert item.last == rec.data["last_price"]
        else:
            assert math.isnan(item.last)  # unknown: processing keeps the previous value


@pytest.mark.parametrize(
    ("override", "bid", "ask", "bid_size"),
    [
        ({"best_bid_price": 0.0, "best_bid_amount": 0.0}, 0.0, 0.0105, 0.0),
        ({"best_bid_price": None, "best_bid_amount": None}, 0.0, 0.0105, 0.0),
        ({"best_ask_price": 0.0, "best_ask_amount": 0.0}, 0.0095, math.nan, 10.0),
        ({"best_ask_price": None}, 0.0095, math.nan, 10.0),
    ],
)
def test_missing_sides(override: dict[str, Any], bid: float, ask: float, bid_size: float) -> None:
    """No bid is a bid of 0; no ask is NaN (unknown), as Quotes defines them."""
    base = {"best_bid_price": 0.0095, "best_ask_price": 0.0105, "mark_price": 0.01}
    item = decoder().decode(tick_msg(**{**base, **override}))
    assert isinstance(item, Quote)
    assert item.bid == bid
    assert item.bid_size == bid_size
    assert item.ask == ask or (math.isnan(ask) and math.isnan(item.ask))


def test_a_closed_book_is_halted_and_nulls_are_unknown() -> None:
    item = decoder().decode(
        tick_msg(state="closed", last_price=None, open_interest=None, stats={}, mark_price=0.0)
    )
    assert isinstance(item, Quote)
    assert item.halted
    assert math.isnan(item.last)
    assert math.isnan(item.volume)
    assert math.isnan(item.open_interest)


def test_a_mark_of_zero_is_a_mark() -> None:
    """Deribit's mark_price 0 is the venue's mark (of a worthless option), not a missing
    one: processing must not replace it by a mid or half the ask."""
    item = decoder().decode(tick_msg(mark_price=0.0, best_bid_price=0.0, best_ask_price=0.0005))
    assert isinstance(item, Quote)
    assert item.mark == 0.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", n.MALFORMED),
        ("[1, 2]", n.MALFORMED),
        (tick_msg(best_bid_price="0.01"), n.MALFORMED),
        (tick_msg(timestamp=1.5), n.MALFORMED),
        (tick_msg(mark_price=None), n.MALFORMED),
        (tick_msg(underlying_price=None), n.MALFORMED),
        (tick_msg(instrument_name="BTC-25DEC26-90000-C"), n.MALFORMED),  # not the channel's
        (json.dumps(notification(CHANNEL, [1])), n.MALFORMED),
        (tick_msg(best_bid_price=-0.001), n.BAD_VALUE),
        (tick_msg(best_ask_amount=-1), n.BAD_VALUE),
        (tick_msg(underlying_price=0), n.BAD_VALUE),
        (tick_msg(mark_price=-0.01), n.BAD_VALUE),
        (tick_msg(last_price=1e308 * 10), n.MALFORMED),  # json.dumps writes Infinity
        (tick_msg(timestamp=0), n.BAD_VALUE),
        (tick_msg(stats={"volume": -1}), n.BAD_VALUE),
        (
            json.dumps(notification("ticker.BTC-25DEC26-1-C.100ms", {**ticker(INST, TS, 9e4),
                                                                    "instrument_name": "BTC-25DEC26-1-C"})),
            n.UNKNOWN_INSTRUMENT,
        ),
        (json.dumps(notification("book.BTC-PERPETUAL.100ms", {})), n.UNKNOWN_CHANNEL),
        (json.dumps(notification("deribit_price_index.sol_usd",
                                 {"index_name": "sol_usd", "price": 1.0, "timestamp": TS})),
         n.UNKNOWN_CHANNEL),
        ('{"jsonrpc":"2.0","method":"surprise","params":{}}', n.UNEXPECTED),
    ],
)  # fmt: skip
def test_bad_messages_are_dropped_and_counted(text: str, reason: str) -> None:
    """Never an exception, never a NaN: a Dropped with the reason, counted."""
    d = decoder()
    item = d.decode(text)
    assert isinstance(item, Dropped), item
    assert item.reason == reason
    assert item.detail
    assert d.dropped == {reason: 1}


def test_an_older_ticker_is_out_of_order() -> None:
    d = decoder()
    assert isinstance(d.decode(tick_msg(timestamp=TS)), Quote)
    assert isinstance(d.decode(tick_msg(timestamp=TS)), Quote)  # the same time is not older
    late = d.decode(tick_msg(timestamp=TS - 1))
    assert isinstance(late, Dropped)
    assert late.reason == n.OUT_OF_ORDER
    assert isinstance(d.decode(tick_msg(timestamp=TS + 100)), Quote)
    assert d.dropped == {n.OUT_OF_ORDER: 1}


def test_index_prices_become_underlying_ticks() -> None:
    d = decoder()

    def index(price: Any, ts: int) -> str:
        data = {"index_name": "btc_usd", "price": price, "timestamp": ts}
        return json.dumps(notification("deribit_price_index.btc_usd", data))

    assert d.decode(index(94_000.5, TS)) == UnderlyingTick("BTC", 94_000.5, None, None, TS * 1000)
    assert d.decode(index(94_001, TS + 5)) == UnderlyingTick(
        "BTC", 94_001.0, None, None, (TS + 5) * 1000
    )
    for bad, reason in [(index(94_000, TS), n.OUT_OF_ORDER), (index(-1, TS + 9), n.BAD_VALUE),
                        (index("x", TS + 9), n.MALFORMED)]:  # fmt: skip
        item = d.decode(bad)
        assert isinstance(item, Dropped)
        assert item.reason == reason


def test_option_trades_become_prints_and_bad_ones_are_counted() -> None:
    """A trades notification (a list) gives the usable trades; an unlisted instrument or
    a bad amount is counted and skipped without losing the others."""
    d = decoder()
    channel = "trades.option.BTC.100ms"

    def trade(name: str = NAME, **kw: Any) -> dict[str, Any]:
        base = {
            "trade_seq": 7,
            "trade_id": "BTC-1",
            "timestamp": TS,
            "tick_direction": 0,
            "price": 0.0215,
            "mark_price": 0.021,
            "iv": 50.1,
            "instrument_name": name,
            "index_price": 94_990.0,
            "direction": "buy",
            "amount": 2.5,
            "contracts": 2.5,
        }
        return {**base, **kw}  # fmt: skip

    msg = [
        trade(),
        trade("BTC-1JAN27-1000-C"),
        trade(amount=-1),
        trade(timestamp=TS + 1, amount=0.1),
    ]
    item = d.decode(json.dumps(notification(channel, msg)))
    assert isinstance(item, n.Prints)
    assert item.trades == [
        n.Print("BTC", NAME, 0.0215, 2.5, TS * 1000),
        n.Print("BTC", NAME, 0.0215, 0.1, (TS + 1) * 1000),
    ]
    assert (d.dropped[n.UNKNOWN_INSTRUMENT], d.dropped[n.BAD_VALUE]) == (1, 1)
    buf = FeedBuffer()
    put(buf, item)
    (trades,) = buf.take().trades
    assert trades.size.tolist() == [2.5, 0.1]
    bad = d.decode(json.dumps(notification(channel, {"not": "a list"})))
    assert isinstance(bad, Dropped)
    assert bad.reason == n.MALFORMED


def test_delisted_instruments_are_forgotten() -> None:
    """set_instruments replaces an underlying's set; its tickers become unknown."""
    d = decoder()
    assert isinstance(d.decode(tick_msg()), Quote)
    d.set_instruments("BTC", [])
    assert isinstance(d.decode(tick_msg(timestamp=TS + 1)), Dropped)
    assert NAME not in d.last_ts  # bounded by what is listed


def test_put_hands_quotes_and_ticks_to_the_buffer() -> None:
    buf = FeedBuffer()
    item = decoder().decode(tick_msg())
    assert isinstance(item, Quote)
    put(buf, item)
    put(buf, UnderlyingTick("BTC", 1.0, None, None, 5))
    batch = buf.take()
    (q,) = batch.quotes
    assert q.symbols == [NAME]
    assert q.forward is not None
    assert q.forward.tolist() == [95_000.0]
    assert q.mark is not None
    assert q.mark.tolist() == [item.mark]
    assert batch.ticks == [UnderlyingTick("BTC", 1.0, None, None, 5)]


# -- listings ---------------------------------------------------------------------------


def test_a_listing_of_inverse_options() -> None:
    insts = [
        instrument("BTC", date(2027, 1, 29), 90_000, "put"),
        instrument("BTC", EXPIRY, 110_000, "call"),
        instrument("BTC", EXPIRY, 100_000, "put"),
        instrument("BTC", EXPIRY, 100_000, "call"),
    ]
    result = build_listing("BTC", [raw(i) for i in insts])
    assert result.listing is not None
    assert result.listing.inverse
    assert (result.listing.rate, result.listing.dividend_yield) == (0.0, 0.0)
    assert result.names == [
        "BTC-25DEC26-100000-C",
        "BTC-25DEC26-100000-P",
        "BTC-25DEC26-110000-C",
        "BTC-29JAN27-90000-P",
    ]
    c = result.listing.contracts[1]
    assert (c.symbol, c.underlying, c.root, c.currency) == (
        "BTC-25DEC26-100000-P", "BTC", "BTC", "BTC",
    )  # fmt: skip
    assert c.expiry == EXPIRY
    assert c.expiry_us == expiry_ms(EXPIRY) * 1000
    assert (c.strike, c.right, c.multiplier) == (100_000.0, "P", 1)
    assert not result.skipped


def test_instruments_that_are_not_usable_are_skipped_and_counted() -> None:
    good = instrument("BTC", EXPIRY, 100_000, "call")
    bad = [
        *unusable("BTC", date(2026, 11, 30)),
        instrument("BTC", EXPIRY, 100_000, "put", option_type="call"),  # name says put
        instrument("BTC", EXPIRY, 100_000, "call", expiration_timestamp=expiry_ms(EXPIRY) + 86_400_000),
        instrument("BTC", EXPIRY, 100_000, "call", contract_size=0.5),
        instrument("ETH", EXPIRY, 3_000, "call"),  # another currency's
        instrument("BTC", EXPIRY, 120_000, "call", is_active=False),
        instrument("BTC", EXPIRY, 130_000, "call", kind="future"),
        {"instrument_name": "BTC-25DEC26-140000-C", "strike": "high"},
        good,  # a second time
    ]  # fmt: skip
    result = build_listing("BTC", [raw(i) for i in [good, *bad]])
    assert result.names == [good["instrument_name"]]
    assert result.skipped == {
        n.SKIP_NOT_INVERSE: 2,
        n.SKIP_BAD_NAME: 1,
        n.SKIP_DISAGREES: 4,
        n.SKIP_INACTIVE: 1,
        n.SKIP_NOT_OPTION: 1,
        n.SKIP_MALFORMED: 1,
        n.SKIP_DUPLICATE: 1,
    }
    assert result.examples[n.SKIP_BAD_NAME] == "BTC-31FEB27-80000-P"
    line = n.describe_skips(result)
    assert "1 name does not parse (e.g. BTC-31FEB27-80000-P)" in line


def test_expired_instruments_are_left_out_given_the_time() -> None:
    insts = [raw(instrument("BTC", d, 100_000, "call")) for d in (EXPIRY, date(2027, 1, 29))]
    result = build_listing("BTC", insts, now_us=expiry_ms(EXPIRY) * 1000)
    assert result.names == ["BTC-29JAN27-100000-C"]
    assert result.skipped == {n.SKIP_EXPIRED: 1}
    assert build_listing("BTC", []).listing is None


def test_a_get_instruments_result_must_be_a_list() -> None:
    assert len(decode_instruments(raw([INST, {"x": 1}]))) == 2
    with pytest.raises(msgspec.DecodeError):
        decode_instruments(raw({"instrument_name": NAME}))


def test_chunks() -> None:
    assert list(chunks(["a", "b", "c", "d", "e"], 2)) == [["a", "b"], ["c", "d"], ["e"]]
    assert list(chunks([], 200)) == []
