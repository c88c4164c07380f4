"""`iv_bid` and `iv_ask`: the volatilities of the bid and the ask, on full records and
deltas, null where none fits."""

from __future__ import annotations

import numpy as np
import pytest

from optionsfeed.model.envelope import decode_envelope
from optionsfeed.pricing import bsm_price, implied_vol
from optionsfeed.processing.chain import US_PER_YEAR
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import SourceBatch, UnderlyingTick

from .test_conventions import DAY_US, FWD, NOW, _usd_priced, coin_chain, coin_quotes
from .test_venue_columns import records


def test_bid_and_ask_ivs_bracket_the_mark_iv() -> None:
    """A two-sided USD quote: the bid's IV, the mark's and the ask's, in that order,
    each the volatility that reprices its price."""
    r = _usd_priced([2.0, 11.0], [2.2, 11.4])["C"]
    assert isinstance(r.iv_bid, float)
    assert isinstance(r.iv_ask, float)
    assert r.iv is not None
    assert r.iv_bid < r.iv < r.iv_ask
    t = 30 * DAY_US / US_PER_YEAR
    assert r.iv_bid == pytest.approx(float(implied_vol(2.0, True, 100.0, 110.0, t, 0.04, 0.0)),
                                     abs=5e-6)  # fmt: skip
    assert r.iv_ask == pytest.approx(float(implied_vol(2.2, True, 100.0, 110.0, t, 0.04, 0.0)),
                                     abs=5e-6)  # fmt: skip


def test_no_bid_has_no_bid_iv_and_an_ask_above_the_bound_has_no_ask_iv() -> None:
    """No bid: iv_bid null (the ask's IV is still known); an ask above the upper bound
    (the strike for a put at rate 0) fits no volatility: iv_ask null."""
    recs = _usd_priced([0.0, 10.5], [0.05, 111.0], rate=0.0)
    call, put = recs["C"], recs["P"]
    assert call.iv_bid is None
    assert call.iv_ask is not None
    assert put.iv_bid is not None
    assert put.iv_ask is None


def test_coin_side_ivs_are_solved_in_usd_and_sent_in_deltas_when_they_change() -> None:
    """A BTC quote's sides are priced in USD on the forward like the mark; a delta
    carries iv_bid or iv_ask only when its visible value changed."""
    expiry_us = NOW + 30 * DAY_US
    listing = coin_chain([FWD], expiry_us)
    proc = Processor()
    tick = UnderlyingTick("BTC", FWD, None, None, NOW)
    proc.apply(SourceBatch(listings=[listing], ticks=[tick]), NOW)
    t = (expiry_us - NOW) / US_PER_YEAR
    bid, ask = (float(bsm_price(True, FWD, FWD, t, 0.0, 0.0, v)) / FWD for v in (0.48, 0.52))
    marks = [round((bid + ask) / 2, 8)] * 2
    q = coin_quotes(listing, marks, FWD, NOW, bid=[round(bid, 8)] * 2, ask=[round(ask, 8)] * 2)
    r = records(proc.apply(SourceBatch(quotes=[q]), NOW))[listing.contracts[0].symbol]
    assert r.iv_bid == pytest.approx(0.48, abs=1e-5)
    assert r.iv_ask == pytest.approx(0.52, abs=1e-5)
    # Only the ask moves: the delta carries ask and iv_ask, not iv_bid.
    q = coin_quotes(listing, marks, FWD, NOW + 1000, bid=[round(bid, 8)] * 2,
                    ask=[round(ask * 1.01, 8)] * 2)  # fmt: skip
    (pub,) = proc.apply(SourceBatch(quotes=[q]), NOW + 1000)
    (d, _) = decode_envelope(pub.payload).option_deltas()
    assert {"ask", "iv_ask"} <= set(d)
    assert "iv_bid" not in d
    assert "iv" not in d  # the venue's mark did not move
    assert np.isfinite(d["iv_ask"])
