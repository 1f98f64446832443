"""
Tests for popproxy._capabilities: an upstream's CAPA answer becomes a frozen
value with its lines by name and its SASL mechanisms, empty when CAPA was
refused.
"""

from __future__ import annotations

import dataclasses

import pytest

from popproxy._capabilities import UpstreamCapabilities, proxyCapabilities
from popproxy._framing import StatusLine

OK = StatusLine(b"+OK capability list follows")

#: (CAPA body, names announced, names not announced, SASL mechanisms).
ANSWERS = [
    (b"TOP\r\nUIDL\r\nUSER", {b"TOP", b"UIDL", b"USER"}, {b"SASL", b"STLS"}, set()),
    (b"SASL PLAIN LOGIN\r\nUSER", {b"SASL", b"USER"}, {b"TOP"}, {b"PLAIN", b"LOGIN"}),
    (b"sasl plain\r\nuser", {b"SASL", b"USER"}, set(), {b"PLAIN"}),
    (b"SASL\r\nTOP", {b"SASL", b"TOP"}, set(), set()),
    (b"SASL CRAM-MD5\r\nSASL PLAIN", {b"SASL"}, set(), {b"PLAIN"}),  # the last one counts
    (b"..leading dot\r\nUSER", {b".LEADING", b"USER"}, set(), set()),  # unstuffed
    (b"\r\nUSER\r\n\r\n", {b"USER"}, {b""}, set()),  # empty lines are not capabilities
    (b"", set(), {b"USER"}, set()),
]


@pytest.mark.parametrize(("body", "present", "absent", "mechanisms"), ANSWERS)
def test_fromResponse(
    body: bytes, present: set[bytes], absent: set[bytes], mechanisms: set[bytes]
) -> None:
    """
    The answer's capabilities are found by upper-case name and its SASL
    mechanisms are listed in upper case.
    """
    capabilities = UpstreamCapabilities.fromResponse(OK, body)
    assert all(name in capabilities for name in present)
    assert not any(name in capabilities for name in absent)
    assert capabilities.mechanisms == mechanisms
    assert capabilities.offersPlain() == (b"PLAIN" in mechanisms)


def test_refused() -> None:
    """
    An upstream that refused CAPA announced nothing, whatever followed.
    """
    capabilities = UpstreamCapabilities.fromResponse(StatusLine(b"-ERR no"), b"USER")
    assert capabilities == UpstreamCapabilities()
    assert b"USER" not in capabilities
    assert not capabilities.offersPlain()


def test_lineAsSent() -> None:
    """
    A capability's line comes back as the upstream sent it, arguments and
    case included, for relaying verbatim.
    """
    capabilities = UpstreamCapabilities.fromResponse(OK, b"Login-Delay 900 USER\r\nEXPIRE 30")
    assert capabilities.line(b"LOGIN-DELAY") == b"Login-Delay 900 USER"
    assert capabilities.line(b"EXPIRE") == b"EXPIRE 30"
    assert capabilities.line(b"TOP") is None
    assert capabilities.lines == (b"Login-Delay 900 USER", b"EXPIRE 30")


def test_frozen() -> None:
    """
    The value cannot change once parsed, and equal answers give equal values.
    """
    capabilities = UpstreamCapabilities.fromLines((b"USER",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        capabilities.mechanisms = frozenset({b"PLAIN"})  # type: ignore[misc]
    assert capabilities == UpstreamCapabilities.fromLines((b"USER",))
    assert hash(capabilities) == hash(UpstreamCapabilities.fromLines((b"USER",)))


def proxyAnswer(
    upstream: UpstreamCapabilities | None,
    loginsAllowed: bool = True,
    offerSTLS: bool = False,
) -> list[bytes]:
    """
    The proxy's CAPA answer as lines, after checking its framing.
    """
    answer = proxyCapabilities(
        upstream,
        mechanisms=(b"PLAIN", b"LOGIN"),
        loginsAllowed=loginsAllowed,
        offerSTLS=offerSTLS,
        implementation=b"popproxy 0.1",
    )
    assert answer.startswith(b"+OK capability list follows\r\n")
    assert answer.endswith(b"\r\n.\r\n")
    return answer.split(b"\r\n")[1:-2]


#: The lines every proxy CAPA answer ends with.
TAIL = [b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE", b"IMPLEMENTATION popproxy 0.1"]


def test_proxyCapabilitiesBeforeLogin() -> None:
    """
    Before the upstream is known, TOP and UIDL are announced, with the
    proxy's own USER and SASL mechanisms, exactly in this form.
    """
    answer = proxyCapabilities(
        None,
        mechanisms=(b"PLAIN", b"LOGIN"),
        loginsAllowed=True,
        offerSTLS=False,
        implementation=b"popproxy 0.1",
    )
    assert answer == (
        b"+OK capability list follows\r\n"
        b"TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\n"
        b"PIPELINING\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nIMPLEMENTATION popproxy 0.1\r\n"
        b".\r\n"
    )


@pytest.mark.parametrize(
    ("upstream", "relayed"),
    [
        ((b"TOP", b"UIDL", b"USER"), [b"TOP", b"UIDL"]),
        ((b"uidl", b"USER"), [b"UIDL"]),
        ((b"USER",), []),
        ((), []),
    ],
)
def test_proxyCapabilitiesTopUidlAsUpstream(
    upstream: tuple[bytes, ...], relayed: list[bytes]
) -> None:
    """
    Once the upstream's capabilities are known, TOP and UIDL are announced
    only if it lists them.
    """
    lines = proxyAnswer(UpstreamCapabilities.fromLines(upstream))
    assert lines == relayed + [b"USER", b"SASL PLAIN LOGIN"] + TAIL


def test_proxyCapabilitiesPolicyRelayedVerbatim() -> None:
    """
    The upstream's LOGIN-DELAY and EXPIRE lines reach the client as the
    upstream wrote them; its own SASL, STLS, USER and other extensions do
    not (the proxy answers those itself).
    """
    upstream = UpstreamCapabilities.fromLines(
        (
            b"TOP",
            b"Login-Delay 900 USER",
            b"EXPIRE NEVER",
            b"SASL CRAM-MD5 GSSAPI",
            b"STLS",
            b"X-SECRET-EXTENSION",
        )
    )
    lines = proxyAnswer(upstream)
    assert (
        lines
        == [b"TOP", b"Login-Delay 900 USER", b"EXPIRE NEVER", b"USER"]
        + [b"SASL PLAIN LOGIN"]
        + TAIL
    )


def test_proxyCapabilitiesLoginsNotAllowed() -> None:
    """
    When logins need TLS first, neither USER nor SASL is announced, and
    STLS is, if offered.
    """
    assert (
        proxyAnswer(None, loginsAllowed=False, offerSTLS=True)
        == [
            b"TOP",
            b"UIDL",
            b"STLS",
        ]
        + TAIL
    )
    assert proxyAnswer(None, loginsAllowed=False) == [b"TOP", b"UIDL"] + TAIL


def test_proxyCapabilitiesSTLSOnlyWhenOffered() -> None:
    """
    STLS is announced exactly when the proxy offers it, whatever the
    upstream says about its own.
    """
    upstream = UpstreamCapabilities.fromLines((b"STLS", b"TOP"))
    assert b"STLS" not in proxyAnswer(upstream)
    assert (
        proxyAnswer(None, offerSTLS=True)
        == [
            b"TOP",
            b"UIDL",
            b"USER",
            b"SASL PLAIN LOGIN",
            b"STLS",
        ]
        + TAIL
    )
