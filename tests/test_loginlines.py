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

#: Arbitrary octets, values around the USER/PASS bound, and long values
#: (tokens used as passwords) whose PLAIN response nears the SASL bound.
values = st.one_of(
    st.binary(max_size=MAX_VALUE + 20),
    st.integers(MAX_VALUE - 3, MAX_VALUE + 3).map(lambda size: b"v" * size),
    st.integers(1900, 3100).map(lambda size: b"t" * size),
)


def clean(*values: bytes) -> bool:
    return all(b"\r" not in v and b"\n" not in v and b"\0" not in v for v in values)


def acceptable(*values: bytes) -> bool:
    """
    What a USER, PASS or APOP line may carry.
    """
    return clean(*values) and all(len(v) <= MAX_VALUE for v in values)


def plainAcceptable(authzid: bytes, authcid: bytes, password: bytes) -> bool:
    """
    What a PLAIN login may carry: clean values whose base64 response fits
    a SASL line with its CRLF.
    """
    size = len(authzid) + len(authcid) + len(password) + 2
    return clean(authzid, authcid, password) and 4 * -(-size // 3) + 2 <= MAX_SASL_LINE


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


def test_plainInitialResponseBound() -> None:
    """
    The longest PLAIN response sent with the command makes an AUTH PLAIN
    line of at most 255 octets with its CRLF; one octet more of password
    moves it after the challenge.
    """
    # 180 octets encode to 240 base64 characters: 11 + 240 + 2 = 253.
    fits = plainLogin(b"", b"alice", b"p" * (180 - 7))
    assert len(fits.lines) == 1
    assert len(fits.lines[0]) + 2 == 253
    over = plainLogin(b"", b"alice", b"p" * (181 - 7))
    assert over.lines[0] == b"AUTH PLAIN"
    assert base64.b64decode(over.lines[1]) == b"\0alice\0" + b"p" * (181 - 7)


def test_plainBoundIsTheSaslLineNotTheValue() -> None:
    """
    A password far over 248 octets (an application token) goes as PLAIN
    after the challenge; the bound is the response line: 6,141 octets of
    response encode to 8,188 characters (8,190 with CRLF), one octet more
    is refused with the reason.
    """
    token = plainLogin(b"", b"alice", b"t" * 1000)
    assert token.lines == (b"AUTH PLAIN", base64.b64encode(b"\0alice\0" + b"t" * 1000))
    longest = plainLogin(b"", b"alice", b"t" * (6141 - 7))
    assert len(longest.lines[1]) + 2 == 8190 <= MAX_SASL_LINE
    with pytest.raises(RefusedValue, match="does not fit in one SASL response line of 8192"):
        plainLogin(b"", b"alice", b"t" * (6142 - 7))
    # The USER/PASS translation of the same password is refused.
    with pytest.raises(RefusedValue, match="password is longer than 248 octets"):
        userPassLogin(b"alice", b"t" * 1000)


@given(authzid=values, authcid=values, password=values)
def test_plainCarriesExactlyTheValuesOrRefuses(
    authzid: bytes, authcid: bytes, password: bytes
) -> None:
    """
    For any values, a PLAIN login is refused exactly when a value holds
    CR, LF or NUL or the response would not fit a SASL line; otherwise its
    lines hold no CR, LF or NUL, the command line fits 255 octets, the
    response line 8192, and the upstream decodes exactly the three values.
    """
    try:
        commands = plainLogin(authzid, authcid, password)
    except RefusedValue:
        assert not plainAcceptable(authzid, authcid, password)
        return
    assert plainAcceptable(authzid, authcid, password)
    assert 1 <= len(commands.lines) <= 2
    for line in commands.lines:
        assert b"\r" not in line and b"\n" not in line and b"\0" not in line
        assert len(line) + 2 <= MAX_SASL_LINE
    token = commands.lines[-1].removeprefix(b"AUTH PLAIN ")
    assert base64.b64decode(token, validate=True).split(b"\0") == [authzid, authcid, password]
    assert all(len(line) + 2 <= 255 for line in commands.lines if line.startswith(b"AUTH"))
    assert (len(commands.lines) == 1) == (len(b"AUTH PLAIN " + token + b"\r\n") <= 255)


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
