"""Per-underlying parameters of the simulated market."""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UnderlyingSpec:
    """How one simulated underlying starts and behaves.

    `atm_vol` is the short-dated at-the-money volatility, `long_vol` the level the
    term structure tends to, `skew` the SSVI correlation (negative: puts richer),
    `penny_all` whether the class quotes in $0.01 at every price (else $0.01 under
    $3 and $0.05 above), `activity` its share of the message rate.
    """

    symbol: str
    spot: float
    rate: float
    dividend_yield: float
    atm_vol: float
    long_vol: float
    skew: float
    penny_all: bool
    activity: float


KNOWN: dict[str, UnderlyingSpec] = {
    s.symbol: s
    for s in (
        UnderlyingSpec("SPY", 680.0, 0.040, 0.012, 0.14, 0.19, -0.75, True, 0.35),
        UnderlyingSpec("QQQ", 610.0, 0.040, 0.006, 0.18, 0.22, -0.70, True, 0.20),
        UnderlyingSpec("AAPL", 275.0, 0.040, 0.004, 0.24, 0.27, -0.45, False, 0.15),
        UnderlyingSpec("TSLA", 420.0, 0.040, 0.000, 0.55, 0.52, -0.25, False, 0.15),
        UnderlyingSpec("NVDA", 180.0, 0.040, 0.0002, 0.45, 0.42, -0.35, False, 0.15),
    )
}

DEFAULT_UNDERLYINGS: tuple[str, ...] = tuple(KNOWN)


def spec_for(symbol: str) -> UnderlyingSpec:
    """The spec of `symbol`: a known one, or a plausible stock derived from its name."""
    known = KNOWN.get(symbol)
    if known is not None:
        return known
    h = zlib.crc32(symbol.encode())
    spot = 20.0 + (h % 48000) / 100.0  # $20 to $500, stable per symbol
    vol = 0.25 + (h >> 16) % 40 / 100.0
    return UnderlyingSpec(symbol, spot, 0.040, 0.01, vol, vol * 0.9, -0.4, False, 0.10)
