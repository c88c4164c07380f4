"""Tests of the settings object."""

from __future__ import annotations

import pytest

from optionsfeed.config import Settings
from optionsfeed.errors import ConfigError


def test_defaults() -> None:
    """No flags and no environment give the documented defaults."""
    s = Settings.load({}, {})
    assert s.port == 8000
    assert s.rate == 2000.0
    assert s.broker_url == "memory://"
    assert s.underlyings == ("SPY", "QQQ", "AAPL", "TSLA", "NVDA")


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
