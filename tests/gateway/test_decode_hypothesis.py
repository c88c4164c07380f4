"""Property tests of the pure protocol core against hostile input (PROTOCOL.md "Numbers").

`protocol.decode_request` maps any text frame to a request whose every field is
within the documented ranges, or to a `ProtocolError` with a documented code, and
never raises anything else. `parse_channel` accepts only ASCII names of the
grammar in PROTOCOL.md "Channels" and raises nothing but InvalidChannel.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from optionsfeed.gateway import protocol
from optionsfeed.gateway.channels import Channel, InvalidChannel, Kind, parse_channel

MAX_ID = 2**53 - 1
MAX_SEQ = 2**53 - 1
MAX_THROTTLE_MS = 60_000
CODES = {"bad_request", "unknown_op"}  # the codes decoding alone can give

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------

# Numbers a hostile client puts in a numeric field: around every documented bound,
# far past 64 bits, negative, fractional, booleans, and numbers spelled as strings.
hostile_ints = st.one_of(
    st.integers(min_value=-5, max_value=5),
    st.integers(min_value=MAX_THROTTLE_MS - 2, max_value=MAX_THROTTLE_MS + 2),
    st.integers(min_value=MAX_ID - 2, max_value=MAX_ID + 2),
    st.integers(min_value=-MAX_ID - 2, max_value=-MAX_ID + 2),
    st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**64 + 1, -(2**63)]),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.builds(lambda k: 10**k, st.integers(min_value=19, max_value=400)),
)
hostile_numbers: st.SearchStrategy[Any] = st.one_of(
    hostile_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, 1.5, -0.0, 1e30, -1e30, 1e308]),
    st.booleans(),
    st.none(),
    hostile_ints.map(str),
)

json_leaves = st.one_of(
    st.none(), st.booleans(), hostile_ints, st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)  # fmt: skip
json_values: st.SearchStrategy[Any] = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

ops = st.sampled_from(["subscribe", "unsubscribe", "ping", "fly", "", "SUBSCRIBE", "ping\u200b"])
channel_lists = st.lists(st.sampled_from(["chain.SPY", "stats.SPY", "chain.SPY.20261218"]))


@st.composite
def hostile_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request object with hostile values in its numeric fields (and some junk)."""
    obj: dict[str, Any] = {"op": draw(ops)}
    if draw(st.booleans()):
        obj["id"] = draw(hostile_numbers)
    obj["channels"] = draw(st.one_of(channel_lists, json_values))
    if draw(st.booleans()):
        obj["throttle_ms"] = draw(hostile_numbers)
    if draw(st.booleans()):
        point = {
            "epoch": draw(st.one_of(st.text(max_size=6), hostile_numbers)),
            "seq": draw(hostile_numbers),
        }
        obj["resume"] = draw(
            st.one_of(
                st.just({"chain.SPY": point}),
                st.dictionaries(st.text(max_size=10), st.just(point), max_size=3),
                json_values,
            )
        )
    if draw(st.booleans()):
        obj[draw(st.text(max_size=8))] = draw(json_values)
    return obj


def nested(depth: int, kind: str) -> str:
    """JSON nested `depth` deep: arrays, objects, or both inside a request's field."""
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    if kind == "in-request":
        return '{"op":"subscribe","id":7,"channels":' + "[" * depth + "]" * depth + "}"
    return '{"op":"ping","id":8,"x":' + '[{"a":' * depth + "1" + "}]" * depth + "}"


# -- the invariant ------------------------------------------------------------------------


def in_range_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_ID


def check_decoded(text: str | bytes) -> protocol.Request | protocol.ProtocolError:
    """decode_request(text): a request within the ranges or a documented ProtocolError."""
    try:
        req = protocol.decode_request(text)
    except protocol.ProtocolError as exc:
        err = exc
    else:
        return check_request(req)
    assert err.code in CODES, err.code
    assert isinstance(err.message, str)
    assert err.message
    assert err.id is None or in_range_id(err.id), f"error id {err.id!r} out of range"
    return err


def check_request(req: protocol.Request) -> protocol.Request:
    assert isinstance(req, protocol.Subscribe | protocol.Unsubscribe | protocol.Ping)
    assert req.id is None or in_range_id(req.id), f"id {req.id!r} out of range"
    if isinstance(req, protocol.Subscribe | protocol.Unsubscribe):
        assert isinstance(req.channels, list)
        assert all(isinstance(c, str) for c in req.channels)
    if isinstance(req, protocol.Subscribe):
        t = req.throttle_ms
        assert isinstance(t, int)
        assert not isinstance(t, bool)
        assert 0 <= t <= MAX_THROTTLE_MS, f"throttle_ms {t} out of range"
        for name, point in req.resume.items():
            assert isinstance(name, str)
            assert isinstance(point.epoch, str)
            assert isinstance(point.seq, int)
            assert not isinstance(point.seq, bool)
            assert 0 <= point.seq <= MAX_SEQ, f"resume seq {point.seq} out of range"
    return req


def expected_outcome(obj: dict[str, Any]) -> None:
    """What PROTOCOL.md says about a decoded object: the id of the error, the bad_request."""
    text = json.dumps(obj)
    out = check_decoded(text)
    has_id = "id" in obj
    mid = obj.get("id")
    id_ok = not has_id or mid is None or in_range_id(mid)
    if not id_ok:
        # "bad_request (with id null when the id itself is out of range)"
        assert isinstance(out, protocol.ProtocolError), f"{text[:200]} was accepted"
        assert out.id is None, f"{text[:200]}: error id {out.id!r}"
        if obj["op"] in ("subscribe", "unsubscribe", "ping"):
            assert out.code == "bad_request"
        return
    if isinstance(out, protocol.ProtocolError) and in_range_id(mid):
        assert out.id == mid, f"{text[:200]}: the error must echo id {mid}"
    if obj["op"] == "subscribe" and "throttle_ms" in obj:
        t = obj["throttle_ms"]
        if not (isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= MAX_THROTTLE_MS):
            assert isinstance(out, protocol.ProtocolError), f"throttle_ms {t!r} was accepted"
            assert out.code == "bad_request"


# -- decode_request -----------------------------------------------------------------------


@FAST
@given(json_values)
def test_any_json_value_decodes_or_is_a_documented_error(value: Any) -> None:
    """Any JSON value: a request within the ranges, or bad_request/unknown_op."""
    check_decoded(json.dumps(value))


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_a_documented_error(data: bytes) -> None:
    """Arbitrary bytes: nothing but ProtocolError is raised."""
    check_decoded(data)


@FAST
@given(st.text(max_size=200))
def test_any_text_decodes_or_is_a_documented_error(text: str) -> None:
    """Arbitrary text (what a UTF-8 text frame can carry): nothing but ProtocolError."""
    check_decoded(text)


@FAST
@given(hostile_requests())
@example({"op": "ping", "id": 2**53})
@example({"op": "ping", "id": -(2**53)})
@example({"op": "ping", "id": 10**100})
@example({"op": "subscribe", "id": 2**64 + 1, "channels": ["stats.SPY"]})
@example({"op": "subscribe", "id": 1, "channels": ["stats.SPY"], "throttle_ms": 10**40})
@example({"op": "subscribe", "id": 2, "channels": ["stats.SPY"], "throttle_ms": 60_001})
@example({"op": "subscribe", "id": 3, "channels": ["stats.SPY"], "throttle_ms": 2**63})
@example(
    {"op": "subscribe", "id": 4, "channels": ["chain.SPY"],
     "resume": {"chain.SPY": {"epoch": "e", "seq": 2**64 + 1}}}
)  # fmt: skip
@example(
    {"op": "subscribe", "id": 5, "channels": ["chain.SPY"],
     "resume": {"chain.SPY": {"epoch": "e", "seq": 2**53}}}
)  # fmt: skip
@example(
    {"op": "subscribe", "id": 6, "channels": ["chain.SPY"],
     "resume": {"chain.SPY": {"epoch": "e", "seq": 10**30}}}
)  # fmt: skip
@example(
    {"op": "subscribe", "id": 7, "channels": ["chain.SPY"],
     "resume": {"chain.SPY": {"epoch": 5, "seq": 1}}}
)  # fmt: skip
@example({"op": "fly", "id": 2**60})
def test_hostile_numbers_in_every_field(obj: dict[str, Any]) -> None:
    """Huge, negative, fractional, bool numbers in id, throttle_ms, resume: ranges hold."""
    expected_outcome(obj)


@pytest.mark.parametrize(
    ("text", "id"),
    [
        ('{"op":"ping","id":9007199254740992}', None),
        ('{"op":"ping","id":' + "9" * 100 + "}", None),
        ('{"op":"ping","id":' + "9" * 5000 + "}", None),
        ('{"op":"ping","id":1e3}', None),
        ('{"op":"subscribe","id":11,"channels":[],"throttle_ms":' + "9" * 40 + "}", 11),
        ('{"op":"subscribe","id":12,"channels":[],"throttle_ms":60001}', 12),
        ('{"op":"subscribe","id":13,"channels":[],"throttle_ms":1.0}', 13),
        ('{"op":"subscribe","id":14,"channels":[],"throttle_ms":true}', 14),
        ('{"op":"subscribe","id":15,"channels":["chain.SPY"],'
         '"resume":{"chain.SPY":{"epoch":"e","seq":18446744073709551617}}}', 15),
        ('{"op":"subscribe","id":16,"channels":["chain.SPY"],'
         '"resume":{"chain.SPY":{"epoch":"e","seq":1e30}}}', 16),
        ('{"op":"subscribe","id":17,"channels":["chain.SPY"],'
         '"resume":{"chain.SPY":{"epoch":"e","seq":9007199254740992}}}', 17),
        ('{"op":"subscribe","id":18,"channels":["chain.SPY"],'
         '"resume":{"chain.SPY":{"epoch":"e","seq":-1}}}', 18),
    ],
)  # fmt: skip
def test_out_of_range_numbers_are_bad_requests(text: str, id: int | None) -> None:
    """Each documented bound, one past it: bad_request, id echoed or null (id out of range)."""
    out = check_decoded(text)
    assert isinstance(out, protocol.ProtocolError), f"{text[:120]} was accepted: {out!r}"
    assert out.code == "bad_request"
    assert out.id == id


def test_the_largest_in_range_values_are_accepted() -> None:
    """-(2^53-1) id, 2^53-1 resume seq and 60000 ms throttle are legal (only beyond is bad_request)."""
    req = protocol.decode_request(
        '{"op":"subscribe","id":-9007199254740991,"channels":["chain.SPY"],"throttle_ms":60000,'
        '"resume":{"chain.SPY":{"epoch":"e","seq":9007199254740991}}}'
    )
    assert isinstance(req, protocol.Subscribe)
    assert req.id == -MAX_ID
    assert req.throttle_ms == MAX_THROTTLE_MS
    assert req.resume["chain.SPY"].seq == MAX_SEQ


@pytest.mark.parametrize("kind", ["array", "object", "in-request", "mixed"])
@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_json_is_a_bad_request(kind: str, depth: int) -> None:
    """JSON nested thousands deep is bad_request (was: RecursionError, the connection died)."""
    try:
        out = check_decoded(nested(depth, kind))
    except RecursionError as exc:  # pragma: no cover - the bug this test is for
        pytest.fail(f"{kind} nested {depth} deep raised RecursionError: {exc}")
    if kind == "mixed":  # an unknown field of a ping: decoding it is allowed, not required
        assert isinstance(out, protocol.ProtocolError | protocol.Ping), out
    else:
        assert isinstance(out, protocol.ProtocolError), out
        assert out.code == "bad_request"


@FAST
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from(["array", "object", "mixed"]))
def test_any_depth_of_nesting_is_handled(depth: int, kind: str) -> None:
    """Any nesting depth: a request or a documented error, never RecursionError."""
    check_decoded(nested(depth, kind))


# -- parse_channel -------------------------------------------------------------------------

_U = r"[A-Z0-9.^/-]{1,12}"
_UNDERLYING = re.compile(_U, re.ASCII)
_VENUE = re.compile(r"[A-Z0-9._-]{1,40}", re.ASCII)
_OSI = re.compile(r"([A-Z0-9]{1,6})(\d{2})(\d{2})(\d{2})[CP](\d{8})", re.ASCII)
_DIGITS8 = re.compile(r"[0-9]{8}", re.ASCII)


def _real_date(yyyy: int, mm: int, dd: int) -> bool:
    try:
        date(yyyy, mm, dd)
    except ValueError:
        return False
    return True


def grammar_accepts(name: str) -> bool:
    """PROTOCOL.md "Channels", written independently of channels.py (ASCII only)."""
    if not name.isascii():
        return False
    kind, dot, rest = name.partition(".")
    if not dot or not rest:
        return False
    if kind in ("underlying", "stats"):
        return bool(_UNDERLYING.fullmatch(rest))
    if kind == "chain":
        head, dot, last = rest.rpartition(".")
        if dot and _DIGITS8.fullmatch(last):
            ok_date = _real_date(int(last[:4]), int(last[4:6]), int(last[6:]))
            return ok_date and bool(_UNDERLYING.fullmatch(head))
        return bool(_UNDERLYING.fullmatch(rest))
    if kind == "option":
        if "-" in rest:
            return bool(_VENUE.fullmatch(rest)) and bool(
                _UNDERLYING.fullmatch(rest.split("-", 1)[0])
            )
        m = _OSI.fullmatch(rest)
        return bool(m) and m is not None and _real_date(2000 + int(m[2]), int(m[3]), int(m[4]))
    return False


# Characters a hostile client slips into a name: non-ASCII digits and letters that
# Python's str methods and `\d` treat as digits/letters, zero-width and control characters.
TRICKY = (
    "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"  # fullwidth digits
    "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"  # Arabic-Indic digits
    "\u0966\u0967\u0968\u0969"  # Devanagari digits
    "\u00b9\u00b2\u00b3"  # superscripts (isdigit() is True)
    "\uff21\uff22\uff33\uff30\uff39"  # fullwidth letters
    "\u0391\u0392\u0393"  # Greek capitals that look Latin
    "\u0410\u0412\u0421"  # Cyrillic capitals that look Latin
    "\u00c0\u00c9"
    "\u200b\u200c\u200d\u2060\ufeff\u00a0\u202e"
    "\x00\t\n\r ."
    "\u01c5"  # titlecase letter
    "\ufb01"  # a ligature
)
name_alphabet = st.sampled_from(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.^/-_CP") + list(TRICKY))
prefixes = st.sampled_from(["chain.", "option.", "underlying.", "stats.", "", "CHAIN.", "chain"])
valid_names = st.sampled_from(
    [
        "chain.SPY", "chain.SPY.20261218", "chain.BRK.B", "chain.BRK.B.20251219",
        "chain.^SPX", "stats.SPY", "underlying.QQQ", "option.SPY251219C00650000",
        "option.BTC-26DEC25-100000-C", "chain.SPY.20240229",
    ]
)  # fmt: skip


@st.composite
def hostile_names(draw: st.DrawFn) -> str:
    """A valid name with characters replaced or inserted, or noise after a prefix."""
    if draw(st.booleans()):
        name = list(draw(valid_names))
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            i = draw(st.integers(min_value=0, max_value=len(name)))
            c = draw(name_alphabet)
            if draw(st.booleans()) and i < len(name):
                name[i] = c
            else:
                name.insert(i, c)
        return "".join(name)
    return draw(prefixes) + draw(st.text(name_alphabet, max_size=24))


def check_channel(name: str) -> Channel | None:
    try:
        ch = parse_channel(name)
    except InvalidChannel as exc:
        if not str(exc):
            pytest.fail(f"InvalidChannel for {name!r} without a message")
        return None
    assert name.isascii(), f"non-ASCII name {name!r} accepted as {ch!r}"
    assert grammar_accepts(name), f"{name!r} accepted as {ch!r}, outside the grammar"
    assert ch.name == name
    assert _UNDERLYING.fullmatch(ch.underlying), ch
    if ch.expiry is not None:
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", ch.expiry, re.ASCII), ch
        assert name.endswith("." + ch.expiry.replace("-", "")), ch
    if ch.kind is Kind.OPTION:
        assert ch.symbol is not None
        assert ch.symbol.isascii()
    return ch


@settings(max_examples=400, deadline=None)
@given(hostile_names())
@example("chain.SPY.\uff12\uff10\uff12\uff16\uff11\uff12\uff11\uff18")
@example("chain.SPY.\u0662\u0660\u0662\u0666\u0661\u0662\u0661\u0668")
@example("chain.SPY.2026\uff11218")
@example("chain.SPY\u200b")
@example("chain.SPY\u200b.20261218")
@example("chain.SPY.20261218\u200b")
@example("stats.\uff33\uff30\uff39")
@example(
    "option.SPY\uff12\uff15\uff11\uff12\uff11\uff19C\uff10\uff10\uff16\uff15\uff10\uff10\uff10\uff10"
)
@example("option.SPY251219C0065000\u0660")
@example("option.BTC-26DEC25-100000-C\u200b")
def test_hostile_channel_names_are_ascii_or_invalid(name: str) -> None:
    """Accepted names are ASCII and match the grammar; only InvalidChannel is raised."""
    check_channel(name)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_channel_or_invalid_channel(name: str) -> None:
    """Arbitrary text: a channel within the grammar, or InvalidChannel, nothing else."""
    check_channel(name)


@pytest.mark.parametrize(
    "digit",
    [
        "\uff12",
        "\u0662",
        "\u0968",
        "\u00b2",
        "\U0001d7d0",
        "\u07c2",
    ],  # fullwidth, Arabic-Indic, Devanagari, superscript, math, NKo
)
def test_a_non_ascii_digit_in_an_expiry_is_invalid(digit: str) -> None:
    """chain.SPY.2026121 + a fullwidth 8, and the like: invalid_channel (was: accepted as 2026-12-18)."""
    for position in range(8):
        expiry = list("20261218")
        expiry[position] = digit
        name = "chain.SPY." + "".join(expiry)
        with pytest.raises(InvalidChannel):
            parse_channel(name)


@pytest.mark.parametrize("name", ["chain.SPY", "stats.SPY", "chain.SPY.20261218"])
def test_valid_names_are_accepted(name: str) -> None:
    """The grammar's own examples parse (the properties above are not vacuous)."""
    assert check_channel(name) is not None


@FAST
@given(valid_names)
def test_every_valid_example_is_in_the_reference_grammar(name: str) -> None:
    """The reference grammar agrees with parse_channel on the protocol's examples."""
    assume(name != "chain.SPY.20240229" or _real_date(2024, 2, 29))
    assert grammar_accepts(name)
    assert check_channel(name) is not None
