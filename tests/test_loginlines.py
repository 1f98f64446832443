"""
Tests for popproxy._loginlines: the lines of a login carry each value as
one value of one line, or the value is refused.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy._loginlines import (
    MAX_SASL_LINE,
    MAX_VALUE,
    RefusedValue,
    apopLogin,
    passLogin,
    plainLogin,
    userLogin,
    userPassLogin,
)

DIGEST = b"c4c9334bac560ecc979e58001b3e22fb"

values = st.binary(max_size=MAX_VALUE + 20)


def acceptable(*values: bytes) -> bool:
    return all(
        len(v) <= MAX_VALUE and b"\r" not in v and b"\n" not in v and b"\0" not in v for v in values
    )


def test_boundIsWhatFitsInAUserLine() -> None:
    """
    The longest accepted value makes a USER or PASS line of exactly 255
    octets with its CRLF (RFC 2449); one octet more is refused.
    """
    assert MAX_VALUE == 248
    assert len(userLogin(b"u" * MAX_VALUE).lines[0] + b"\r\n") == 255
    assert len(passLogin(b"p" * MAX_VALUE).lines[0] + b"\r\n") == 255
    with pytest.raises(RefusedValue, match="longer than 248 octets"):
        passLogin(b"p" * (MAX_VALUE + 1))


@pytest.mark.parametrize("octet", [b"\r", b"\n", b"\0"])
def test_controlCharactersRefused(octet: bytes) -> None:
    """
    CR, LF and NUL anywhere in any value are refused, with the value named.
    """
    with pytest.raises(RefusedValue, match="password contains a control character"):
        passLogin(b"pw" + octet + b"DELE 1")
    with pytest.raises(RefusedValue, match="user name contains"):
        userPassLogin(octet + b"alice", b"pw")
    with pytest.raises(RefusedValue, match="authorization identity contains"):
        plainLogin(b"boss" + octet, b"alice", b"pw")
    with pytest.raises(RefusedValue, match="user name contains"):
        apopLogin(b"mrose" + octet, DIGEST)


def test_plainInitialResponseOrAfterChallenge() -> None:
    """
    A PLAIN response that fits the 255 octet line goes as an initial
    response, a longer one after the challenge, alone on its line.
    """
    short = plainLogin(b"", b"alice", b"pw")
    assert short.lines == (b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw"),)
    fields = (b"a" * MAX_VALUE, b"b" * MAX_VALUE, b"c" * MAX_VALUE)
    long = plainLogin(*fields)
    assert long.lines[0] == b"AUTH PLAIN"
    assert base64.b64decode(long.lines[1]) == b"\0".join(fields)
    assert len(long.lines[1]) + 2 <= MAX_SASL_LINE


@given(authzid=values, authcid=values, password=values)
def test_plainCarriesExactlyTheValuesOrRefuses(
    authzid: bytes, authcid: bytes, password: bytes
) -> None:
    """
    For any values, a PLAIN login is refused exactly when a value is
    unacceptable; otherwise its lines hold no CR, LF or NUL, fit their
    bounds, and the upstream decodes exactly the three values.
    """
    try:
        commands = plainLogin(authzid, authcid, password)
    except RefusedValue:
        assert not acceptable(authzid, authcid, password)
        return
    assert acceptable(authzid, authcid, password)
    for line in commands.lines:
        assert b"\r" not in line and b"\n" not in line and b"\0" not in line
    token = commands.lines[-1].removeprefix(b"AUTH PLAIN ")
    assert base64.b64decode(token, validate=True).split(b"\0") == [authzid, authcid, password]
    assert all(len(line) + 2 <= 255 for line in commands.lines if line.startswith(b"AUTH"))


@given(name=values, password=values)
def test_userPassCarriesExactlyTheValuesOrRefuses(name: bytes, password: bytes) -> None:
    """
    For any values, USER/PASS is refused exactly when a value is
    unacceptable; otherwise it is two lines of at most 255 octets that
    carry the values unchanged.
    """
    try:
        commands = userPassLogin(name, password)
    except RefusedValue:
        assert not acceptable(name, password)
        return
    assert commands.lines == (b"USER " + name, b"PASS " + password)
    assert all(len(line) + 2 <= 255 for line in commands.lines)
