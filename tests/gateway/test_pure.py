"""The gateway's pure parts: frame headers, channel names, merging updates."""

from __future__ import annotations

import json
import struct

import pytest

from optionsfeed.gateway.channels import InvalidChannel, Kind, parse_channel
from optionsfeed.gateway.conflate import MergedUpdates
from optionsfeed.gateway.frames import text_frame


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frames_have_the_rfc6455_length_encoding(n: int) -> None:
    payload = b"x" * n
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN + text, no RSV bits
    assert frame[1] & 0x80 == 0  # server frames are not masked
    if n < 126:
        assert frame[1] == n
        header = 2
    elif n < 65536:
        assert frame[1] == 126
        assert struct.unpack("!H", frame[2:4])[0] == n
        header = 4
    else:
        assert frame[1] == 127
        assert struct.unpack("!Q", frame[2:10])[0] == n
        header = 10
    assert frame[header:] == payload


@pytest.mark.parametrize(
    ("name", "kind", "underlying", "expiry", "symbol"),
    [
        ("chain.SPY", Kind.CHAIN, "SPY", None, None),
        ("chain.SPY.20261218", Kind.CHAIN, "SPY", "2026-12-18", None),
        ("chain.BRK.B", Kind.CHAIN, "BRK.B", None, None),
        ("chain.BRK.B.20261218", Kind.CHAIN, "BRK.B", "2026-12-18", None),
        ("chain.^SPX", Kind.CHAIN, "^SPX", None, None),
        ("option.SPY261218C00650000", Kind.OPTION, "SPY", None, "SPY261218C00650000"),
        ("option.BTC-26DEC25-100000-C", Kind.OPTION, "BTC", None, "BTC-26DEC25-100000-C"),
        ("underlying.QQQ", Kind.UNDERLYING, "QQQ", None, None),
        ("stats.NVDA", Kind.STATS, "NVDA", None, None),
    ],
)
def test_valid_channels_parse(
    name: str, kind: Kind, underlying: str, expiry: str | None, symbol: str | None
) -> None:
    ch = parse_channel(name)
    assert (ch.kind, ch.underlying, ch.expiry, ch.symbol) == (kind, underlying, expiry, symbol)


@pytest.mark.parametrize(
    "name",
    [
        "CHAIN.SPY", "chain.spy", "chain.", "chain", "chain.SPY.20261399", "chain.SPY.20260230",
        "option.SPY   261218C00650000", "option.O:SPY261218C00650000", "option.spy261218c00650000",
        "stats.", "weather.SPY", "underlying.TOOLONGSYMBOL1", "chain.SP Y", "",
    ],
)  # fmt: skip
def test_invalid_channels_are_refused_with_a_reason(name: str) -> None:
    with pytest.raises(InvalidChannel) as info:
        parse_channel(name)
    assert str(info.value)


def _recs(*rows: dict[str, object]) -> list[bytes]:
    return [json.dumps(r).encode() for r in rows]


def test_pending_updates_merge_per_record_and_field_latest_wins() -> None:
    p = MergedUpdates(prev=10)
    assert not p
    p.add(
        11,
        _recs(
            {"symbol": "A", "ts": 1, "bid": 1.0, "ask": 1.2}, {"symbol": "B", "ts": 1, "bid": 5.0}
        ),
    )
    p.add(14, _recs({"symbol": "A", "ts": 2, "bid": 1.1, "iv": None}))
    p.add(15, _recs({"underlying": "SPY", "ts": 3, "atm_iv": 0.2}))
    assert p
    msg = json.loads(p.message("chain.SPY", "e1"))
    assert msg["type"] == "update"
    assert (msg["epoch"], msg["prev"], msg["seq"]) == ("e1", 10, 15)
    assert msg["data"] == [
        {"symbol": "A", "ts": 2, "bid": 1.1, "ask": 1.2, "iv": None},
        {"symbol": "B", "ts": 1, "bid": 5.0},
        {"underlying": "SPY", "ts": 3, "atm_iv": 0.2},
    ]


def test_flush_pacing_batches_only_while_the_loop_runs_late() -> None:
    from optionsfeed.gateway.hub import BATCH_FLUSH_S, Hub

    hub = Hub(broker=None)  # type: ignore[arg-type]
    assert hub.flush_delay_s == 0.0
    hub.pace(0.0005)
    assert hub.flush_delay_s == 0.0
    hub.pace(0.02)  # the loop ran 20 ms late: batch
    assert hub.flush_delay_s == BATCH_FLUSH_S
    hub.pace(0.003)  # between the marks: keep batching (hysteresis)
    assert hub.flush_delay_s == BATCH_FLUSH_S
    hub.pace(0.0002)
    assert hub.flush_delay_s == 0.0
