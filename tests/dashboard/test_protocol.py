"""The page's close-code, channel-error and resubscribe rules, against a scripted fake gateway."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from ..client.fake_gateway import FakeConnection, FakeGateway, ack, channel_error
from .test_dashboard import open_page

CHAIN = "chain.X.20261218"
CHANNELS = [CHAIN, "underlying.X", "stats.X"]
CALL = "X261218C00100000"


def rows() -> list[dict[str, Any]]:
    return [
        {"symbol": f"X261218{r}{k * 1000:08d}", "underlying": "X", "root": "X",
         "expiry": "2026-12-18", "strike": float(k), "right": r, "multiplier": 100,
         "bid": 1.0, "ask": 1.2, "mark": 1.1, "ts": 1, "flags": []}
        for k in range(90, 111, 5) for r in ("C", "P")
    ]  # fmt: skip


def data(channel: str, seq: int, records: list[dict[str, Any]], prev: int | None = None) -> Any:
    """A snapshot of `channel` at `seq` of epoch e1, or an update from `prev` when given."""
    msg = {"type": "snapshot" if prev is None else "update", "channel": channel, "epoch": "e1",
           "seq": seq, "data": records}  # fmt: skip
    if prev is not None:
        msg["prev"] = prev
    return msg


def bid(value: float) -> list[dict[str, Any]]:
    return [{"symbol": CALL, "bid": value, "ts": 2}]


@contextlib.asynccontextmanager
async def live_page(
    browser: Browser,
) -> AsyncIterator[tuple[FakeGateway, FakeConnection, Page, list[str]]]:
    """The page showing X's chain at seq 11 of epoch e1, from a fake gateway."""
    async with FakeGateway({"X": ["2026-12-18"]}) as gw:
        page, errors, _ = await open_page(browser, gw.http)
        conn = await gw.connection()
        msg = await conn.recv("subscribe")
        assert msg["channels"] == CHANNELS
        await conn.send(
            ack(msg),
            data(CHAIN, 10, rows()),
            data("underlying.X", 10, [{"symbol": "X", "price": 100.0, "ts": 1}]),
            data("stats.X", 10, [{"underlying": "X", "atm_iv": 0.2, "ts": 1}]),
            data(CHAIN, 11, bid(1.01), prev=10),
        )
        await at_seq(page, 11)
        try:
            yield gw, conn, page, errors
        finally:
            await page.close()


async def at_seq(page: Page, seq: int) -> None:
    await page.wait_for_function(
        f"window.optionsfeedModel().channels[{CHAIN!r}]?.seq === {seq}", timeout=10000
    )


async def shown_bid(page: Page) -> float:
    model = await page.evaluate("window.optionsfeedModel()")
    value: float = next(r["bid"] for r in model["rows"] if r["symbol"] == CALL)
    return value


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code", [1000, 1001, 1007, 1011])
async def test_a_server_close_reconnects_and_resumes(browser: Browser, code: int) -> None:
    async with live_page(browser) as (gw, conn, page, errors):
        await conn.close(code, "done with this connection")
        again = await gw.connection()
        msg = await again.recv("subscribe")
        assert msg["channels"] == CHANNELS
        assert msg["resume"][CHAIN] == {"epoch": "e1", "seq": 11}
        await again.send(ack(msg), data(CHAIN, 12, bid(1.02), prev=11))
        await at_seq(page, 12)
        assert await page.locator("#conn").text_content() == "live"
        assert await shown_bid(page) == 1.02
        assert errors == []


@pytest.mark.timeout(60)
async def test_a_policy_close_is_shown_and_not_retried(browser: Browser) -> None:
    async with live_page(browser) as (gw, conn, page, _):
        await conn.close(1008, "token expired")
        await page.wait_for_function("document.querySelector('#conn').textContent === 'closed'")
        assert "(1008: token expired)" in (await page.locator("#notice").text_content() or "")
        await page.wait_for_timeout(1000)  # four times the first reconnect's pause
        assert not gw.connected()


@pytest.mark.timeout(60)
async def test_an_error_naming_a_channel_resubscribes_or_is_shown_by_its_code(
    browser: Browser,
) -> None:
    async with live_page(browser) as (_, conn, page, _):
        await conn.send(channel_error("stats.X", "not_entitled"))
        await page.wait_for_function(
            "document.querySelector('#notice').textContent.startsWith('stats.X: not_entitled')"
        )
        await conn.send(channel_error(CHAIN, "internal"))
        await page.wait_for_function(
            "document.querySelector('#notice').textContent.endsWith('subscribing again')"
        )
        # After a pause, only the chain comes back, from where the page holds it.
        msg = await conn.recv("subscribe")
        assert msg["channels"] == [CHAIN]
        assert msg["resume"] == {CHAIN: {"epoch": "e1", "seq": 11}}
        await conn.send(ack(msg), data(CHAIN, 12, bid(1.02), prev=11))
        await at_seq(page, 12)
        await page.wait_for_function("document.querySelector('#notice').textContent === ''")
        model = await page.evaluate("window.optionsfeedModel()")
        assert "stats.X" not in model["channels"]


@pytest.mark.timeout(60)
async def test_a_gap_resubscribes_once_and_waits_for_the_new_base(browser: Browser) -> None:
    async with live_page(browser) as (_, conn, page, _):
        # A gap, then an update still in flight from before it: it is not applied,
        # and it brings no second subscribe.
        await conn.send(data(CHAIN, 51, bid(7.0), prev=50), data(CHAIN, 12, bid(9.0), prev=11))
        msg = await conn.recv("subscribe")
        assert msg["channels"] == [CHAIN]
        assert msg["resume"] == {CHAIN: {"epoch": "e1", "seq": 11}}
        await conn.send(ack(msg), data(CHAIN, 13, bid(1.03), prev=11))
        await at_seq(page, 13)
        assert await shown_bid(page) == 1.03
        await conn.send(data(CHAIN, 14, bid(1.04), prev=13))
        await at_seq(page, 14)
        assert conn.received.empty()  # one subscribe, whatever was in flight


@pytest.mark.timeout(60)
async def test_coin_prices_show_the_venues_decimals_and_gamma_its_significant_digits(
    browser: Browser,
) -> None:
    """A BTC chain: a mark of 0.00000178 BTC is shown as such, not 0.0000; a gamma of
    1.234e-5 per USD as 0.00001234, not 0.0000."""
    async with FakeGateway({"X": ["2026-12-18"]}) as gw:
        page, errors, _ = await open_page(browser, gw.http)
        conn = await gw.connection()
        msg = await conn.recv("subscribe")
        coin = [
            {**r, "currency": "BTC", "bid": 0.0000015, "ask": 0.0000021, "mark": 0.00000178,
             "gamma": 0.00001234, "delta": 0.01}
            for r in rows()
        ]  # fmt: skip
        await conn.send(ack(msg), data(CHAIN, 10, coin))
        await page.check("#greeks")
        await page.wait_for_selector("#chain tbody td[data-f=gamma]")
        cells: dict[str, list[str]] = {}
        for f in ("bid", "mark", "gamma"):
            cells[f] = await page.eval_on_selector_all(
                f"#chain tbody td[data-f={f}]", "els => els.map(e => e.textContent)"
            )
        assert set(cells["bid"]) == {"0.0000015"}
        assert set(cells["mark"]) == {"0.00000178"}
        assert set(cells["gamma"]) == {"0.00001234"}
        assert errors == []
        await page.close()
