"""
Tests for the C{[limits.logins]} reader of popproxy._config: throttling is
on with documented defaults when the table (or the whole C{[limits]}
section) is absent, every key is read, and a wrong key or value stops
start-up with one line naming it.
"""

from __future__ import annotations

import pytest

from popproxy._config import ConfigError, parseConfig
from popproxy._loginthrottle import ThrottleSettings


def test_onByDefault() -> None:
    """
    A configuration without [limits] throttles logins with the defaults
    docs/limits.md lists.
    """
    settings = parseConfig("").loginThrottle
    assert settings == ThrottleSettings()
    assert settings.enabled
    assert (settings.delay, settings.maxDelay, settings.blockAfter) == (1.0, 15.0, 30)
    assert (settings.window, settings.blockFor, settings.ipv6Prefix) == (600.0, 900.0, 64)
    assert settings.inFlight == 2


def test_everyKey() -> None:
    """
    Every key of [limits.logins] is read.
    """
    settings = parseConfig(
        "[limits.logins]\nenabled = false\ndelay = 0.5\nmax_delay = 30\nwindow = 60\n"
        "block_after = 10\nblock_for = 3600\nnew_account_weight = 3\nipv6_prefix = 56\n"
        "remember_success = 86400\nin_flight = 4\n"
    ).loginThrottle
    assert settings == ThrottleSettings(
        enabled=False,
        delay=0.5,
        maxDelay=30.0,
        window=60.0,
        blockAfter=10,
        blockFor=3600.0,
        newAccountWeight=3,
        ipv6Prefix=56,
        rememberSuccess=86400.0,
        inFlight=4,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits.logins]\nblock_afer = 3\n", r"\[limits.logins\] block_afer: unknown key"),
        ("[limits.logins]\nblock_after = 0\n", r"\[limits.logins\] block_after: must be at least"),
        ("[limits.logins]\nin_flight = 0\n", r"\[limits.logins\] in_flight: must be at least"),
        ("[limits.logins]\nipv6_prefix = 129\n", r"\[limits.logins\] ipv6_prefix: must be at most"),
        ('[limits.logins]\ndelay = "1"\n', r"\[limits.logins\] delay: must be a number"),
        ("[limits.logins]\nmax_delay = inf\n", r"\[limits.logins\] max_delay: must be a finite"),
    ],
)
def test_mistakesNamed(text: str, message: str) -> None:
    """
    A wrong key or value is one error naming the table and the key.
    """
    with pytest.raises(ConfigError, match=message):
        parseConfig(text, "f.conf")
