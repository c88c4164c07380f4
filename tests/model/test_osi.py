"""OSI symbols: the three spellings, round trips and clear errors for malformed input."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optionsfeed.errors import InvalidSymbol
from optionsfeed.model.osi import OptionSymbol, from_parts, parse_osi

SPY_CALL = OptionSymbol("SPY", date(2025, 12, 19), "C", 650_000)


@pytest.mark.parametrize(
    "text", ["SPY   251219C00650000", "SPY251219C00650000", "O:SPY251219C00650000"]
)
def test_three_spellings_parse_to_one_symbol(text: str) -> None:
    """Padded, compact and vendor forms of one series are the same symbol."""
    assert parse_osi(text) == SPY_CALL


def test_formats() -> None:
    """Formatting gives each spelling exactly."""
    assert SPY_CALL.padded() == "SPY   251219C00650000"
    assert len(SPY_CALL.padded()) == 21
    assert SPY_CALL.compact() == "SPY251219C00650000"
    assert SPY_CALL.vendor() == "O:SPY251219C00650000"
    assert str(SPY_CALL) == SPY_CALL.compact()
    assert SPY_CALL.strike == 650.0


@pytest.mark.parametrize(
    ("text", "root", "strike"),
    [
        ("SPY1  251219P00650500", "SPY1", 650.5),  # an adjusted root ending in a digit
        ("F     270115C00000500", "F", 0.5),  # a one-letter root, a 50-cent strike
        ("GOOGL1270115P01234567", "GOOGL1", 1234.567),  # six characters: no padding
        ("O:BRKB270115C00480000", "BRKB", 480.0),
    ],
)
def test_roots_and_strikes(text: str, root: str, strike: float) -> None:
    """Adjusted, one-letter and six-character roots; strikes to three decimals."""
    sym = parse_osi(text)
    assert sym.root == root
    assert sym.strike == strike


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "too short"),
        ("251219C00650000", "too short"),
        ("spy251219C00650000", "capital letter"),
        ("1SPY251219C00650000", "capital letter"),
        ("SPY-X251219C00650000", "capital letter"),
        ("TOOLONG251219C00650000", "longer than 6"),
        ("SPY  251219C00650000", "exactly 6"),
        ("S PY  251219C00650000", "spaces inside"),
        ("O:SPY   251219C00650000", "not padded"),
        ("SPY251340C00650000", "not a calendar date"),
        ("SPY25121XC00650000", "six digits"),
        ("SPY251219X00650000", "not C or P"),
        ("SPY251219C0065000A", "eight digits"),
        ("SPY251219C00000000", "zero"),
        (" SPY251219C00650000", "whitespace"),
        ("SPY251219C00650000\n", "whitespace"),
    ],
)
def test_malformed_input_is_a_clear_error(text: str, reason: str) -> None:
    """Each kind of malformed symbol raises InvalidSymbol saying what is wrong."""
    with pytest.raises(InvalidSymbol, match=reason) as info:
        parse_osi(text)
    assert info.value.symbol == text


def test_from_parts() -> None:
    """Parts build the symbol; call/put words and exact decimal strikes are accepted."""
    assert from_parts("SPY", date(2025, 12, 19), "call", 650) == SPY_CALL
    assert from_parts("SPY", date(2025, 12, 19), "C", "650.000") == SPY_CALL
    assert from_parts("SPY", date(2025, 12, 19), "p", 650.5).strike_thousandths == 650_500
    assert from_parts("X", date(2026, 1, 2), "P", Decimal("0.125")).strike_thousandths == 125


@pytest.mark.parametrize(
    ("root", "expiry", "right", "strike", "reason"),
    [
        ("SPY", date(2025, 12, 19), "C", 650.0001, "more than 3 decimals"),
        ("SPY", date(2025, 12, 19), "C", 0, "not in"),
        ("SPY", date(2025, 12, 19), "C", -5, "not in"),
        ("SPY", date(2025, 12, 19), "C", 100_000, "not in"),
        ("SPY", date(2025, 12, 19), "C", "abc", "not a number"),
        ("SPY", date(2025, 12, 19), "C", float("nan"), "not a finite"),
        ("SPY", date(2025, 12, 19), "X", 650, "not C, P"),
        ("spy", date(2025, 12, 19), "C", 650, "capital letter"),
        ("SPY", date(2125, 12, 19), "C", 650, "outside 2000-2099"),
    ],
)
def test_from_parts_rejects_bad_parts(
    root: str, expiry: date, right: str, strike: float | str, reason: str
) -> None:
    """Bad parts raise InvalidSymbol with the reason."""
    with pytest.raises(InvalidSymbol, match=reason):
        from_parts(root, expiry, right, strike)


symbols = st.builds(
    OptionSymbol,
    root=st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True),
    expiry=st.dates(date(2000, 1, 1), date(2099, 12, 31)),
    right=st.sampled_from(["C", "P"]),
    strike_thousandths=st.integers(1, 99_999_999),
)


@given(symbols)
def test_every_spelling_round_trips(sym: OptionSymbol) -> None:
    """parse(format(x)) == x for the padded, compact and vendor forms."""
    assert parse_osi(sym.padded()) == sym
    assert parse_osi(sym.compact()) == sym
    assert parse_osi(sym.vendor()) == sym
    assert len(sym.padded()) == 21


@given(symbols)
def test_from_parts_round_trips(sym: OptionSymbol) -> None:
    """from_parts(parts of x) == x, with the strike given as an exact decimal string."""
    strike = str(Decimal(sym.strike_thousandths) / 1000)
    assert from_parts(sym.root, sym.expiry, sym.right, strike) == sym
