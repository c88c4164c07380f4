"""Tests of the settings object."""

from __future__ import annotations

import pytest

from optionsfeed.config import SOURCE_UNDERLYINGS, Settings
from optionsfeed.errors import ConfigError
from optionsfeed.sources.sim.universe import DEFAULT_UNDERLYINGS


def test_defaults() -> None:
    """No flags and no environment give the documented defaults."""
    s = Settings.load({}, {})
    assert s.port == 8000
    assert s.rate == 2000.0
    assert s.broker_url == "memory://"
    assert s.underlyings == ()
    assert s.underlyings_for() == ("SPY", "QQQ", "AAPL", "TSLA", "NVDA")


def test_each_source_has_its_default_underlyings() -> None:
    """Deribit streams BTC and ETH unless told otherwise; given underlyings win."""
    assert Settings.load({"source": "deribit"}, {}).underlyings_for() == ("BTC", "ETH")
    assert Settings.load({"source": "massive"}, {}).underlyings_for() == ("SPY",)
    given = Settings.load({"source": "deribit", "underlyings": "eth"}, {})
    assert given.underlyings_for() == ("ETH",)


def test_sim_defaults_are_the_simulators_known_underlyings() -> None:
    """The simulator streams by default exactly the underlyings it has parameters for."""
    assert SOURCE_UNDERLYINGS["sim"] == DEFAULT_UNDERLYINGS


def test_api_key_is_never_shown() -> None:
    """The Massive key comes from the environment and stays out of the settings' repr."""
    s = Settings.load({}, {"OPTIONSFEED_MASSIVE_API_KEY": "sekret-123"})
    assert s.massive_api_key == "sekret-123"
    assert "sekret-123" not in repr(s)


def test_flags_override_environment() -> None:
    """A flag beats its OPTIONSFEED_* variable, which beats the default."""
    env = {"OPTIONSFEED_RATE": "5000", "OPTIONSFEED_PORT": "9000", "PATH": "/bin"}
    s = Settings.load({"rate": "7000", "port": None}, env)
    assert s.rate == 7000.0
    assert s.port == 9000


def test_underlyings_are_parsed() -> None:
    """Underlyings are comma-separated, upper-cased and validated."""
    s = Settings.load({"underlyings": "spy, brk.b,^SPX"}, {})
    assert s.underlyings == ("SPY", "BRK.B", "^SPX")


@pytest.mark.parametrize(
    ("flags", "env", "needle"),
    [
        ({}, {"OPTIONSFEED_RAET": "5"}, "unknown setting OPTIONSFEED_RAET"),
        ({"rate": "-1"}, {}, "--rate"),
        ({"rate": "fast"}, {}, "--rate"),
        ({"port": "70000"}, {}, "--port"),
        ({"redis": "http://x"}, {}, "--redis"),
        ({"underlyings": "SPY,SPY"}, {}, "twice"),
        ({"underlyings": "THIS-IS-TOO-LONG"}, {}, "underlying"),
        ({"nope": "1"}, {}, "unknown setting --nope"),
    ],
)
def test_bad_settings_are_errors(
    flags: dict[str, str | None], env: dict[str, str], needle: str
) -> None:
    """Unknown settings and bad values raise ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=needle):
        Settings.load(flags, env)


def test_the_rest_ratio_reaches_the_venue_sources_feed_buffer() -> None:
    """--rest-ratio (off by default) is checked and handed to either venue's buffer."""
    from optionsfeed.sources.deribit.source import DeribitSource
    from optionsfeed.sources.factory import open_source
    from optionsfeed.sources.massive.source import MassiveSource

    assert Settings.load({}, {}).rest_ratio == 0.0
    with pytest.raises(ConfigError, match="OPTIONSFEED_REST_RATIO"):
        Settings.load({}, {"OPTIONSFEED_REST_RATIO": "-1"})
    deribit = open_source(Settings.load({"source": "deribit", "rest_ratio": "1"}, {}))
    assert isinstance(deribit, DeribitSource)
    assert deribit.buffer.rest_ratio == 1.0
    env = {"OPTIONSFEED_MASSIVE_API_KEY": "k", "OPTIONSFEED_REST_RATIO": "0.5"}
    massive = open_source(Settings.load({"source": "massive"}, env))
    assert isinstance(massive, MassiveSource)
    assert massive.rest_ratio == 0.5
