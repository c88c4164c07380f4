"""The dashboard in real headless Chromium (Debian's `chromium`, driven by Playwright)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from ..integration.test_up import get
from ..ports import free_port


@contextlib.contextmanager
def run_up(tmp: Path, *args: str) -> Iterator[str]:
    """`optionsfeed up` (embedded broker) with `args`; yields its base URL."""
    port = free_port()
    log = tmp / "up.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "optionsfeed.cli", "up", "--port", str(port), *args],
            stdout=subprocess.PIPE, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline().decode()
        assert f":{port}/" in line, (line, log.read_text())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)
        proc.stdout.close()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default system at 2,000 updates/s, shared by the tests of this module."""
    with run_up(tmp_path_factory.mktemp("up"), "--rate", "2000") as url:
        yield url


async def open_page(browser: Browser, url: str) -> tuple[Page, list[str], list[dict[str, Any]]]:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    sent: list[dict[str, Any]] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def on_ws(ws: Any) -> None:
        import json

        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", on_ws)
    await page.goto(url)
    return page, errors, sent


async def cell_texts(page: Page) -> list[str]:
    texts: list[str] = await page.eval_on_selector_all(
        "#chain tbody td[data-f=mark], #chain tbody td[data-f=bid]",
        "els => els.map(e => e.textContent)",
    )
    return texts


@pytest.mark.timeout(60)
async def test_the_chain_loads_lives_and_logs_no_error(up: str, browser: Browser) -> None:
    page, errors, _ = await open_page(browser, up)
    await page.wait_for_function(
        "document.querySelectorAll('#chain tbody tr').length >= 40", timeout=15000
    )
    rows = await page.locator("#chain tbody tr").count()
    assert rows >= 40
    assert await page.locator("#chain tbody tr.atm").count() == 1
    before = await cell_texts(page)
    await page.wait_for_function(
        "prev => { const now = [...document.querySelectorAll("
        "'#chain tbody td[data-f=mark], #chain tbody td[data-f=bid]')].map(e => e.textContent);"
        " return now.some((t, i) => t !== prev[i]); }",
        arg=before, timeout=5000,
    )  # fmt: skip
    assert await page.locator("#conn").text_content() == "live"
    assert (await page.locator("#spot").text_content() or "—") != "—"
    # The charts are drawn: their canvases have ink.
    for chart in ("smile", "oi"):
        await page.wait_for_function(
            f"(() => {{ const c = document.getElementById('{chart}');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n > 2000; })()",
            timeout=5000,
        )
    assert errors == []
    await page.close()


async def test_the_header_shows_the_selected_expiry_s_forward(up: str, browser: Browser) -> None:
    """The header's Forward is the one the selected expiry's rows were priced on, near
    the spot, with where it came from in its tooltip."""
    page, errors, _ = await open_page(browser, up)
    await page.wait_for_function(
        "document.getElementById('forward').textContent !== '—'", timeout=15000
    )
    fwd = float(await page.locator("#forward").text_content() or "nan")
    spot = float(await page.locator("#spot").text_content() or "nan")
    assert abs(fwd / spot - 1.0) < 0.05
    title = await page.locator("#forward").get_attribute("title") or ""
    assert "(implied)" in title or "(carry)" in title
    assert errors == []
    await page.close()


@pytest.mark.timeout(60)
async def test_switching_expiry_unsubscribes_and_subscribes(up: str, browser: Browser) -> None:
    page, errors, sent = await open_page(browser, up)
    await page.wait_for_function(
        "document.querySelectorAll('#chain tbody tr').length >= 10", timeout=15000
    )
    buttons = page.locator("#expiries button")
    first = await buttons.nth(0).get_attribute("data-expiry")
    second = await buttons.nth(1).get_attribute("data-expiry")
    assert first
    assert second
    sent.clear()
    await buttons.nth(1).click()
    await page.wait_for_function(
        f"document.querySelector('#expiries button[data-expiry=\"{second}\"]').getAttribute('aria-pressed') === 'true'"
    )
    tag = second[2:].replace("-", "")  # YYMMDD in the OSI symbol
    # The new expiry's rows are on screen (the old table goes on the next frame).
    await page.wait_for_function(
        "tag => { const cells = [...document.querySelectorAll("
        "'#chain tbody td[data-f=mark][data-s]')].map(e => e.dataset.s).filter(Boolean);"
        " return cells.length >= 20 && cells.every(s => s.slice(3, 9) === tag); }",
        arg=tag, timeout=10000,
    )  # fmt: skip
    old, new = f"chain.SPY.{first.replace('-', '')}", f"chain.SPY.{second.replace('-', '')}"
    ops = [(m["op"], m["channels"]) for m in sent]
    assert ("unsubscribe", [old]) in ops
    assert ("subscribe", [new]) in ops
    assert ops.index(("unsubscribe", [old])) < ops.index(("subscribe", [new]))
    symbols = await page.eval_on_selector_all(
        "#chain tbody td[data-f=mark][data-s]", "els => els.map(e => e.dataset.s).filter(Boolean)"
    )
    assert symbols
    assert all(s[3:9] == tag for s in symbols)
    assert errors == []
    await page.close()


@pytest.mark.timeout(60)
async def test_an_iv_cell_shows_the_bid_and_ask_iv_on_hover(up: str, browser: Browser) -> None:
    """Hovering an IV cell shows the record's iv_bid and iv_ask (its title), kept in
    step with the record as updates arrive."""
    page, errors, _ = await open_page(browser, up)
    await page.wait_for_function(
        "document.querySelectorAll('#chain tbody tr').length >= 10", timeout=15000
    )
    # An ATM cell: both sides quoted there, so both IVs are known.
    cell = page.locator("#chain tbody tr.atm td.c[data-f=iv]")
    await page.wait_for_function(
        "() => /^bid IV \\d+\\.\\d% · ask IV \\d+\\.\\d%$/.test(document.querySelector("
        "'#chain tbody tr.atm td.c[data-f=iv]').title)",
        timeout=10000,
    )  # fmt: skip
    title = await cell.get_attribute("title")
    sym = await cell.get_attribute("data-s")
    row = await page.evaluate(
        "sym => window.optionsfeedModel().rows.find(r => r.symbol === sym)", sym
    )
    shown = [float(x.rstrip("%")) / 100 for x in (title or "").replace("·", "").split() if "%" in x]
    assert shown[0] == pytest.approx(row["iv_bid"], abs=0.002)
    assert shown[1] == pytest.approx(row["iv_ask"], abs=0.002)
    assert row["iv_bid"] <= row["iv_ask"]
    assert errors == []
    await page.close()


@pytest.mark.alone  # a bound on the event loop's lag: runs with nothing beside it
@pytest.mark.timeout(90)
async def test_no_long_task_over_50_ms_at_2000_updates_per_second(
    browser: Browser, record_property: Any
) -> None:
    """The page's chain (300 rows, every field a record has) gets 2,000 record updates
    a second: 20 records every 10 ms, from a scripted gateway, so the load is the
    page's alone whatever the machine can price meanwhile."""
    from ..client.fake_gateway import FakeGateway, ack

    expiry = "2026-12-18"
    chain = "chain.SPY.20261218"
    strikes = [400.0 + 2.5 * i for i in range(150)]
    symbols = [f"SPY261218{r}{int(k * 1000):08d}" for k in strikes for r in ("C", "P")]
    full = [
        {"symbol": s, "underlying": "SPY", "root": "SPY", "expiry": expiry, "strike": k,
         "right": r, "multiplier": 100, "bid": 5.0, "ask": 5.2, "bid_size": 10,
         "ask_size": 12, "mark": 5.1, "last": 5.1, "last_size": 1, "volume": 100,
         "open_interest": 1000, "iv": 0.2, "iv_bid": 0.19, "iv_ask": 0.21, "delta": 0.5,
         "gamma": 0.01, "theta": -0.05, "vega": 0.2, "rho": 0.1,
         "underlying_price": 500.0, "forward": 500.5, "forward_source": "implied",
         "exercise": "american", "ts": 1, "flags": []}
        for s, k, r in ((s, strikes[i // 2], s[9]) for i, s in enumerate(symbols))
    ]  # fmt: skip

    async with FakeGateway({"SPY": [expiry]}) as gw:

        async def stream() -> None:
            conn = await gw.connection()
            msg = await conn.recv("subscribe")
            seq = 1
            await conn.send(
                ack(msg),
                {"type": "snapshot", "channel": chain, "epoch": "e1", "seq": 1, "data": full},
                {"type": "snapshot", "channel": "underlying.SPY", "epoch": "e1", "seq": 1,
                 "data": [{"symbol": "SPY", "price": 500.0, "ts": 1}]},
                {"type": "snapshot", "channel": "stats.SPY", "epoch": "e1", "seq": 1,
                 "data": [{"underlying": "SPY", "atm_iv": 0.2, "ts": 1}]},
            )  # fmt: skip
            loop = asyncio.get_running_loop()
            start = loop.time()
            while True:
                seq += 1
                recs = [
                    {"symbol": symbols[(seq * 20 + j) % len(symbols)], "bid": 5.0 + seq % 7 / 100,
                     "ask": 5.2 + seq % 5 / 100, "iv": 0.2 + seq % 11 / 1000,
                     "delta": 0.5 + seq % 13 / 1000, "ts": seq}
                    for j in range(20)
                ]  # fmt: skip
                await conn.send({"type": "update", "channel": chain, "epoch": "e1",
                                 "prev": seq - 1, "seq": seq, "data": recs})  # fmt: skip
                # An absolute 10 ms grid: a late send does not lower the rate.
                await asyncio.sleep(max(0.0, start + (seq - 1) * 0.01 - loop.time()))

        streamer = asyncio.create_task(stream())
        try:
            await _long_tasks(browser, gw.http, record_property)
        finally:
            streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await streamer


async def _long_tasks(browser: Browser, up: str, record_property: Any) -> None:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await page.add_init_script(
        "window.__long = []; new PerformanceObserver(l => { for (const e of l.getEntries())"
        " window.__long.push(e.duration); }).observe({type: 'longtask', buffered: true});"
        " window.__frames = 0; (function tick() { window.__frames++;"
        " requestAnimationFrame(tick); })();"
    )
    await page.goto(up)
    await page.wait_for_function(
        "document.querySelectorAll('#chain tbody tr').length >= 40", timeout=15000
    )
    # Measure the steady state, not the first load, in up to two windows of 8 s: the
    # system under test shares this 2-core machine with the browser, and a window in
    # which the machine starved the page (fewer than 500 updates/s reached it) says
    # nothing about the page. The page must keep its handlers under 50 ms in a
    # window that carried the load.
    tried = []
    for _ in range(2):
        figures, per_s, work = await _window(page)
        record_property("long_tasks", figures)
        print(figures)
        tried.append(figures)
        if per_s >= 500 and work <= 50:
            break
    else:
        pytest.fail("no window carried the load within 50 ms per handler: " + "; ".join(tried))
    await page.close()


async def _window(page: Any) -> tuple[str, int, float]:
    """8 s of the page: (figures, updates/s it saw, its longest handler in ms)."""
    await page.evaluate("window.__long = []; window.__frames = 0; window.optionsfeedPerf.reset()")
    await page.wait_for_timeout(8000)
    longs: list[float] = await page.evaluate("window.__long")
    fps = await page.evaluate("window.__frames") / 8
    work: float = await page.evaluate("window.optionsfeedPerf.workMaxMs")
    rate = await page.locator("#rate").text_content()
    worst = max(longs, default=0.0)
    figures = (
        f"{rate}: longest handler {work:.1f} ms; Long Tasks API: {len(longs)} over 8 s,"
        f" worst {worst:.0f} ms; {fps:.0f} frames/s"
    )
    # Our own work per task (performance marks) is what the page controls; the Long
    # Tasks API also counts time the machine gives the server and the test, so it is
    # reported, not asserted.
    return figures, int((rate or "0").split()[0]), work


def test_screenshot_is_in_docs() -> None:
    """The README shows docs/dashboard.png; it must exist (made by scripts/screenshot)."""
    assert (Path(__file__).parents[2] / "docs" / "dashboard.png").exists()


@pytest.mark.timeout(120)
async def test_a_gateway_restart_reconnects_without_reload_and_ends_equal_to_rest(
    browser: Browser, redis_url: str, tmp_path: Path
) -> None:
    """Processor and gateway as separate processes over Redis; the gateway is
    stopped and started again on the same port under the open page."""
    from ..integration.test_gateway_workers import spawn, stop

    processor = spawn(["process", "--redis", redis_url, "--rate", "2000"], tmp_path / "p.log")
    port = free_port()
    args = ["gateway", "--redis", redis_url, "--port", str(port)]
    gw = spawn(args, tmp_path / "g1.log")
    try:
        assert gw.stdout is not None
        gw.stdout.readline()
        page, errors, _ = await open_page(browser, f"http://127.0.0.1:{port}/")
        await page.wait_for_function(
            "document.querySelectorAll('#chain tbody tr').length >= 40", timeout=20000
        )
        stop(gw)
        await page.wait_for_function(
            "document.querySelector('#conn').textContent === 'reconnecting'", timeout=10000
        )
        gw = spawn(args, tmp_path / "g2.log")
        assert gw.stdout is not None
        gw.stdout.readline()
        await page.wait_for_function(
            "document.querySelector('#conn').textContent === 'live'", timeout=20000
        )
        navigations = await page.evaluate("performance.getEntriesByType('navigation').length")
        assert navigations == 1  # no reload
        stop(processor)  # the data stops moving: page and REST must then agree
        await page.wait_for_timeout(1500)
        model = await page.evaluate("window.optionsfeedModel()")
        expiry = model["expiry"]
        _, rest = await asyncio.to_thread(
            get, f"http://127.0.0.1:{port}/api/v1/chain/SPY?expiry={expiry}"
        )
        channel = model["channels"][f"chain.SPY.{expiry.replace('-', '')}"]
        assert channel["epoch"] == rest["epoch"]
        assert channel["seq"] <= rest["seq"]
        assert {r["symbol"]: r for r in model["rows"]} == {r["symbol"]: r for r in rest["data"]}
        # The drop itself is logged by the browser as a failed connection; nothing else.
        assert all("WebSocket" in e or "ERR_CONNECTION_REFUSED" in e for e in errors), errors
        await page.close()
    finally:
        stop(gw)
        stop(processor)


def coin_recording(path: Path) -> None:
    """A short recording of a coin-quoted chain (prices in BTC, a forward per quote)."""
    from datetime import UTC, datetime, timedelta

    from optionsfeed.clock import wall_clock_us
    from optionsfeed.model.contract import Contract
    from optionsfeed.sources.base import Listing, UnderlyingTick
    from optionsfeed.sources.feed import FeedBuffer
    from optionsfeed.sources.record import RecordWriter

    now = wall_clock_us()
    expiry = (datetime.now(UTC) + timedelta(days=30)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    tag = expiry.strftime("%d%b%y").upper().lstrip("0")
    contracts = [
        Contract(f"BTC-{tag}-{k}-{r}", "BTC", "BTC", expiry.date(), int(expiry.timestamp() * 1e6),
                 float(k), r, 1, "BTC")
        for k in range(50_000, 100_001, 2_500) for r in ("C", "P")
    ]  # fmt: skip
    buf = FeedBuffer()
    buf.listing(Listing("BTC", contracts, 0.0, 0.0, inverse=True))
    buf.tick(UnderlyingTick("BTC", 75_000.0, None, None, now))
    for c in contracts:
        otm = c.strike > 75_000 if c.right == "C" else c.strike < 75_000
        mark = 0.012 if otm else abs(c.strike - 75_000) / 75_000 + 0.012
        buf.quote("BTC", c.symbol, bid=mark - 0.0005, ask=mark + 0.0005, bid_size=5.0,
                  ask_size=5.0, ts=now, mark=mark, forward=75_100.0)  # fmt: skip
    writer = RecordWriter(path, source="test", started_us=now)
    writer.write(buf.take(), now)
    writer.close()


@pytest.mark.timeout(60)
async def test_a_coin_quoted_chain_and_a_silent_feed_are_shown(
    tmp_path: Path, browser: Browser
) -> None:
    """BTC prices show 4 decimals and say their currency; once the feed (a replay
    that ended) is silent for 10 s the page says so, with the gateway's reason."""
    path = tmp_path / "btc.ofr"
    coin_recording(path)
    with run_up(tmp_path, "--source", f"replay:{path}", "--speed", "max",
                "--fresh-within-s", "2") as url:  # fmt: skip
        page, errors, _ = await open_page(browser, url)
        await page.wait_for_function(
            "document.querySelectorAll('#chain tbody tr').length >= 20", timeout=15000
        )
        assert await page.locator("#currency").text_content() == "prices in BTC, greeks in USD"
        marks = await page.eval_on_selector_all(
            "#chain tbody td[data-f=mark]", "els => els.map(e => e.textContent)"
        )
        assert "0.0120" in marks
        assert not await page.locator("#feed").is_visible()
        await page.wait_for_selector("#feed:not([hidden])", timeout=20000)
        text = await page.locator("#feed").text_content() or ""
        assert text.startswith("feed silent for ")
        assert "BTC: newest data is" in text
        # The one console error allowed: the browser's note of /readyz answering 503.
        assert all("503" in e for e in errors), errors
        await page.close()
