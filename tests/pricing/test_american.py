"""American prices, IV and greeks against QuantLib (the test oracle), plus the bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import QuantLib as ql

from optionsfeed.pricing import bsm_price
from optionsfeed.pricing.american import (
    Warm,
    american_greeks,
    american_implied_vol,
    american_iv_and_greeks,
    american_iv_greeks_warm,
    american_price,
)
from optionsfeed.pricing.boundary_table import TABLES

SPOT = 100.0
# Deep ITM and OTM both ways, 1 day to 3 years, vols 5%-150%, r 0-8%, with and without q.
MONEYNESS = [0.6, 0.8, 0.95, 1.0, 1.05, 1.25, 1.6]
DAYS = [1, 7, 30, 91, 365, 1095]
VOLS = [0.05, 0.25, 0.6, 1.5]
RATES = [0.0, 0.04, 0.08]
DIVS = [0.0, 0.03]
GRID = list(itertools.product([True, False], MONEYNESS, DAYS, VOLS, RATES, DIVS))
# Where the American vega is below this (per unit of volatility: 0.1 = 0.001 per vol
# point) the price hardly depends on volatility and no IV is meaningful to 1e-4.
MIN_VEGA = 0.1
# Within this of its intrinsic value a deep put's price does not determine a
# volatility: below the volatility at which the exercise boundary reaches the spot
# the model's price wobbles around the intrinsic value by up to about 1e-5, so a
# range of volatilities reproduces such a price (each search finds one of them).
IDENTIFIABLE = 1e-4


def _identifiable(price: np.ndarray, c: np.ndarray, k: np.ndarray, s: float = SPOT) -> np.ndarray:
    """Where a price lies far enough above its intrinsic value to determine an IV."""
    out: np.ndarray = price - np.maximum(np.where(c, s - k, k - s), 0.0) > IDENTIFIABLE
    return out


def _oracle(
    is_call: bool, s: float, k: float, days: int, r: float, q: float, vol: float,
    engine: str = "qdfp",
) -> tuple[float, float, float]:  # fmt: skip
    """QuantLib's American price (delta and gamma from the FD engine)."""
    today = ql.Date(2, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()

    def curve(rate: float) -> object:
        return ql.YieldTermStructureHandle(ql.FlatForward(today, rate, dc, ql.Continuous))

    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), vol, dc))
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(s)), curve(q), curve(r), vts
    )
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, k)
    option = ql.VanillaOption(payoff, ql.AmericanExercise(today, today + days))
    if engine == "qdfp":
        scheme = ql.QdFpAmericanEngine.highPrecisionScheme()
        option.setPricingEngine(ql.QdFpAmericanEngine(process, scheme))
        return option.NPV(), float("nan"), float("nan")
    option.setPricingEngine(ql.FdBlackScholesVanillaEngine(process, 1000, 1000))
    return option.NPV(), option.delta(), option.gamma()


@pytest.fixture(scope="module")
def grid() -> dict[str, np.ndarray]:
    cols = {
        "call": np.array([g[0] for g in GRID]),
        "k": np.array([SPOT * g[1] for g in GRID]),
        "t": np.array([g[2] / 365.0 for g in GRID]),
        "vol": np.array([g[3] for g in GRID]),
        "r": np.array([g[4] for g in GRID]),
        "q": np.array([g[5] for g in GRID]),
    }
    cols["ref"] = np.array([_oracle(g[0], SPOT, SPOT * g[1], g[2], g[4], g[5], g[3])[0]
                            for g in GRID])  # fmt: skip
    return cols


def test_price_matches_quantlib(grid: dict[str, np.ndarray]) -> None:
    """Against QdFpAmericanEngine (high precision): within 1e-4 of vol x vega where vega
    matters, and within 1e-5 of the strike everywhere."""
    c, k, t, vol, r, q = (grid[n] for n in ("call", "k", "t", "vol", "r", "q"))
    ours = american_price(c, SPOT, k, t, r, q, vol)
    vega = american_greeks(c, SPOT, k, t, r, q, vol).vega * 100.0
    err = np.abs(ours - grid["ref"])
    matters = vega >= MIN_VEGA
    assert (err[matters] <= 1e-4 * vega[matters]).all(), np.max(err[matters] / vega[matters])
    assert (err <= 1e-5 * k).all(), np.max(err / k)


def test_iv_of_quantlib_prices_recovers_the_vol(grid: dict[str, np.ndarray]) -> None:
    """The IV of the oracle's price is the vol it priced at, within 1e-4, wherever vega matters."""
    c, k, t, vol, r, q = (grid[n] for n in ("call", "k", "t", "vol", "r", "q"))
    vega = american_greeks(c, SPOT, k, t, r, q, vol).vega * 100.0
    iv = american_implied_vol(grid["ref"], c, SPOT, k, t, r, q)
    checked = vega >= MIN_VEGA
    err = np.abs(iv - vol)[checked]
    assert np.isfinite(err).all()
    assert err.max() <= 1e-4, (err.max(), np.median(err))
    assert checked.sum() > 0.6 * len(GRID)


def test_american_at_least_european(grid: dict[str, np.ndarray]) -> None:
    """American >= European everywhere on the grid, and >= intrinsic."""
    c, k, t, vol, r, q = (grid[n] for n in ("call", "k", "t", "vol", "r", "q"))
    am = american_price(c, SPOT, k, t, r, q, vol)
    eu = bsm_price(c, SPOT, k, t, r, q, vol)
    assert (am >= eu - 1e-12).all()
    assert (am >= np.maximum(np.where(c, SPOT - k, k - SPOT), 0.0)).all()


def test_call_without_dividends_is_european(grid: dict[str, np.ndarray]) -> None:
    """Without a dividend a call is never exercised early: American == European, IV and greeks too."""
    sel = grid["call"] & (grid["q"] == 0.0)
    k, t, vol, r = (grid[n][sel] for n in ("k", "t", "vol", "r"))
    am = american_price(True, SPOT, k, t, r, 0.0, vol)
    np.testing.assert_allclose(am, bsm_price(True, SPOT, k, t, r, 0.0, vol), rtol=1e-13, atol=0)


def test_issue_example_put_delta() -> None:
    """1-year K=130 put at 25%, r 4%: delta about -0.91 (European: -0.70), as the FD engine says."""
    price, delta, gamma = _oracle(False, 100.0, 130.0, 365, 0.04, 0.0, 0.25, engine="fd")
    iv, g = american_iv_and_greeks(price, False, 100.0, 130.0, 1.0, 0.04, 0.0)
    assert abs(iv - 0.25) < 1e-4
    assert abs(g.delta - delta) < 2e-3
    assert abs(g.gamma - gamma) < 2e-3
    assert g.delta < -0.85


def test_greeks_match_quantlib_fd() -> None:
    """Delta and gamma agree with QuantLib's FD engine; theta per day, vega and rho per point are sane."""
    cases = [(False, 90.0, 180, 0.3, 0.05, 0.01), (True, 80.0, 365, 0.4, 0.03, 0.05),
             (False, 110.0, 30, 0.2, 0.04, 0.0)]  # fmt: skip
    for is_call, k, days, vol, r, q in cases:
        _, delta, gamma = _oracle(is_call, SPOT, k, days, r, q, vol, engine="fd")
        g = american_greeks(is_call, SPOT, k, days / 365.0, r, q, vol)
        assert abs(g.delta - delta) < 2e-3, (is_call, k, g.delta, delta)
        assert abs(g.gamma - gamma) < 2e-3, (is_call, k, g.gamma, gamma)
        assert g.theta < 0
        assert g.vega > 0
        # Rho against a bump of the oracle's rate.
        up = _oracle(is_call, SPOT, k, days, r + 1e-3, q, vol)[0]
        down = _oracle(is_call, SPOT, k, days, r - 1e-3, q, vol)[0]
        assert abs(g.rho - (up - down) / 0.2) < 1e-3


def test_iv_failures_and_range() -> None:
    """At or below intrinsic, at or above the upper bound, at expiry: NaN."""
    iv = american_implied_vol(
        [30.0, 29.0, 130.0, 5.0, 5.0], [False, False, False, True, True], 100.0,
        [130.0, 130.0, 130.0, 100.0, 100.0], [1.0, 1.0, 1.0, 0.0, 0.5], 0.04, 0.01,
    )  # fmt: skip
    assert np.isnan(iv[:4]).all()
    assert 0.1 < iv[4] < 0.5


def test_degenerate_inputs() -> None:
    """t <= 0 or vol <= 0 prices intrinsic; greeks are NaN there; shapes broadcast."""
    p = american_price([True, False], 100.0, [90.0, 120.0], 0.0, 0.04, 0.01, 0.2)
    np.testing.assert_array_equal(p, [10.0, 20.0])
    g = american_greeks(False, 100.0, 120.0, [0.0, 1.0], 0.04, 0.0, 0.2)
    assert np.isnan(g.delta[0])
    assert np.isfinite(g.delta[1])
    assert american_price(False, 100.0, np.full((2, 3), 100.0), 1.0, 0.04, 0.0, 0.2).shape == (
        2,
        3,
    )


def test_iv_round_trip_and_greeks_against_differences() -> None:
    """On random contracts (several rates and yields): the IV of our own price is the
    volatility, and the greeks agree with differences of the price."""
    rng = np.random.default_rng(3)
    n = 300
    c = rng.random(n) < 0.5
    k = rng.uniform(60, 160, n)
    t = rng.uniform(5 / 365, 2, n)
    vol = rng.uniform(0.1, 0.8, n)
    r = rng.choice([0.02, 0.05], n)
    q = rng.choice([0.0, 0.01, 0.03], n)
    price = american_price(c, SPOT, k, t, r, q, vol)
    iv, g = american_iv_and_greeks(price, c, SPOT, k, t, r, q)
    vega = g.vega * 100.0
    checked = (vega >= MIN_VEGA) & _identifiable(price, c, k)
    assert checked.mean() > 0.8
    assert np.max(np.abs(iv - vol)[checked]) < 1e-8
    # Elsewhere the IV found is one that reproduces the price: to 1e-7 of the put
    # form's strike where the price is within 1e-6 of it of the intrinsic value (a
    # range of volatilities does so there), to the search's last step times the
    # vega elsewhere.
    found = np.isfinite(iv)
    repriced = american_price(c, SPOT, k, t, r, q, np.where(found, iv, 0.2))
    put_k = np.where(c, SPOT, k)
    assert (np.abs(repriced - price)[found] <= np.maximum(1.5e-7 * put_k, 1e-6)[found]).all()

    def p(s: float = SPOT, v: np.ndarray = vol, rate: np.ndarray = r) -> np.ndarray:
        return american_price(c, s, k, t, rate, q, v)

    g = american_greeks(c, SPOT, k, t, r, q, vol)
    h = 0.01
    np.testing.assert_allclose(g.delta, (p(SPOT + h) - p(SPOT - h)) / (2 * h), atol=5e-5)
    np.testing.assert_allclose(g.gamma, (p(SPOT + h) - 2 * p() + p(SPOT - h)) / h**2, atol=3e-4)
    np.testing.assert_allclose(g.vega, (p(v=vol + 1e-4) - p(v=vol - 1e-4)) / 2e-2, atol=1e-4)
    np.testing.assert_allclose(g.rho, (p(rate=r + 1e-4) - p(rate=r - 1e-4)) / 2e-2, atol=1e-4)


def test_negligible_premium_prices_european() -> None:
    """Where the premium's bound is below 1e-7 of vol times vega (out-of-the-money
    calls on a small yield, here), the price is the European one."""
    rng = np.random.default_rng(0)
    k, t, vol = rng.uniform(100, 160, 500), rng.uniform(1 / 365, 0.5, 500), rng.uniform(0.1, 1, 500)
    am = american_price(True, SPOT, k, t, 0.04, 0.01, vol)
    eu = bsm_price(True, SPOT, k, t, 0.04, 0.01, vol)
    same = am == eu
    assert same.mean() > 0.2
    vega = american_greeks(True, SPOT, k, t, 0.04, 0.01, vol).vega * 100.0
    assert (np.abs(am - eu) <= 1e-4 * vega).all()


def test_volatility_outside_the_tables_is_nan() -> None:
    """Where early exercise matters, a volatility outside [1e-4, 100] prices NaN."""
    assert np.isnan(american_price(False, 100.0, 120.0, 1.0, 0.04, 0.0, 200.0))
    assert np.isfinite(american_price(False, 100.0, 120.0, 1.0, 0.04, 0.0, 50.0))


def _count_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of contracts of every premium pass of the IV search."""
    from optionsfeed.pricing import american

    sizes: list[int] = []
    premium = american._premium

    def counted(ct: american._Contracts, sig: np.ndarray, greeks: bool = True) -> american._Premium:
        sizes.append(len(sig))
        return premium(ct, sig, greeks)

    monkeypatch.setattr(american, "_premium", counted)
    return sizes


def test_price_below_the_european_floor_takes_no_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call marked below its discounted forward's intrinsic value (5 hours out, r > q)
    has no IV, and the search does not walk down to IV_MIN to find that out."""
    sizes = _count_passes(monkeypatch)
    iv, g = american_iv_and_greeks(75.005, True, 680.0, 605.0, 0.00057, 0.04, 0.012)
    assert np.isnan(iv)
    assert np.isnan(g.delta)
    assert sizes == []


def test_search_from_the_european_iv_takes_few_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's 10,000 contracts: at most 17,600 contract-passes of the premium
    in all and no contract past its 14th (the plain Newton search took 20,486 and 20;
    before the kink's step, 17,933 and 18)."""
    rng = np.random.default_rng(0)
    n = 10_000
    strike, t = rng.uniform(60, 160, n), rng.uniform(1 / 365, 2.0, n)
    vol, is_call = rng.uniform(0.1, 1.0, n), rng.random(n) < 0.5
    price = american_price(is_call, SPOT, strike, t, 0.04, 0.01, vol)
    sizes = _count_passes(monkeypatch)
    american_iv_and_greeks(price, is_call, SPOT, strike, t, 0.04, 0.01)
    assert sum(sizes) <= 17_600, sizes
    assert len(sizes) <= 14, sizes


@pytest.mark.parametrize(("k", "t", "above"), [(160, 2.0, 0.02), (180, 2.0, 0.05),
                                               (150, 1.0, 0.01), (300, 2.0, 0.02)])  # fmt: skip
def test_a_deep_put_just_above_intrinsic_takes_few_passes(
    monkeypatch: pytest.MonkeyPatch, k: float, t: float, above: float
) -> None:
    """Deep in the money, a cent or so above the intrinsic value: from the European IV
    (far above) a step would cross into where exercise is optimal and the search
    crawl back (6-7 passes); the kink's step takes at most 4, to the same IV."""
    sizes = _count_passes(monkeypatch)
    price = k - SPOT + above
    iv, g = american_iv_and_greeks(price, False, SPOT, k, t, 0.04, 0.01)
    assert len(sizes) <= 4, sizes
    assert g.vega * 100.0 > 1.0
    assert abs(american_price(False, SPOT, k, t, 0.04, 0.01, iv) - price) < 1e-8


def _benchmark_contracts() -> tuple[np.ndarray, ...]:
    """The benchmark's 10,000 contracts: (is_call, strike, t, vol)."""
    rng = np.random.default_rng(0)
    n = 10_000
    strike, t = rng.uniform(60, 160, n), rng.uniform(1 / 365, 2.0, n)
    vol, is_call = rng.uniform(0.1, 1.0, n), rng.random(n) < 0.5
    return is_call, strike, t, vol


def test_search_from_a_warm_state_mostly_ends_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The benchmark's contracts a moment later (spot up 0.05 %, each volatility moved by
    up to 0.5 % of itself), searched from the state the first call left: at most 1.15
    premium passes per contract searched (from the last IV alone: about 1.95), and the
    IVs and greeks of the search from the European IV."""
    is_call, strike, t, vol = _benchmark_contracts()
    price = american_price(is_call, SPOT, strike, t, 0.04, 0.01, vol)
    iv, _, warm = american_iv_greeks_warm(price, is_call, SPOT, strike, t, 0.04, 0.01)
    rng = np.random.default_rng(1)
    later = american_price(is_call, SPOT + 0.05, strike, t, 0.04, 0.01,
                           vol * (1.0 + rng.uniform(-0.005, 0.005, len(vol))))  # fmt: skip
    args = (is_call, SPOT + 0.05, strike, t, 0.04, 0.01)
    cold_iv, cold_g = american_iv_and_greeks(later, *args)
    sizes = _count_passes(monkeypatch)
    got_iv, got_g = american_iv_and_greeks(later, *args, guess=iv, warm=warm)
    assert sum(sizes) <= 1.1 * sizes[0], sizes
    # Quotes within 1e-6 of the strike of their intrinsic value determine no IV and
    # end once their price is matched to 1e-7 of it (they took 14 passes, not 4).
    assert len(sizes) <= 5, sizes
    ok = cold_g.vega * 100.0 >= MIN_VEGA
    np.testing.assert_array_equal(np.isnan(got_iv), np.isnan(cold_iv))
    # Within 1e-4 of the intrinsic value a price determines no volatility (a range
    # reproduces it, see `IDENTIFIABLE`): there the IV found reproduces the price.
    intrinsic = np.maximum(np.where(is_call, SPOT + 0.05 - strike, strike - SPOT - 0.05), 0.0)
    clear = ok & (later - intrinsic > 1e-4)
    found = np.isfinite(got_iv)
    repriced = american_price(
        is_call, SPOT + 0.05, strike, t, 0.04, 0.01, np.where(found, got_iv, 0.2)
    )
    put_k = np.where(is_call, SPOT + 0.05, strike)  # the put form's strike
    assert (np.abs(repriced - later)[found] <= 1.5e-7 * put_k[found]).all()
    np.testing.assert_allclose(got_iv[clear], cold_iv[clear], rtol=0, atol=1e-8)
    # The premium's greeks are taken at the last pass's volatility, within 1e-5 of the
    # IV (two searches from the last IV and from the European IV differ by half these).
    for a, b, tol in zip(got_g, cold_g, (1e-4, 2e-5, 1e-5, 2e-4, 1e-3), strict=True):
        np.testing.assert_allclose(a[clear], b[clear], rtol=0, atol=tol)


def test_a_warm_state_from_other_contracts_changes_no_iv() -> None:
    """A state is only where searches start: one from other contracts (shuffled) or
    from a spot 5 % away finds the IVs of the search from the European IV."""
    rng = np.random.default_rng(7)
    n = 500
    c, k = rng.random(n) < 0.5, rng.uniform(60, 160, n)
    t, vol = rng.uniform(2 / 365, 2, n), rng.uniform(0.1, 0.8, n)
    price = american_price(c, SPOT, k, t, 0.05, 0.02, vol)
    iv, g, warm = american_iv_greeks_warm(price, c, SPOT, k, t, 0.05, 0.02)
    ok = (g.vega * 100.0 >= MIN_VEGA) & _identifiable(price, c, k)
    assert np.isfinite(warm.sigma).mean() > 0.5
    shuffled = Warm(*(col[rng.permutation(n)] for col in warm))
    moved = warm._replace(spot=warm.spot * 1.05)
    for state in (shuffled, moved):
        got = american_implied_vol(price, c, SPOT, k, t, 0.05, 0.02, warm=state)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(iv))
        np.testing.assert_allclose(got[ok], iv[ok], rtol=0, atol=1e-8)


def test_implied_vol_alone_is_the_iv_of_iv_and_greeks() -> None:
    """`american_implied_vol` (no greeks, from a guess) finds the IV that
    `american_iv_and_greeks` finds, to the search's tolerance (its premium sums fewer
    integrands in one product, so the last bits may differ)."""
    rng = np.random.default_rng(5)
    n = 400
    c, k = rng.random(n) < 0.5, rng.uniform(60, 160, n)
    t, vol = rng.uniform(1 / 365, 2, n), rng.uniform(0.1, 0.8, n)
    price = american_price(c, SPOT, k, t, 0.05, 0.02, vol)
    guess = vol * rng.uniform(0.95, 1.05, n)
    iv, _ = american_iv_and_greeks(price, c, SPOT, k, t, 0.05, 0.02, guess=guess)
    alone = american_implied_vol(price, c, SPOT, k, t, 0.05, 0.02, guess=guess)
    ok = _identifiable(price, c, k)
    assert ok.mean() > 0.8
    np.testing.assert_allclose(alone[ok], iv[ok], rtol=0, atol=1e-8)
    np.testing.assert_array_equal(np.isnan(alone), np.isnan(iv))
    assert np.isfinite(iv).mean() > 0.9


def test_more_table_groups_than_one_call_holds_are_priced_in_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More (rate, yield, expiry bucket) groups than one call may hold (a processor
    with many underlyings; here twenty yields over a dozen buckets, against tables of
    the former capacity, 512) are priced in parts, each row as in a call of its own
    yield, to the search's tolerance (in one call they raised ValueError)."""
    monkeypatch.setattr(TABLES, "capacity", 512)
    rng = np.random.default_rng(11)
    n = 3_000
    yields = np.round(np.linspace(0.0, 0.05, 20), 4)
    q = rng.choice(yields, n)
    c, k = rng.random(n) < 0.5, rng.uniform(70, 140, n)
    t = np.exp(rng.uniform(np.log(2 / 365), np.log(3.0), n))
    vol = rng.uniform(0.15, 0.6, n)
    assert _parts_needed(c, t, q) > 1
    price = american_price(c, SPOT, k, t, 0.04, q, vol)
    iv, g = american_iv_and_greeks(price, c, SPOT, k, t, 0.04, q)
    alone = american_implied_vol(price, c, SPOT, k, t, 0.04, q)
    greeks = american_greeks(c, SPOT, k, t, 0.04, q, vol)
    assert np.isfinite(iv).mean() > 0.9
    for y in yields[::4]:
        rows = np.flatnonzero(q == y)
        args = (c[rows], SPOT, k[rows], t[rows], 0.04, y)
        np.testing.assert_allclose(price[rows], american_price(*args, vol[rows]), rtol=1e-9)
        iv_y, g_y = american_iv_and_greeks(price[rows], *args)
        m = g_y.vega * 100.0 >= MIN_VEGA  # where the IV is determined (as above)
        assert m.mean() > 0.6
        np.testing.assert_allclose(iv[rows][m], iv_y[m], rtol=0, atol=1e-8)
        np.testing.assert_allclose(g.rho[rows][m], g_y.rho[m], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(alone[rows][m], iv_y[m], rtol=0, atol=1e-8)
        np.testing.assert_allclose(greeks.delta[rows], american_greeks(*args, vol[rows]).delta,
                                   rtol=1e-6, atol=1e-9)  # fmt: skip


def _parts_needed(c: np.ndarray, t: np.ndarray, q: np.ndarray) -> int:
    """How many parts the groups of these contracts (rate 0.04) take."""
    from optionsfeed.pricing.boundary_table import bucket_of

    pr, pq = np.where(c, q, 0.04), np.where(c, 0.04, q)
    groups = len(set(zip(pr.tolist(), pq.tolist(), bucket_of(t).tolist(), strict=True)))
    return -(-groups // (TABLES.capacity // 8))
