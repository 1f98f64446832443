"""
Tests for popproxy._capabilities: an upstream's CAPA answer becomes a frozen
value with its lines by name and its SASL mechanisms, empty when CAPA was
refused.
"""

from __future__ import annotations

import dataclasses

import pytest

from popproxy._capabilities import UpstreamCapabilities
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
