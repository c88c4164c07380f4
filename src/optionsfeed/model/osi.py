"""OSI option symbols (the OCC's Options Symbology Initiative), parsed and formatted.

Three spellings of one symbol:

- padded, 21 characters: the root left-justified in 6, then YYMMDD, C or P, and
  the strike x 1000 in 8 digits: ``SPY   251219C00650000``;
- compact, the padding dropped: ``SPY251219C00650000``;
- vendor, the compact form prefixed ``O:`` as Massive (Polygon) spells it.

Roots are 1-6 characters: a letter, then letters or digits (``SPY1`` is an adjusted
root after a corporate action). Parsing reads from the right, where the layout
is fixed, so a root that ends in a digit is not confused with the date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Literal

from ..errors import InvalidSymbol

Right = Literal["C", "P"]

VENDOR_PREFIX = "O:"
ROOT_WIDTH = 6
_TAIL = 15  # YYMMDD + C/P + 8 strike digits
_ROOT_RE = re.compile(r"[A-Z][A-Z0-9]{0,5}")
_MAX_THOUSANDTHS = 99_999_999
_RIGHTS: dict[str, Right] = {"C": "C", "P": "P", "CALL": "C", "PUT": "P"}


@dataclass(frozen=True, slots=True)
class OptionSymbol:
    """One option series: root, expiry date, right and strike in thousandths of a dollar."""

    root: str
    expiry: date
    right: Right
    strike_thousandths: int

    @property
    def strike(self) -> float:
        """The strike in dollars."""
        return self.strike_thousandths / 1000

    def _tail(self) -> str:
        return f"{self.expiry:%y%m%d}{self.right}{self.strike_thousandths:08d}"

    def padded(self) -> str:
        """The 21-character OSI form, e.g. ``SPY   251219C00650000``."""
        return f"{self.root:<{ROOT_WIDTH}}{self._tail()}"

    def compact(self) -> str:
        """The unpadded form, e.g. ``SPY251219C00650000``."""
        return f"{self.root}{self._tail()}"

    def vendor(self) -> str:
        """The ``O:``-prefixed compact form, e.g. ``O:SPY251219C00650000``."""
        return f"{VENDOR_PREFIX}{self.compact()}"

    def __str__(self) -> str:
        return self.compact()


def _check_root(text: str, root: str) -> None:
    if not root:
        raise InvalidSymbol(text, "the root is empty")
    if len(root) > ROOT_WIDTH:
        raise InvalidSymbol(text, f"the root {root!r} is longer than {ROOT_WIDTH} characters")
    if not _ROOT_RE.fullmatch(root):
        raise InvalidSymbol(
            text, f"the root {root!r} must be a capital letter then capital letters or digits"
        )


def _check_expiry(text: str, expiry: date) -> None:
    if not 2000 <= expiry.year <= 2099:
        raise InvalidSymbol(text, f"the expiry year {expiry.year} is outside 2000-2099")


def parse_osi(text: str) -> OptionSymbol:
    """Parse the padded, compact or ``O:``-prefixed form.

    Raises InvalidSymbol, whose `reason` says what is wrong, for anything else
    (surrounding whitespace included).
    """
    if text != text.strip():
        raise InvalidSymbol(text, "leading or trailing whitespace")
    body = text.removeprefix(VENDOR_PREFIX)
    if len(body) < _TAIL + 1:
        raise InvalidSymbol(
            text, f"too short: a root and {_TAIL} characters of date, right and strike are needed"
        )
    head, tail = body[:-_TAIL], body[-_TAIL:]
    yymmdd, right, strike = tail[:6], tail[6], tail[7:]
    if " " in head:
        if body is not text:
            raise InvalidSymbol(text, "the O: form is not padded")
        if len(head) != ROOT_WIDTH:
            raise InvalidSymbol(text, f"a padded root must be exactly {ROOT_WIDTH} characters")
        root = head.rstrip(" ")
        if " " in root:
            raise InvalidSymbol(text, "spaces inside the root")
    else:
        root = head
    _check_root(text, root)
    if not (yymmdd.isascii() and yymmdd.isdigit()):
        raise InvalidSymbol(text, f"the date {yymmdd!r} is not six digits YYMMDD")
    try:
        expiry = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
    except ValueError as exc:
        raise InvalidSymbol(text, f"the date {yymmdd!r} is not a calendar date") from exc
    if right not in ("C", "P"):
        raise InvalidSymbol(text, f"the right {right!r} is not C or P")
    if not (strike.isascii() and strike.isdigit()):
        raise InvalidSymbol(text, f"the strike {strike!r} is not eight digits")
    thousandths = int(strike)
    if thousandths == 0:
        raise InvalidSymbol(text, "the strike is zero")
    return OptionSymbol(root, expiry, _RIGHTS[right], thousandths)


def from_parts(root: str, expiry: date, right: str, strike: float | str | Decimal) -> OptionSymbol:
    """Build a symbol from its parts, checking each.

    `right` is C/P or call/put (any case). `strike` is in dollars with at most
    three decimals, above 0 and below 100,000; a float is read by its shortest
    repr, so ``650.5`` is exactly 650.500.
    """
    text = f"{root} {expiry} {right} {strike}"
    _check_root(text, root)
    _check_expiry(text, expiry)
    r = _RIGHTS.get(right.upper())
    if r is None:
        raise InvalidSymbol(text, f"the right {right!r} is not C, P, call or put")
    try:
        value = Decimal(str(strike))
    except InvalidOperation as exc:
        raise InvalidSymbol(text, f"the strike {strike!r} is not a number") from exc
    if not value.is_finite():
        raise InvalidSymbol(text, f"the strike {strike!r} is not a finite number")
    thousandths = value * 1000
    if thousandths != thousandths.to_integral_value():
        raise InvalidSymbol(text, f"the strike {strike!r} has more than 3 decimals")
    if not 0 < thousandths <= _MAX_THOUSANDTHS:
        raise InvalidSymbol(text, f"the strike {strike!r} is not in (0, 100000)")
    return OptionSymbol(root, expiry, r, int(thousandths))
