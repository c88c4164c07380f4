"""Implied forwards per expiry: put-call parity near the money, robust to a bad quote,
American prices de-Americanized, a fallback to the carry, and `forward` on records."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from optionsfeed.model.contract import Contract
from optionsfeed.pricing import bsm_price
from optionsfeed.pricing.american import american_price
from optionsfeed.processing.chain import US_PER_YEAR
from optionsfeed.processing.forwards import implied_forwards, pair_contracts
from optionsfeed.processing.processor import Processor
from optionsfeed.sources.base import Listing, Quotes, SourceBatch, UnderlyingTick

from .test_venue_columns import NOW, records

SPOT, RATE, YIELD = 680.0, 0.04, 0.012
DAYS = (2, 7, 30, 91, 182, 365)
STRIKES = np.arange(560.0, 805.0, 5.0)


def _chain(american: bool, seed: int = 7) -> tuple[list[Contract], np.ndarray, np.ndarray]:
    """Contracts, bids and asks of a chain with known carry: model prices on a smile,
    a random spread, tick rounding (so each mid is off by up to half a cent plus the
    spread's asymmetry), and one absurd strike at the money (quoted at 3 times)."""
    rng = np.random.default_rng(seed)
    contracts: list[Contract] = []
    for d in DAYS:
        exp_us = NOW + int(d * 86_400e6)
        expiry = date(2026, 5, 28) + timedelta(days=d)
        for k in STRIKES.tolist():
            for right in ("C", "P"):
                contracts.append(Contract(f"X{d}{right}{k:.0f}", "SPY", "SPY", expiry, exp_us, k,
                                          right, exercise="american" if american else "european"))  # fmt: skip
    k = np.array([c.strike for c in contracts])
    t = np.array([(c.expiry_us - NOW) / US_PER_YEAR for c in contracts])
    call = np.array([c.right == "C" for c in contracts])
    m = np.log(k / SPOT)
    vol = 0.16 - 0.25 * m + 0.8 * m * m
    model = american_price if american else bsm_price
    theo = model(call, SPOT, k, t, RATE, YIELD, vol)
    spread = (0.01 + 0.003 * theo) * rng.uniform(0.8, 1.6, len(theo))
    bid = np.floor((theo - spread / 2) * 100) / 100
    ask = np.ceil((theo + spread / 2) * 100) / 100
    bid = np.where(bid < 0.01, 0.0, bid)
    absurd = (k == 680.0) & call & (np.abs(t * 365 - 30) < 0.5)
    bid[absurd] *= 3
    ask[absurd] *= 3
    return contracts, bid, ask


def _true_forward(days: np.ndarray) -> np.ndarray:
    out: np.ndarray = SPOT * np.exp((RATE - YIELD) * days / 365.0)
    return out


@pytest.mark.parametrize("american", [False, True])
def test_implied_forward_is_within_a_basis_point_with_one_absurd_strike(american: bool) -> None:
    """Noisy, tick-rounded quotes and one strike quoted at 3 times its value: every
    expiry's implied forward is within 1 bp of S e^{(r-q)T}, American prices included
    (their early-exercise premium taken out by the American model)."""
    contracts, bid, ask = _chain(american)
    pairs = pair_contracts(
        np.array([c.strike for c in contracts]),
        np.array([c.right == "C" for c in contracts]),
        np.array([c.expiry_us for c in contracts], dtype=np.int64),
        np.array([c.exercise == "american" for c in contracts]),
    )
    t = (pairs.expiry_us - NOW) / US_PER_YEAR
    every = np.arange(len(t))
    # A guess 0.5 % off: it only picks which strikes are nearest the money.
    guess = SPOT * np.exp(RATE * t) * 1.005
    fwd = implied_forwards(pairs, every, bid, ask, rate=RATE, carry=YIELD, t_years=t, guess=guess)
    err_bp = (fwd / _true_forward(t * 365.0) - 1.0) * 1e4
    assert np.all(np.abs(err_bp) < 1.0), err_bp


def test_a_mean_of_the_same_strikes_would_not_be_within_a_basis_point() -> None:
    """The check above can fail: the absurd strike moves a plain mean of the parity
    forwards by far more than 1 bp (so the median is what keeps it out)."""
    contracts, bid, ask = _chain(False)
    k = np.array([c.strike for c in contracts])
    call = np.array([c.right == "C" for c in contracts])
    d30 = np.array([abs(c.expiry_us - NOW - 30 * 86_400e6) < 1e6 for c in contracts])
    near = d30 & (np.abs(k - 680.0) <= 15.0)
    mid = (bid + ask) / 2
    t = 30 / 365.0
    f_k = k[near & call] + np.exp(RATE * t) * (mid[near & call] - mid[near & ~call])
    assert abs(f_k.mean() / _true_forward(np.array([30.0]))[0] - 1.0) > 1e-4


def _processor_chain(one_sided: bool) -> tuple[Processor, list[Contract], SourceBatch]:
    contracts, bid, ask = _chain(False)
    if one_sided:
        puts = np.array([c.right == "P" for c in contracts])
        bid[puts] = 0.0  # no two-sided put anywhere: parity has nothing to work with
    listing = Listing("SPY", contracts, RATE, YIELD)
    proc = Processor()
    proc.apply(SourceBatch(listings=[listing]), NOW)
    n = len(contracts)
    q = Quotes("SPY", [c.symbol for c in contracts], bid, ask, np.ones(n), np.ones(n),
               np.full(n, NOW, dtype=np.int64))  # fmt: skip
    tick = UnderlyingTick("SPY", SPOT, SPOT - 0.01, SPOT + 0.01, NOW)
    return proc, contracts, SourceBatch(ticks=[tick], quotes=[q])


def test_records_carry_the_implied_forward_they_were_priced_on() -> None:
    """Every priced record says `forward` (within 1 bp of the true one) and
    `forward_source` "implied"; its IV is the one Black-76 gives on that forward."""
    proc, contracts, batch = _processor_chain(one_sided=False)
    recs = records(proc.apply(batch, NOW + 1))
    days = {c.symbol: (c.expiry_us - NOW - 1) / 86_400e6 for c in contracts}
    priced = [r for r in recs.values() if r.iv is not None]
    assert len(priced) > len(contracts) // 2
    for r in priced:
        assert r.forward_source == "implied"
        assert isinstance(r.forward, float)
        true = _true_forward(np.array([days[r.symbol]]))[0]
        assert abs(r.forward / true - 1.0) < 1e-4, (r.symbol, r.forward, true)
    # The IV solves Black-76 on the record's forward (to the forward's 4 decimals).
    atm = next(
        r for r in priced if r.strike == 680.0 and r.right == "P" and r.expiry == "2026-06-27"
    )
    assert isinstance(atm.forward, float)
    assert atm.mark is not None
    assert atm.iv is not None
    t = days[atm.symbol] / 365.0
    again = bsm_price(False, atm.forward, 680.0, t, RATE, RATE, atm.iv)
    assert float(again) == pytest.approx(atm.mark, abs=2e-3)


def test_one_sided_quotes_fall_back_to_the_carry() -> None:
    """With no two-sided puts there is no parity: rows are priced on the configured
    carry, S e^{(r-q)T}, and say so (`forward_source` "carry")."""
    proc, contracts, batch = _processor_chain(one_sided=True)
    recs = records(proc.apply(batch, NOW + 1))
    days = {c.symbol: (c.expiry_us - NOW - 1) / 86_400e6 for c in contracts}
    priced = [r for r in recs.values() if r.iv is not None]
    assert priced
    for r in priced:
        assert r.forward_source == "carry"
        assert r.forward == pytest.approx(_true_forward(np.array([days[r.symbol]]))[0], abs=1e-4)
