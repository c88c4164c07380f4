"""connection.py: the subscription book (pure) and the WebSocket handshake against the venue."""

from __future__ import annotations

import aiohttp
import pytest

from optionsfeed.errors import SourceError
from optionsfeed.sources.massive.connection import (
    Connection,
    Disconnected,
    SubscriptionBook,
    params_for,
)
from optionsfeed.sources.massive.normalize import Status, decode_frame

from ...fakes.massive import Venue


def test_params_name_quotes_and_trades_of_each_contract() -> None:
    """Q. and T. of the O: ticker."""
    assert params_for(["SPY251219C00650000"]) == [
        "Q.O:SPY251219C00650000",
        "T.O:SPY251219C00650000",
    ]


def test_the_book_tracks_acknowledgements_and_refusals() -> None:
    """Acks move params from pending to active; an error naming a pending one refuses it."""
    book = SubscriptionBook()
    a, b = params_for(["SPY251219C00650000"]), params_for(["SPY251219P00650000"])
    book.sent_subscribe(a + b)
    assert book.problem() == "waiting for 4 subscription acknowledgements"
    assert book.quote_contracts() == 2
    for p in a:
        assert book.on_status(Status("success", f"subscribed to: {p}")) is None
    # Some stream, some still pending (as during a window move): not a problem.
    assert book.problem() is None
    refused = book.on_status(Status("error", f"limit exceeded: {b[0]}"))
    assert refused == f"error: limit exceeded: {b[0]}"
    assert book.on_status(Status("success", f"subscribed to: {b[1]}")) is None
    assert book.active == {*a, b[1]}
    assert book.pending == set()
    assert book.refusals == 1
    problem = book.problem()
    assert problem is not None
    assert problem.startswith("the venue refused 1 subscriptions")
    # Unsubscribing: acknowledged ones leave `active` on their ack.
    book.sent_unsubscribe(a)
    assert book.unsubscribing == set(a)
    for p in a:
        book.on_status(Status("success", f"unsubscribed to: {p}"))
    assert book.active == {b[1]}
    assert book.unsubscribing == set()
    assert book.on_status(Status("connected", "Connected Successfully")) is None


async def test_the_handshake_authenticates_and_the_venue_caps_quote_subscriptions() -> None:
    """Greeting, auth, then 1,001 contracts asked: 1,000 acknowledged, one refused by name."""
    async with Venue(max_quote_contracts=1000) as venue, aiohttp.ClientSession() as http:
        conn = await Connection.open(http, venue.ws_url, venue.api_key, timeout_s=5)
        try:
            symbols = [t[2:] for t in sorted(venue.contracts)[:1001]]
            params = [p for p in params_for(symbols) if p.startswith("Q.")]
            book = SubscriptionBook()
            book.sent_subscribe(params)
            await conn.send("subscribe", params)
            refusals: list[str] = []
            async for data in conn.frames():
                for st in decode_frame(data).statuses:
                    if (msg := book.on_status(st)) is not None:
                        refusals.append(msg)
                if not book.pending:
                    break
            assert len(book.active) == 1000
            assert book.refusals == 1
            assert params[-1] in refusals[0]
            assert len(venue.quote_subscriptions()) == 1000
            # Subscriptions went in chunks, each one JSON action.
            actions = [m for _, m in venue.sent if isinstance(m, dict)]
            assert actions[0] == {"action": "auth", "params": venue.api_key}
            assert {m["action"] for m in actions[1:]} == {"subscribe"}
            assert len(actions) == 1 + 3
        finally:
            await conn.close()


async def test_a_rejected_key_is_a_source_error_and_a_dead_venue_a_disconnect() -> None:
    """auth_failed: SourceError naming the variable, not the key; nothing listening: Disconnected."""
    async with Venue(ws_key="the-right-one") as venue, aiohttp.ClientSession() as http:
        with pytest.raises(SourceError, match="OPTIONSFEED_MASSIVE_API_KEY") as info:
            await Connection.open(http, venue.ws_url, "wrong-key-77", timeout_s=5)
        assert "wrong-key-77" not in str(info.value)
        await venue.down()
        with pytest.raises(Disconnected):
            await Connection.open(http, venue.ws_url, "the-right-one", timeout_s=5)
