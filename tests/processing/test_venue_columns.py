"""Venue columns (mark, forward, last, volume, open interest, halted), inverse listings
and relisting that carries state over."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec
import numpy as np
import pytest

from optionsfeed.model.contract import Contract
from optionsfeed.model.envelope import Publication, decode_envelope
from optionsfeed.model.records import OptionRecord
from optionsfeed.pricing import bsm_price
from optionsfeed.processing.chain import US_PER_YEAR
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import Listing, Quotes, SourceBatch, Trades, UnderlyingTick

NOW = 1_780_000_000_000_000  # µs
EXPIRY_US = NOW + int(30 * 86_400e6)
T = (EXPIRY_US - NOW) / US_PER_YEAR


def coin_contracts(strikes: list[float]) -> list[Contract]:
    out = []
    for k in strikes:
        for right in ("C", "P"):
            name = f"BTC-30JUN26-{int(k)}-{right}"
            out.append(
                Contract(name, "BTC", "BTC", date(2026, 6, 30), EXPIRY_US, k, right, 1, "BTC")
            )
    return out


def coin_listing(strikes: list[float], **kw: Any) -> Listing:
    return Listing("BTC", coin_contracts(strikes), 0.0, 0.0, inverse=True, **kw)


def quotes(symbols: list[str], ts: int = NOW, **cols: list[float] | list[bool]) -> Quotes:
    n = len(symbols)
    base = {"bid": [0.01] * n, "ask": [0.012] * n, "bid_size": [1.0] * n, "ask_size": [1.0] * n}
    arrays: dict[str, Any] = {}
    for k, v in {**base, **cols}.items():
        arrays[k] = np.array(v, dtype=np.bool_ if k == "halted" else np.float64)
    return Quotes("BTC", symbols, ts=np.full(n, ts, dtype=np.int64), **arrays)


def records(pubs: list[Publication]) -> dict[str, OptionRecord]:
    out: dict[str, OptionRecord] = {}
    for p in pubs:
        for sym, raw in p.records:
            if not sym.startswith("_"):
                out[sym] = msgspec.json.decode(raw, type=OptionRecord)
    return out


def started(listing: Listing) -> Processor:
    proc = Processor()
    proc.apply(
        SourceBatch(listings=[listing], ticks=[UnderlyingTick("BTC", 60_000.0, None, None, NOW)]),
        NOW,
    )
    return proc


def test_inverse_prices_are_solved_in_usd_on_the_forward() -> None:
    """A coin-quoted mark times the forward is the USD price; the IV that reprices it comes back."""
    fwd, sigma = 61_000.0, 0.65
    proc = started(coin_listing([60_000.0]))
    usd = bsm_price(np.array([True, False]), fwd, 60_000.0, T, 0.0, 0.0, sigma)
    marks = (usd / fwd).tolist()
    pubs = proc.apply(
        SourceBatch(quotes=[quotes(["BTC-30JUN26-60000-C", "BTC-30JUN26-60000-P"],
                                   mark=marks, forward=[fwd, fwd])]),
        NOW,
    )  # fmt: skip
    recs = records(pubs)
    for sym, mark in zip(["BTC-30JUN26-60000-C", "BTC-30JUN26-60000-P"], marks, strict=True):
        r = recs[sym]
        assert r.currency == "BTC"
        assert r.iv is not None
        assert abs(r.iv - sigma) < 1e-4
        assert r.mark is not None
        assert r.mark == round(mark, 8)  # coin prices keep 8 decimals
        # The greeks were computed on the forward, which the record names.
        assert r.underlying_price == fwd
        assert (r.forward, r.forward_source) == (fwd, "venue")
    call, put = recs["BTC-30JUN26-60000-C"], recs["BTC-30JUN26-60000-P"]
    assert call.delta is not None
    assert put.delta is not None
    assert abs((call.delta - put.delta) - 1.0) < 1e-4  # Black-76 with rate 0: N(d1) - (N(d1) - 1)


def test_without_a_venue_mark_the_mid_is_used_and_spot_prices_it() -> None:
    """A NaN mark and forward fall back to the mid and the spot."""
    proc = started(coin_listing([60_000.0]))
    nan = float("nan")
    pubs = proc.apply(
        SourceBatch(quotes=[quotes(["BTC-30JUN26-60000-C"], mark=[nan], forward=[nan])]), NOW
    )
    r = records(pubs)["BTC-30JUN26-60000-C"]
    assert r.mark == 0.011
    assert r.underlying_price == 60_000.0
    assert (r.forward, r.forward_source) == (60_000.0, "carry")  # rate 0, yield 0


def test_venue_figures_missing_from_a_message_keep_their_value() -> None:
    """last, volume and open interest: NaN means not sent, so the earlier figure stays."""
    proc = started(coin_listing([60_000.0]))
    sym = "BTC-30JUN26-60000-C"
    proc.apply(
        SourceBatch(quotes=[quotes([sym], last=[0.02], volume=[12.5], open_interest=[300.0])]), NOW
    )
    nan = float("nan")
    pubs = proc.apply(
        SourceBatch(quotes=[quotes([sym], ts=NOW + 1000, bid=[0.0105], last=[nan], volume=[nan],
                                   open_interest=[nan])]),
        NOW + 1000,
    )  # fmt: skip
    delta = decode_envelope(pubs[0].payload).option_deltas()[0]
    assert delta["bid"] == 0.0105
    assert not {"last", "volume", "open_interest"} & set(delta)
    r = records(pubs)[sym]
    assert (r.last, r.volume, r.open_interest) == (0.02, 12.5, 300)


def test_a_halted_contract_is_flagged() -> None:
    """The venue's halted state becomes the `halted` flag, and clears again."""
    proc = started(coin_listing([60_000.0]))
    sym = "BTC-30JUN26-60000-C"
    r = records(proc.apply(SourceBatch(quotes=[quotes([sym], halted=[True])]), NOW))[sym]
    assert "halted" in r.flags
    r = records(proc.apply(SourceBatch(quotes=[quotes([sym], halted=[False], bid=[0.0101])]), NOW))[
        sym
    ]
    assert "halted" not in r.flags


def test_relisting_starts_a_new_epoch_and_keeps_what_is_known() -> None:
    """A new listing resets the sequence; contracts in both listings keep their values,
    new ones start empty, dropped ones are gone."""
    proc = started(coin_listing([60_000.0, 62_000.0], open_interest=np.array([5.0, 6.0, 7.0, 8.0])))
    kept, dropped = "BTC-30JUN26-60000-C", "BTC-30JUN26-62000-C"
    first = proc.apply(SourceBatch(quotes=[quotes([kept, dropped], volume=[3.0, 4.0])]), NOW)
    epoch = first[0].epoch
    nan = float("nan")
    relisted = coin_listing([60_000.0, 64_000.0], open_interest=np.array([nan, 9.0, 10.0, 11.0]))
    pubs = proc.apply(SourceBatch(listings=[relisted]), NOW + 1)
    (reset,) = pubs
    assert reset.reset
    assert reset.seq == 1
    assert reset.epoch != epoch
    recs = records(pubs)
    assert dropped not in recs
    assert recs[kept].bid == 0.01
    assert recs[kept].volume == 3
    assert recs[kept].iv is not None
    assert recs[kept].open_interest == 5  # the new listing did not know it: kept
    assert recs["BTC-30JUN26-60000-P"].open_interest == 9
    assert recs["BTC-30JUN26-64000-C"].bid is None
    assert recs["BTC-30JUN26-64000-C"].open_interest == 10


def test_open_interest_from_quotes_gives_max_pain_and_atm_iv_uses_the_forward() -> None:
    """A venue whose open interest comes with its quotes (none in the listing) still
    gets max pain; ATM IV is read at the venue's forward."""
    strikes = [58_000.0, 60_000.0, 62_000.0]
    proc = started(coin_listing(strikes))
    assert proc._stats["BTC"]["max_pain"] == {}
    fwd, sigma = 61_000.0, 0.6
    syms = [c.symbol for c in coin_contracts(strikes)]
    calls = np.array([s.endswith("-C") for s in syms])
    ks = np.array([float(s.split("-")[2]) for s in syms])
    marks = (bsm_price(calls, fwd, ks, T, 0.0, 0.0, sigma) / fwd).tolist()
    oi = [500.0, 10.0, 30.0, 40.0, 50.0, 60.0]  # most on the 58,000 call: it pays above 58,000
    proc.apply(
        SourceBatch(quotes=[quotes(syms, mark=marks, forward=[fwd] * 6, open_interest=oi)]),
        NOW + 2_000_000,
    )
    stats = proc._stats["BTC"]
    assert stats["max_pain"] == {"2026-06-30": 58_000.0}
    assert stats["atm_iv"] == pytest.approx(sigma, abs=1e-4)


def test_trades_set_last_but_leave_a_venue_volume_alone() -> None:
    """Where the venue publishes volume, trades set last and last size only; elsewhere
    they add to the counted volume."""
    proc = started(coin_listing([60_000.0]))
    call, put = "BTC-30JUN26-60000-C", "BTC-30JUN26-60000-P"
    proc.apply(SourceBatch(quotes=[quotes([call], volume=[12.5])]), NOW)
    prints = Trades("BTC", [call, put], np.array([0.02, 0.03]), np.array([0.5, 2.0]),
                    np.full(2, NOW + 10, dtype=np.int64))  # fmt: skip
    recs = records(proc.apply(SourceBatch(trades=[prints]), NOW + 10))
    assert (recs[call].last, recs[call].last_size, recs[call].volume) == (0.02, 0.5, 12.5)
    assert (recs[put].last, recs[put].last_size, recs[put].volume) == (0.03, 2, 2)


def test_a_first_quote_older_than_the_listing_dates_its_record() -> None:
    """A venue's snapshot of the last quote, an hour before the listing: the record's
    ts is that hour (not the listing time) and the quote is stale; a newer quote moves
    ts on and an older one after it does not move it back."""
    proc = Processor(stale_after_us=60_000_000)
    listing = coin_listing([60_000.0])
    hour_ago = NOW - 3_600_000_000
    call = "BTC-30JUN26-60000-C"
    tick = UnderlyingTick("BTC", 60_000.0, None, None, hour_ago - 5)
    recs = records(proc.apply(
        SourceBatch(listings=[listing], ticks=[tick], quotes=[quotes([call], ts=hour_ago)]), NOW
    ))  # fmt: skip
    assert recs[call].ts == hour_ago
    assert "stale" in recs[call].flags
    assert recs["BTC-30JUN26-60000-P"].ts == NOW  # never quoted: as of the listing
    recs = records(proc.apply(SourceBatch(quotes=[quotes([call], ts=NOW + 1, bid=[0.011])]),
                              NOW + 1))  # fmt: skip
    assert recs[call].ts == NOW + 1
    assert "stale" not in recs[call].flags
    recs = records(proc.apply(SourceBatch(quotes=[quotes([call], ts=NOW - 9, bid=[0.0105])]),
                              NOW + 2))  # fmt: skip
    assert recs[call].ts == NOW + 1
