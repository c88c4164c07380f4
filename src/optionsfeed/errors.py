"""The exception hierarchy: one base, grouped by what the caller can do about it."""

from __future__ import annotations

from collections.abc import Sequence


class OptionsFeedError(Exception):
    """Base of every error optionsfeed raises on purpose."""


class InvalidInput(OptionsFeedError, ValueError):
    """Input (a symbol, a channel, a setting) is malformed; fix the input and retry."""


class InvalidSymbol(InvalidInput):
    """An option or underlying symbol does not parse.

    `symbol` holds the offending text and `reason` says what is wrong with it.
    """

    def __init__(self, symbol: str, reason: str) -> None:
        super().__init__(f"invalid symbol {symbol!r}: {reason}")
        self.symbol = symbol
        self.reason = reason


class ConfigError(InvalidInput):
    """A setting (flag or OPTIONSFEED_* variable) is unknown or has a bad value."""


class BrokerUnavailable(OptionsFeedError):
    """The broker cannot be reached right now; the operation may succeed later."""


class SequenceConflict(OptionsFeedError):
    """The broker's cache is not at the sequence a publication continues from.

    The cache lost state (a restarted Redis) or another writer touched it; the
    processor answers by starting a new epoch with a full reset.
    """

    def __init__(self, underlying: str, detail: str) -> None:
        super().__init__(f"{underlying}: {detail}")
        self.underlying = underlying
        self.detail = detail


class Fenced(OptionsFeedError):
    """A publication was refused because the publisher does not hold the lease of its
    underlying (another processor took it over, or it lapsed).

    The caller stops publishing those underlyings and must not answer with a new
    epoch: the lease holder is the one writer. `underlyings` names every refused one
    (the others of the same call were applied); `underlying` is the first of them.
    """

    def __init__(self, underlyings: Sequence[str], detail: str) -> None:
        super().__init__(f"{', '.join(underlyings)}: {detail}")
        self.underlyings = tuple(underlyings)
        self.underlying = self.underlyings[0]
        self.detail = detail


class SourceError(OptionsFeedError):
    """A market-data source cannot go on and retrying will not help (e.g. the venue
    rejected the credentials); the message says what to fix."""
