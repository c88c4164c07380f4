"""Our IV and greeks of real Deribit tickers agree with Deribit's own."""

from __future__ import annotations

import json

import msgspec
import pytest

from optionsfeed.model.records import OptionRecord
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import UnderlyingTick
from optionsfeed.sources.deribit.normalize import Decoder, Quote, build_listing, put
from optionsfeed.sources.feed import FeedBuffer

from .fixtures import RECORDED, Recorded, notification


def price(rec: Recorded) -> OptionRecord:
    """The record processing publishes for `rec`: listing, index tick and ticker, through
    our decoder and the FeedBuffer, priced at the ticker's own time."""
    name = rec.data["instrument_name"]
    now_us = rec.data["timestamp"] * 1000
    result = build_listing("BTC", [msgspec.Raw(json.dumps(rec.instrument).encode())])
    assert result.listing is not None
    assert result.listing.contracts[0].expiry_us == int(rec.expiry.timestamp()) * 1_000_000
    decoder = Decoder()
    decoder.set_instruments("BTC", result.names)
    processor = Processor()
    buffer = FeedBuffer()
    buffer.listing(result.listing)
    processor.apply(buffer.take(), now_us)
    quote = decoder.decode(json.dumps(notification(f"ticker.{name}.100ms", rec.data)))
    assert isinstance(quote, Quote), quote
    put(buffer, quote)
    put(buffer, UnderlyingTick("BTC", rec.data["index_price"], None, None, now_us))
    (pub,) = processor.apply(buffer.take(), now_us)
    return msgspec.json.decode(dict(pub.records)[name], type=OptionRecord)


@pytest.mark.parametrize("rec", RECORDED, ids=[r.data["instrument_name"] for r in RECORDED])
def test_iv_and_greeks_agree_with_deribits(rec: Recorded) -> None:
    """IV within 0.005 of mark_iv, delta within 0.005, gamma within 1e-5 (absolute),
    vega, theta and rho within 3 % of Deribit's.

    Why these tolerances: Deribit publishes `mark_price` rounded to the option's tick
    (0.0005 BTC), and its greeks at its unrounded mark_iv. Our IV solves the rounded
    mark, so it differs from mark_iv by up to 0.31 vol points (BTC-23FEB24-45000-C,
    where a tick is worth most vega); greeks at that IV differ by up to about 2.5 %
    (theta of the same ticker). At Deribit's own IV the greeks agree to 1e-4
    relative. Deribit prints gamma with 5 decimals, so 1e-5 is its resolution.
    """
    r = price(rec)
    assert r.currency == "BTC"
    assert r.symbol == rec.data["instrument_name"]
    assert r.bid == rec.data["best_bid_price"]  # prices stay in BTC
    assert r.ask == rec.data["best_ask_price"]
    assert r.mark == pytest.approx(rec.data["mark_price"], abs=1e-4)  # the venue's mark
    assert r.flags == []
    assert r.iv is not None, "no IV: processing does not price inverse rows on the forward yet"
    assert r.iv == pytest.approx(rec.mark_iv / 100, abs=0.005)
    g = rec.greeks
    assert r.delta == pytest.approx(g["delta"], abs=0.005)
    assert r.gamma == pytest.approx(g["gamma"], abs=1e-5)
    assert r.vega == pytest.approx(g["vega"], rel=0.03)
    assert r.theta == pytest.approx(g["theta"], rel=0.03)
    assert r.rho == pytest.approx(g["rho"], rel=0.03)
