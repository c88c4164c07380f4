"""One WebSocket session with Massive's options cluster, and its subscription book.

The session (`Connection.open`): the venue greets with a `connected` status, the
client sends `{"action":"auth","params":KEY}` and gets `auth_success` or
`auth_failed`. A rejected key raises SourceError (final: retrying cannot help);
anything else that goes wrong (no greeting, `max_connections`, a timeout, a closed
socket) raises Disconnected, which the adapter answers by reconnecting.

Subscriptions name a channel and a contract, `Q.O:SPY251219C00650000` (quotes) and
`T.O:...` (trades), comma-separated in one `subscribe` / `unsubscribe` action. The
venue acknowledges each with a `success` status, "subscribed to: Q.O:..." or
"unsubscribed to: ...". `SubscriptionBook` (pure) keeps what was asked and what was
acknowledged; any other status that names a pending subscription counts as its
refusal (Massive documents a cap of 1,000 option contracts per connection for
quotes, not the exact refusal; whatever status names the subscription is taken).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable

import aiohttp
import msgspec

from ...errors import OptionsFeedError, SourceError
from ...model.osi import VENDOR_PREFIX
from .normalize import Status, decode_frame

CHANNELS = ("Q", "T")  # quotes, trades
PARAMS_PER_MESSAGE = 500  # keeps one action under ~12 kB
KEY_HINT = "check OPTIONSFEED_MASSIVE_API_KEY"
_ACK = re.compile(r"^(subscribed|unsubscribed) to: (.+)$")
_REFUSALS_KEPT = 1000


class Disconnected(OptionsFeedError):
    """The session ended or could not start; reconnecting may help."""


def params_for(symbols: Iterable[str]) -> list[str]:
    """Subscription params (quotes and trades) of compact OSI `symbols`."""
    return [f"{ch}.{VENDOR_PREFIX}{s}" for s in symbols for ch in CHANNELS]


class SubscriptionBook:
    """Subscriptions asked for and acknowledged on one connection.

    Bounded by what was asked: `pending` (sent, not acknowledged), `active`
    (acknowledged) and `refused` (param -> the venue's message, at most
    `_REFUSALS_KEPT`; `refusals` counts them all).
    """

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.unsubscribing: set[str] = set()
        self.active: set[str] = set()
        self.refused: dict[str, str] = {}
        self.refusals = 0

    def sent_subscribe(self, params: Iterable[str]) -> None:
        """`params` were sent in a `subscribe`."""
        for p in params:
            self.pending.add(p)
            self.refused.pop(p, None)

    def sent_unsubscribe(self, params: Iterable[str]) -> None:
        """`params` were sent in an `unsubscribe`."""
        for p in params:
            self.pending.discard(p)
            self.refused.pop(p, None)
            if p in self.active:
                self.unsubscribing.add(p)

    def quote_contracts(self) -> int:
        """Contracts whose quotes are subscribed or asked for (what the venue caps)."""
        return sum(1 for p in self.pending | self.active if p.startswith("Q."))

    def on_status(self, st: Status) -> str | None:
        """Take a status; return the venue's message when it refuses something, else None."""
        if st.status == "success":
            m = _ACK.match(st.message)
            if m is not None:
                for p in m.group(2).split(","):
                    p = p.strip()
                    if m.group(1) == "subscribed":
                        self.pending.discard(p)
                        self.active.add(p)
                    else:
                        self.unsubscribing.discard(p)
                        self.active.discard(p)
            return None
        if st.status in ("connected", "auth_success"):
            return None
        named = [p for p in re.split(r"[\s,]+", st.message) if p in self.pending]
        for p in named:
            self.pending.discard(p)
            self.refusals += 1
            if len(self.refused) < _REFUSALS_KEPT:
                self.refused[p] = st.message
        return f"{st.status}: {st.message}"

    def problem(self) -> str | None:
        """Why the subscriptions are not all live, or None."""
        if self.refused:
            first = next(iter(self.refused.values()))
            return f"the venue refused {self.refusals} subscriptions ({first})"
        # Acknowledgements pending while others stream (a window move) are not a
        # problem: readiness would blink at every move. Nothing streaming yet is.
        if self.pending and not self.active:
            return f"waiting for {len(self.pending)} subscription acknowledgements"
        return None


class Connection:
    """An authenticated WebSocket to Massive; `open` makes one, `close` ends it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        self.ws = ws
        self.url = url

    def __repr__(self) -> str:
        return f"Connection({self.url!r})"

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        heartbeat_s: float = 30.0,
    ) -> Connection:
        """Connect, wait for the greeting, authenticate; within `timeout_s` in all.

        Raises SourceError when the venue rejects the key, Disconnected otherwise.
        Pings every `heartbeat_s` (no pong within half of it closes the socket).
        """
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(timeout_s):
                ws = await http.ws_connect(url, heartbeat=heartbeat_s, autoping=True)
                conn = cls(ws, url)
                await conn._expect("connected")
                await ws.send_str(
                    msgspec.json.encode({"action": "auth", "params": api_key}).decode()
                )
                status = await conn._expect("auth_success", "auth_failed")
        except TimeoutError:
            if ws is not None:
                await ws.close()
            raise Disconnected(f"no greeting or auth reply within {timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            if ws is not None:
                await ws.close()
            raise Disconnected(f"connecting to {url}: {type(exc).__name__}: {exc}") from None
        except BaseException:
            if ws is not None:
                await ws.close()
            raise
        if status.status == "auth_failed":
            await ws.close()
            msg = status.message.replace(api_key, "***")[:200]
            raise SourceError(f"Massive rejected the API key on {url} ({msg}): {KEY_HINT}")
        return conn

    async def _expect(self, *wanted: str) -> Status:
        """The first status among `wanted`; other statuses before it end the session."""
        async for data in self.frames():
            frame = decode_frame(data)
            for st in frame.statuses:
                if st.status in wanted:
                    return st
                raise Disconnected(f"the venue said {st.status}: {st.message[:200]}")
        raise Disconnected("the connection closed during the handshake")  # pragma: no cover

    async def send(self, action: str, params: list[str]) -> None:
        """Send `action` ("subscribe"/"unsubscribe") for `params`, a few hundred per message."""
        for i in range(0, len(params), PARAMS_PER_MESSAGE):
            chunk = ",".join(params[i : i + PARAMS_PER_MESSAGE])
            try:
                await self.ws.send_str(
                    msgspec.json.encode({"action": action, "params": chunk}).decode()
                )
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise Disconnected(f"sending {action}: {exc}") from None

    async def frames(self) -> AsyncIterator[str | bytes]:
        """The data of each frame until the socket closes, then raise Disconnected."""
        while True:
            msg = await self.ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                yield msg.data
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise Disconnected(f"connection error: {self.ws.exception()}")
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                raise Disconnected(f"the venue closed the connection (code {self.ws.close_code})")

    async def close(self) -> None:
        """Close the socket (idempotent)."""
        await self.ws.close()
