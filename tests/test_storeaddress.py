"""
Reading C{[limits] store} (popproxy/_storeaddress.py): "memory" or a redis:// URL with
credentials, database, key prefix and timeout; every mistake is a ValueError that never
quotes the password.
"""

from __future__ import annotations

import pytest

from popproxy._storeaddress import DEFAULT_PREFIX, DEFAULT_TIMEOUT, RedisAddress, parseStoreURL


@pytest.mark.parametrize("text", ["", "memory", "  memory "])
def test_memoryMeansTheProcessOwnCounters(text: str) -> None:
    """
    The default, and an explicit "memory", ask for no Redis at all.
    """
    assert parseStoreURL(text) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("redis://10.0.0.5", RedisAddress("10.0.0.5")),
        ("redis://redis.example:6380/3", RedisAddress("redis.example", 6380, 3)),
        ("redis://:s%40cret@127.0.0.1:7000/1", RedisAddress("127.0.0.1", 7000, 1, None, "s@cret")),
        ("redis://proxy:pw@[::1]:6379/0", RedisAddress("::1", 6379, 0, "proxy", "pw")),
        (
            "redis://h/2?prefix=site-a:&timeout=0.25",
            RedisAddress("h", 6379, 2, prefix="site-a:", timeout=0.25),
        ),
        (
            "redis://h?lease=5",
            RedisAddress("h", lease=5.0),
        ),
    ],
)
def test_redisURLs(text: str, expected: RedisAddress) -> None:
    """
    Host (names, IPv4, bracketed IPv6), port (6379 by default), database (0 by default),
    optional user and percent-encoded password, prefix and timeout parameters.
    """
    assert parseStoreURL(text) == expected


def test_defaults() -> None:
    """
    Keys start with "popproxy:" and a command may take half a second unless the URL says so.
    """
    address = parseStoreURL("redis://localhost")
    assert address is not None
    assert (address.prefix, address.timeout) == (DEFAULT_PREFIX, DEFAULT_TIMEOUT)
    assert (DEFAULT_PREFIX, DEFAULT_TIMEOUT) == ("popproxy:", 0.5)


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("rediss://h", "memory"),
        ("redis-sentinel://h", "memory"),
        ("localhost:6379", "memory"),
        ("redis://", "no host"),
        ("redis://:topsecret@h:99999", "port"),
        ("redis://:topsecret@h:0", "port"),
        ("redis://:topsecret@h/x", "database"),
        ("redis://:topsecret@h/0?db=2", "unknown"),
        ("redis://:topsecret@h/0?timeout=0", "positive"),
        ("redis://:topsecret@h/0?timeout=soon", "seconds"),
        ("redis://:topsecret@h/0?lease=-1", "lease must be positive"),
    ],
)
def test_mistakesAreRefusedWithoutQuotingThePassword(text: str, complaint: str) -> None:
    """
    TLS, Sentinel and bare host:port are not supported; bad ports, databases, parameters and
    timeouts are named; the password is never in the message.
    """
    with pytest.raises(ValueError) as raised:
        parseStoreURL(text)
    assert complaint in str(raised.value)
    assert "topsecret" not in str(raised.value)


def test_thePasswordIsNeverShown() -> None:
    """
    Neither repr() nor describe() (both may reach a log) shows the password.
    """
    address = parseStoreURL("redis://u:topsecret@[2001:db8::1]:6390/4")
    assert address is not None
    assert "topsecret" not in repr(address)
    assert address.describe() == "redis://[2001:db8::1]:6390/4"
    assert address.isLiteral() and not RedisAddress("redis.example").isLiteral()
