"""
Tests for popproxy._sasl: the server side of AUTH PLAIN and AUTH LOGIN,
fed client responses without I/O, answers each with the challenge or -ERR
to send, or ends with the decoded credentials; C{*} cancels and C{=} is the
empty response (RFC 5034).
"""

from __future__ import annotations

import base64
import gc
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy._sasl import (
    CANCELLED,
    EMPTY_NAME,
    INVALID_BASE64,
    MALFORMED_PLAIN,
    TOO_LONG,
    UNSUPPORTED,
    Challenge,
    Credentials,
    SaslServer,
    SaslStep,
    decodeResponse,
)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


USERNAME = Challenge(b"+ VXNlcm5hbWU6")
PASSWORD = Challenge(b"+ UGFzc3dvcmQ6")
EMPTY = Challenge(b"+ ")

#: (AUTH arguments, client responses, every step the server answers).
EXCHANGES = [
    # PLAIN with an initial response, with and without authorization identity.
    (b"PLAIN " + b64(b"\0ann\0pw"), [], [Credentials(b"", b"ann", b"pw")]),
    (b"plain " + b64(b"boss\0ann\0pw"), [], [Credentials(b"boss", b"ann", b"pw")]),
    (b"PLAIN " + b64(b"\0ann\0"), [], [Credentials(b"", b"ann", b"")]),
    # PLAIN after an empty challenge.
    (b"PLAIN", [b64(b"\0ann\0pw")], [EMPTY, Credentials(b"", b"ann", b"pw")]),
    (b"PLAIN", [b"*"], [EMPTY, CANCELLED]),
    (b"PLAIN", [b"="], [EMPTY, MALFORMED_PLAIN]),
    (b"PLAIN", [b"not base64!"], [EMPTY, INVALID_BASE64]),
    (b"PLAIN", [b64(b"ann\0pw")], [EMPTY, MALFORMED_PLAIN]),
    (b"PLAIN", [b64(b"\0\0pw")], [EMPTY, MALFORMED_PLAIN]),
    (b"PLAIN", [b64(b"a\0b\0c\0d")], [EMPTY, MALFORMED_PLAIN]),
    (b"PLAIN =", [], [MALFORMED_PLAIN]),
    (b"PLAIN *", [], [INVALID_BASE64]),  # cancelling needs a challenge first
    (b"PLAIN abc", [], [INVALID_BASE64]),  # bad padding
    # LOGIN: name then password, each after its challenge or initially.
    (b"LOGIN", [b64(b"ann"), b64(b"pw")], [USERNAME, PASSWORD, Credentials(b"", b"ann", b"pw")]),
    (b"login " + b64(b"ann"), [b64(b"pw")], [PASSWORD, Credentials(b"", b"ann", b"pw")]),
    (b"LOGIN", [b64(b"ann"), b"="], [USERNAME, PASSWORD, Credentials(b"", b"ann", b"")]),
    (b"LOGIN", [b"*"], [USERNAME, CANCELLED]),
    (b"LOGIN", [b64(b"ann"), b"*"], [USERNAME, PASSWORD, CANCELLED]),
    (b"LOGIN", [b"="], [USERNAME, EMPTY_NAME]),
    (b"LOGIN =", [], [EMPTY_NAME]),
    (b"LOGIN", [b"!!"], [USERNAME, INVALID_BASE64]),
    (b"LOGIN", [b64(b"ann"), b"!!"], [USERNAME, PASSWORD, INVALID_BASE64]),
    # Other mechanisms are not offered.
    (b"CRAM-MD5", [], [UNSUPPORTED]),
    (b"XOAUTH2 " + b64(b"token"), [], [UNSUPPORTED]),
]


@pytest.mark.parametrize(("arguments", "responses", "expected"), EXCHANGES)
def test_exchange(arguments: bytes, responses: list[bytes], expected: list[SaslStep]) -> None:
    """
    Each exchange answers the AUTH command and every response as listed,
    and waits for a response exactly while a challenge is outstanding.
    """
    server = SaslServer()
    steps = [server.start(arguments)]
    for response in responses:
        assert server.waiting
        steps.append(server.feed(response))
    assert steps == expected
    assert server.waiting == isinstance(expected[-1], Challenge)


@pytest.mark.parametrize("arguments", [b"PLAIN", b"LOGIN", b"LOGIN " + b64(b"ann")])
def test_tooLong(arguments: bytes) -> None:
    """
    A response too long for a SASL line ends the exchange with -ERR [AUTH];
    the next AUTH starts afresh.
    """
    server = SaslServer()
    server.start(arguments)
    assert server.tooLong() == TOO_LONG
    assert not server.waiting
    assert server.start(b"PLAIN " + b64(b"\0bob\0pw")) == Credentials(b"", b"bob", b"pw")


def test_reset() -> None:
    """
    A reset forgets the exchange in progress: nothing waits for a response.
    """
    server = SaslServer()
    server.start(b"LOGIN " + b64(b"ann"))
    server.reset()
    assert not server.waiting


def test_noSelfReference() -> None:
    """
    A server waiting for a response is freed as soon as it is dropped, with
    no cycle left for the collector.
    """
    server = SaslServer()
    server.start(b"LOGIN " + b64(b"ann"))
    reference = weakref.ref(server)
    gc.disable()
    try:
        del server
        assert reference() is None
    finally:
        gc.enable()


def test_feedWithoutChallenge() -> None:
    """
    Feeding a response no challenge asked for is a programming error.
    """
    with pytest.raises(RuntimeError):
        SaslServer().feed(b"=")


def test_passwordNotInRepr() -> None:
    """
    The credentials' repr, which may reach a log, shows no password.
    """
    assert b"secret" not in repr(Credentials(b"", b"ann", b"secret")).encode()


@given(st.binary())
def test_decodeRoundTrip(value: bytes) -> None:
    """
    Every value sent base64-encoded (or as C{=} when empty) decodes to
    itself, CR, LF and NUL included: checking them is for the login lines.
    """
    assert decodeResponse(b64(value) if value else b"=") == value


@given(st.binary(min_size=1).filter(lambda v: b"\0" not in v))
def test_loginKeepsAnyName(name: bytes) -> None:
    """
    LOGIN hands on whatever name the client sent, unchecked.
    """
    server = SaslServer()
    server.start(b"LOGIN " + b64(name))
    assert server.feed(b64(b"pw")) == Credentials(b"", name, b"pw")
