"""Channel names (docs/protocol.md "Channels"): parsing and validation, no I/O.

`chain.{U}`, `chain.{U}.{YYYYMMDD}`, `option.{SYMBOL}`, `underlying.{U}` and
`stats.{U}`. Names are case-sensitive ASCII; anything else is `invalid_channel`.
Non-ASCII digits (fullwidth, Arabic-Indic, ...) are refused before any pattern or `int()` sees them:
both would otherwise take them for digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from ..model.osi import parse_osi

UNDERLYING_RE = re.compile(r"[A-Z0-9.^/-]{1,12}")
VENUE_SYMBOL_RE = re.compile(r"[A-Z0-9._-]{1,40}")
_EXPIRY_RE = re.compile(r"[0-9]{8}")
_SHOWN_CHARS = 60  # of a refused name, in the error message (the ack echoes it whole)


class Kind(StrEnum):
    CHAIN = "chain"
    OPTION = "option"
    UNDERLYING = "underlying"
    STATS = "stats"


class InvalidChannel(ValueError):
    """The name is not a channel of the protocol; the message says why."""


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name.

    `expiry` (YYYY-MM-DD) only for one expiry of a chain; `symbol` only for
    `option.` channels, whose `underlying` is the OSI root or, for venue names
    such as `BTC-26DEC25-100000-C`, the part before the first dash.
    """

    name: str
    kind: Kind
    underlying: str
    expiry: str | None = None
    symbol: str | None = None


def _underlying(text: str, name: str) -> str:
    if not UNDERLYING_RE.fullmatch(text):
        raise InvalidChannel(
            f"{shown(name)}: {shown(text)} is not an underlying symbol ([A-Z0-9.^/-]{{1,12}})"
        )
    return text


def _chain(rest: str, name: str) -> Channel:
    head, dot, last = rest.rpartition(".")
    if dot and _EXPIRY_RE.fullmatch(last):
        try:
            expiry = date(int(last[:4]), int(last[4:6]), int(last[6:]))
        except ValueError:
            raise InvalidChannel(f"{shown(name)}: {last} is not a calendar date") from None
        return Channel(name, Kind.CHAIN, _underlying(head, name), expiry=expiry.isoformat())
    return Channel(name, Kind.CHAIN, _underlying(rest, name))


def _option(rest: str, name: str) -> Channel:
    if "-" in rest:  # a venue's instrument name (no OSI symbology)
        if not VENUE_SYMBOL_RE.fullmatch(rest):
            raise InvalidChannel(f"{shown(name)}: not an instrument name ([A-Z0-9._-]{{1,40}})")
        return Channel(name, Kind.OPTION, _underlying(rest.split("-", 1)[0], name), symbol=rest)
    try:
        osi = parse_osi(rest)
    except ValueError as exc:
        raise InvalidChannel(f"{shown(name)}: {exc}") from None
    if osi.compact() != rest:
        raise InvalidChannel(f"{shown(name)}: use the compact OSI form {osi.compact()!r}")
    return Channel(name, Kind.OPTION, osi.root, symbol=rest)


def shown(text: str) -> str:
    """`text` for an error message: quoted, and cut short when long."""
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


def parse_channel(name: str) -> Channel:
    """Parse `name`; raises InvalidChannel with a message for the client."""
    if not name.isascii():
        raise InvalidChannel(f"{shown(name)}: channel names are ASCII")
    kind, dot, rest = name.partition(".")
    if not dot or not rest:
        raise InvalidChannel(f"{shown(name)} is not a channel (e.g. chain.SPY, stats.SPY)")
    if kind == Kind.CHAIN:
        return _chain(rest, name)
    if kind == Kind.OPTION:
        return _option(rest, name)
    if kind in (Kind.UNDERLYING, Kind.STATS):
        return Channel(name, Kind(kind), _underlying(rest, name))
    raise InvalidChannel(
        f"{shown(name)}: unknown channel type {shown(kind)} (chain, option, underlying, stats)"
    )
