"""Deribit instrument and channel names."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from optionsfeed.errors import InvalidSymbol
from optionsfeed.sources.deribit.symbols import (
    InstrumentName,
    expiry_instant_us,
    format_name,
    index_channel,
    instrument_of_ticker_channel,
    parse_name,
    ticker_channel,
    utc_date_of_ms,
)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("BTC-27DEC25-100000-C", InstrumentName("BTC", date(2025, 12, 27), 100000.0, "C")),
        ("ETH-3JAN26-3500-P", InstrumentName("ETH", date(2026, 1, 3), 3500.0, "P")),
        ("BTC-24JUN22-15000-P", InstrumentName("BTC", date(2022, 6, 24), 15000.0, "P")),
        ("BTC-29FEB28-60000-C", InstrumentName("BTC", date(2028, 2, 29), 60000.0, "C")),
        ("ETH-1NOV26-0d5-C", InstrumentName("ETH", date(2026, 11, 1), 0.5, "C")),
    ],
)
def test_names_parse_and_format_back(name: str, parsed: InstrumentName) -> None:
    """One- and two-digit days, every part read; formatting gives the same name."""
    assert parse_name(name) == parsed
    assert parsed.format() == name
    assert format_name(parsed.currency, parsed.expiry, parsed.strike, parsed.right) == name


@pytest.mark.parametrize(
    "name",
    [
        "BTC-PERPETUAL",  # a perpetual
        "BTC-27DEC25",  # a future
        "BTC_USDC-27DEC25-100000-C",  # a linear option
        "BTC-27DEC25-100000-X",  # no such right
        "BTC-27DEK25-100000-C",  # no such month
        "BTC-31FEB27-100000-C",  # no such date
        "BTC-03JAN26-100000-C",  # a leading zero: not how Deribit spells it
        "BTC-3JAN26-0100000-C",  # a padded strike would make a second row of one contract
        "BTC-3JAN26-0-C",  # zero strike
        "btc-3JAN26-100000-C",  # lower case
        "BTC-3jan26-100000-C",
        "BTC-3JAN26-100000-C ",
        "",
    ],
)
def test_other_names_are_refused_with_a_reason(name: str) -> None:
    with pytest.raises(InvalidSymbol) as info:
        parse_name(name)
    assert info.value.symbol == name
    assert info.value.reason


def test_the_expiry_instant_is_8_utc() -> None:
    """Deribit options expire at 08:00 UTC; the instant matches the venue's timestamp."""
    assert expiry_instant_us(date(2024, 2, 23)) == 1_708_675_200_000_000
    assert datetime.fromtimestamp(1_708_675_200, UTC) == datetime(2024, 2, 23, 8, tzinfo=UTC)
    assert utc_date_of_ms(1_708_675_200_000) == date(2024, 2, 23)
    # Just before midnight UTC is still that UTC date, whatever the local zone.
    assert utc_date_of_ms(1_708_732_799_999) == date(2024, 2, 23)


def test_channel_names() -> None:
    assert ticker_channel("BTC-27DEC25-100000-C") == "ticker.BTC-27DEC25-100000-C.100ms"
    assert index_channel("BTC") == "deribit_price_index.btc_usd"
    assert index_channel("ETH") == "deribit_price_index.eth_usd"
    assert instrument_of_ticker_channel("ticker.BTC-27DEC25-100000-C.100ms") == (
        "BTC-27DEC25-100000-C"
    )
    assert instrument_of_ticker_channel("ticker.BTC-27DEC25-100000-C.agg2") == (
        "BTC-27DEC25-100000-C"
    )
    assert instrument_of_ticker_channel("ticker.") is None
    assert instrument_of_ticker_channel("ticker.x") is None
    assert instrument_of_ticker_channel("book.BTC-27DEC25-100000-C.100ms") is None
