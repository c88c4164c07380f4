"""Tests of the processor: deltas, sequences, flags and cache consistency."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import msgspec
import numpy as np

from optionsfeed.model.calendar import expiry_instant_us
from optionsfeed.model.contract import Contract
from optionsfeed.model.envelope import STATS_FIELD, UNDERLYING_FIELD, Publication, decode_envelope
from optionsfeed.model.records import OptionRecord
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import Listing, Quotes, SourceBatch, Trades, UnderlyingTick

NOW = 1_764_000_000_000_000  # 2025-11-24 in µs
EXPIRY = date(2025, 12, 19)


def contracts() -> list[Contract]:
    out = []
    for strike in (90.0, 100.0, 110.0):
        for right in ("C", "P"):
            sym = f"XYZ251219{right}{int(strike * 1000):08d}"
            out.append(
                Contract(sym, "XYZ", "XYZ", EXPIRY, expiry_instant_us(EXPIRY), strike, right)
            )
    return out


def listing() -> Listing:
    return Listing("XYZ", contracts(), 0.04, 0.01, np.array([100.0, 200, 300, 400, 500, 600]))


def quotes(symbols: list[str], bid: list[float], ask: list[float], ts: int) -> Quotes:
    n = len(symbols)
    return Quotes(
        "XYZ", symbols, np.array(bid), np.array(ask), np.full(n, 10.0), np.full(n, 20.0),
        np.full(n, ts, dtype=np.int64),
    )  # fmt: skip


def started() -> tuple[Processor, list[Publication]]:
    p = Processor(stale_after_us=60_000_000)
    pubs = p.apply(
        SourceBatch(listings=[listing()], ticks=[UnderlyingTick("XYZ", 100.0, 99.99, 100.01, NOW)]),
        NOW,
    )
    return p, pubs


def merge(state: dict[str, dict[str, Any]], pub: Publication) -> None:
    env = decode_envelope(pub.payload)
    for d in env.option_deltas():
        state[d["symbol"]].update(d)


def test_listing_gives_a_reset_with_every_record() -> None:
    """A new listing publishes a reset: epoch, seq 1, all records, underlying, stats, info."""
    _, pubs = started()
    assert len(pubs) == 1
    pub = pubs[0]
    assert pub.reset
    assert pub.seq == 1
    assert pub.prev == 0
    fields = dict(pub.records)
    assert set(fields) == {c.symbol for c in contracts()} | {UNDERLYING_FIELD, STATS_FIELD}
    rec = msgspec.json.decode(fields["XYZ251219C00100000"], type=OptionRecord)
    assert rec.bid is None
    assert rec.iv is None
    assert rec.flags == []
    assert rec.open_interest == 300
    assert rec.expiry == "2025-12-19"
    assert rec.multiplier == 100
    assert pub.info is not None
    assert b"2025-12-19" in pub.info


def test_quotes_publish_deltas_with_growing_seq() -> None:
    """Each batch that changes something is one envelope with seq = prev + 1."""
    p, first = started()
    sym = "XYZ251219C00100000"
    pubs = p.apply(SourceBatch(quotes=[quotes([sym], [3.1], [3.3], NOW + 1000)]), NOW + 1000)
    assert len(pubs) == 1
    assert pubs[0].prev == 1
    assert pubs[0].seq == 2
    assert pubs[0].epoch == first[0].epoch
    env = decode_envelope(pubs[0].payload)
    (d,) = env.option_deltas()
    assert d["symbol"] == sym
    assert d["bid"] == 3.1
    assert d["ask"] == 3.3
    assert d["mark"] == 3.2
    assert d["ts"] == NOW + 1000
    assert 0.05 < d["iv"] < 1.0
    assert 0.3 < d["delta"] < 0.7
    assert d["underlying_price"] == 100.0
    assert "open_interest" not in d  # unchanged fields are not sent
    pubs = p.apply(SourceBatch(quotes=[quotes([sym], [3.1], [3.3], NOW + 2000)]), NOW + 2000)
    assert pubs == []  # nothing visible changed: no envelope, no seq


def test_only_changed_fields_are_sent() -> None:
    """A size-only change carries just the sizes, the key and ts."""
    p, _ = started()
    sym = "XYZ251219P00100000"
    p.apply(SourceBatch(quotes=[quotes([sym], [2.0], [2.2], NOW + 1)]), NOW + 1)
    q = quotes([sym], [2.0], [2.2], NOW + 2)
    q.bid_size[:] = 77
    (pub,) = p.apply(SourceBatch(quotes=[q]), NOW + 2)
    (d,) = decode_envelope(pub.payload).option_deltas()
    assert set(d) == {"symbol", "ts", "bid_size"}
    assert d["bid_size"] == 77


def test_flags_and_no_nan_on_the_wire() -> None:
    """Below-intrinsic, crossed and no-bid quotes get their flags; unknowns are null."""
    p, _ = started()
    itm_call, crossed, nobid = "XYZ251219C00090000", "XYZ251219C00110000", "XYZ251219P00090000"
    (pub,) = p.apply(
        SourceBatch(
            quotes=[quotes([itm_call, crossed, nobid], [1.0, 2.0, 0.0], [1.2, 1.9, 0.05], NOW + 5)]
        ),
        NOW + 5,
    )
    assert b"NaN" not in pub.payload
    assert b"Infinity" not in pub.payload
    by = {d["symbol"]: d for d in decode_envelope(pub.payload).option_deltas()}
    # iv and greeks were null before and stay null, so the delta carries only the flag.
    assert "iv" not in by[itm_call]
    assert by[itm_call]["flags"] == ["iv_failed"]
    full = {k: msgspec.json.decode(v) for k, v in pub.records}
    assert full[itm_call]["iv"] is None
    assert full[itm_call]["delta"] is None
    assert full[itm_call]["flags"] == ["iv_failed"]
    assert "crossed" in by[crossed]["flags"]
    assert "no_bid" in by[nobid]["flags"]
    for _, raw in pub.records:
        assert b"NaN" not in raw


def test_deltas_merged_into_the_snapshot_equal_the_cache() -> None:
    """Applying every delta to the reset's records gives the latest full records."""
    p, (reset,) = started()
    state = {k: msgspec.json.decode(v) for k, v in reset.records if not k.startswith("__")}
    cache = dict(reset.records)
    rng = np.random.default_rng(7)
    syms = [c.symbol for c in contracts()]
    ts = NOW
    for i in range(50):
        ts += 100_000
        pick = sorted(set(rng.choice(len(syms), 3).tolist()))
        mids = rng.uniform(0.5, 15.0, len(pick)).round(2)
        batch = SourceBatch(
            quotes=[quotes([syms[j] for j in pick], list(mids - 0.05), list(mids + 0.05), ts)]
        )
        if i % 5 == 0:
            batch.ticks.append(UnderlyingTick("XYZ", 100 + rng.normal(), None, None, ts))
        if i % 3 == 0:
            n = len(pick)
            batch.trades.append(
                Trades(
                    "XYZ",
                    [syms[j] for j in pick],
                    mids,
                    np.full(n, 2.0),
                    np.full(n, ts, dtype=np.int64),
                )
            )
        for pub in p.apply(batch, ts):
            merge(state, pub)
            cache.update(pub.records)
    for sym in syms:
        full = msgspec.json.decode(cache[sym])
        assert state[sym] == full, sym


def test_trades_accumulate_volume() -> None:
    """Trade sizes add up to the day's volume; last and last_size follow the print."""
    p, _ = started()
    sym = "XYZ251219C00110000"
    t = Trades(
        "XYZ", [sym, sym], np.array([1.5, 1.6]), np.array([3.0, 4.0]), np.array([NOW + 9, NOW + 10])
    )
    (pub,) = p.apply(SourceBatch(trades=[t]), NOW + 10)
    (d,) = decode_envelope(pub.payload).option_deltas()
    assert d["volume"] == 7
    assert d["last"] == 1.6
    assert d["last_size"] == 4
    assert isinstance(d["volume"], int)


def test_stale_flag_after_silence() -> None:
    """A contract with no quote for longer than stale_after gets `stale`, and loses it on a quote."""
    p, _ = started()
    sym = "XYZ251219C00100000"
    p.apply(SourceBatch(quotes=[quotes([sym], [3.0], [3.2], NOW + 1)]), NOW + 1)
    later = NOW + 61_000_000
    pubs = p.apply(SourceBatch(), later)
    stale = {d["symbol"]: d for pub in pubs for d in decode_envelope(pub.payload).option_deltas()}
    assert stale[sym]["flags"] == ["stale"]
    (pub,) = [
        x
        for x in p.apply(SourceBatch(quotes=[quotes([sym], [3.0], [3.3], later + 1)]), later + 1)
        if x.payload
    ]
    (d,) = [d for d in decode_envelope(pub.payload).option_deltas() if d["symbol"] == sym]
    assert d["flags"] == []


def test_underlying_tick_and_stats() -> None:
    """A tick publishes an underlying delta; stats come about once a second."""
    p, (reset,) = started()
    stats = msgspec.json.decode(dict(reset.records)[STATS_FIELD])
    assert stats["underlying"] == "XYZ"
    assert stats["total_open_interest"] == 2100
    assert stats["max_pain"] == {"2025-12-19": 110.0}  # least payout: 5,000 at 110
    (pub,) = p.apply(
        SourceBatch(ticks=[UnderlyingTick("XYZ", 101.0, 100.99, 101.01, NOW + 50)]), NOW + 50
    )
    env = decode_envelope(pub.payload)
    assert env.underlying_delta() == {
        "symbol": "XYZ",
        "price": 101.0,
        "bid": 100.99,
        "ask": 101.01,
        "ts": NOW + 50,
    }
    assert env.stats_delta() is None
    (pub,) = p.apply(
        SourceBatch(ticks=[UnderlyingTick("XYZ", 102.0, None, None, NOW + 1_100_000)]),
        NOW + 1_100_000,
    )
    env = decode_envelope(pub.payload)
    stats_delta = env.stats_delta()
    assert stats_delta is not None
    assert stats_delta["spot"] == 102.0


def test_reset_all_starts_new_epochs() -> None:
    """After a loss every underlying gets a new epoch and seq restarts at 1."""
    p, (reset,) = started()
    (again,) = p.reset_all(NOW + 5)
    assert again.reset
    assert again.seq == 1
    assert again.epoch != reset.epoch
    sym = "XYZ251219C00100000"
    (pub,) = p.apply(SourceBatch(quotes=[quotes([sym], [3.0], [3.2], NOW + 6)]), NOW + 6)
    assert pub.epoch == again.epoch
    assert pub.prev == 1
    assert pub.seq == 2


def test_unknown_symbols_are_counted_not_fatal() -> None:
    """Events for symbols not in the listing are skipped and counted."""
    p, _ = started()
    pubs = p.apply(
        SourceBatch(quotes=[quotes(["NOPE251219C00100000"], [1.0], [1.1], NOW + 1)]), NOW + 1
    )
    assert pubs == []
    assert p.chains["XYZ"].unknown_events == 1
    assert not math.isnan(p.chains["XYZ"].spot)


def test_an_underlying_outside_only_keeps_state_unpriced_then_comes_back_whole() -> None:
    """Outside `only` a chain takes quotes but publishes nothing; back in, it is priced
    whole and published as a reset carrying those quotes."""
    p = Processor(stale_after_us=60_000_000)
    batch = SourceBatch(
        listings=[listing()], ticks=[UnderlyingTick("XYZ", 100.0, 99.99, 100.01, NOW)]
    )
    assert p.apply(batch, NOW, only=set()) == []
    sym = "XYZ251219C00100000"
    q = quotes([sym], [4.0], [4.2], NOW + 1)
    assert p.apply(SourceBatch(quotes=[q]), NOW + 2, only=set()) == []
    assert p.unpriced == {"XYZ"}
    (pub,) = p.apply(SourceBatch(), NOW + 3, only={"XYZ"})
    assert pub.reset
    rec = msgspec.json.decode(dict(pub.records)[sym], type=OptionRecord)
    assert rec.bid == 4.0
    assert rec.iv is not None
    assert p.unpriced == set()
