"""Tests of the envelope's codec: its bytes are a contract between versions."""

from __future__ import annotations

import msgspec
import pytest

from optionsfeed.model.envelope import (
    ChainInfo,
    decode_envelope,
    decode_info,
    encode_envelope,
    encode_reset,
)
from optionsfeed.model.records import encode

CALL = {
    "symbol": "SPY261218C00680000", "ts": 1764086400123456, "bid": 12.5, "ask": 12.75,
    "mark": 12.625, "iv": 0.1432, "delta": 0.5123, "gamma": float("nan"), "flags": ["crossed"],
}  # fmt: skip
PUT = {"symbol": "SPY261218P00680000", "ts": 1764086400123400, "bid": None, "iv": None,
       "flags": ["no_bid", "iv_failed"]}  # fmt: skip
UND = {"symbol": "SPY", "price": 680.12, "ts": 1764086400123000}
STATS = {"underlying": "SPY", "ts": 1764086401000000, "atm_iv": 0.1402,
         "max_pain": {"2026-12-18": 675.0}}  # fmt: skip

# What processors of every version since the envelope was introduced publish: a change
# here breaks gateways of the other version during a rolling deploy.
UPDATE_BYTES = (
    b'{"u":"SPY","epoch":"3f9c2a71","prev":48212,"seq":48213,"ts":1764086400123456,'
    b'"options":[{"symbol":"SPY261218C00680000","ts":1764086400123456,"bid":12.5,'
    b'"ask":12.75,"mark":12.625,"iv":0.1432,"delta":0.5123,"gamma":null,"flags":["crossed"]},'
    b'{"symbol":"SPY261218P00680000","ts":1764086400123400,"bid":null,"iv":null,'
    b'"flags":["no_bid","iv_failed"]}],'
    b'"underlying":{"symbol":"SPY","price":680.12,"ts":1764086400123000},"stats":null}'
)
STATS_BYTES = (
    b'{"u":"SPY","epoch":"3f9c2a71","prev":48213,"seq":48214,"ts":1764086401000000,'
    b'"options":[],"underlying":null,"stats":{"underlying":"SPY","ts":1764086401000000,'
    b'"atm_iv":0.1402,"max_pain":{"2026-12-18":675.0}}}'
)
RESET_BYTES = b'{"u":"SPY","epoch":"3f9c2a71","prev":0,"seq":1,"ts":1764086400000000,"reset":true}'


def test_update_envelope_bytes_are_pinned() -> None:
    """An update envelope encodes to exactly the agreed bytes (NaN as null, nulls written)."""
    payload = encode_envelope(
        "SPY", "3f9c2a71", 48212, 48213, 1764086400123456,
        options=[CALL, PUT], underlying=UND, stats=None,
    )  # fmt: skip
    assert payload == UPDATE_BYTES
    payload = encode_envelope(
        "SPY", "3f9c2a71", 48213, 48214, 1764086401000000,
        options=[], underlying=None, stats=STATS,
    )  # fmt: skip
    assert payload == STATS_BYTES


def test_reset_envelope_bytes_are_pinned() -> None:
    """A reset envelope carries no records, only the marker."""
    assert encode_reset("SPY", "3f9c2a71", 1764086400000000) == RESET_BYTES


def test_decode_keeps_records_raw() -> None:
    """The decoder leaves records as the raw JSON they arrived as."""
    env = decode_envelope(UPDATE_BYTES)
    assert (env.u, env.epoch, env.prev, env.seq, env.reset) == (
        "SPY",
        "3f9c2a71",
        48212,
        48213,
        False,
    )
    assert [bytes(r) for r in env.options] == [encode({**CALL, "gamma": None}), encode(PUT)]
    assert bytes(env.underlying) == encode(UND)
    assert bytes(env.stats) == b"null"


def test_decoded_records_read_as_dicts() -> None:
    """option_deltas / underlying_delta / stats_delta decode the raw records."""
    env = decode_envelope(STATS_BYTES)
    assert env.option_deltas() == []
    assert env.underlying_delta() is None
    assert env.stats_delta() == STATS
    assert decode_envelope(UPDATE_BYTES).option_deltas() == [{**CALL, "gamma": None}, PUT]


def test_decode_reset() -> None:
    """A reset decodes with no records and `reset` set."""
    env = decode_envelope(RESET_BYTES)
    assert (env.reset, env.prev, env.seq, env.options) == (True, 0, 1, [])
    assert env.underlying_delta() is None
    assert env.stats_delta() is None


def test_malformed_envelope_is_a_decode_error() -> None:
    """Bytes that are not an envelope raise msgspec.DecodeError."""
    with pytest.raises(msgspec.DecodeError):
        decode_envelope(b'{"u":"SPY"}')


def test_chain_info_round_trip() -> None:
    """A listing encodes and decodes to itself and counts its contracts."""
    info = ChainInfo({"2026-12-18": ["A", "B"], "2027-01-15": ["C"]})
    assert decode_info(encode(info)) == info
    assert info.contracts == 3
