"""
Tests for popproxy._proxyheader: the sans-IO PROXY v1/v2 parser, the
wrapper that holds a session back until the header is complete (over
in-memory transports, with a real ClientSession), the haproxy: listener in
_assembly.serviceFromConfig, and one end-to-end run of twistd behind a PROXY
header sent over a real socket.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from popproxy._assembly import Listener, serviceFromConfig
from popproxy._config import Config
from popproxy._listenerfactory import ListenerFactory
from popproxy._proxyheader import (
    HEADER_TIMEOUT,
    V2_SIGNATURE,
    InvalidProxyHeader,
    ProxyHeader,
    ProxyHeaderFactory,
    ProxyHeaderParser,
    ProxyHeaderWrapper,
    ProxyTLS,
)
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._routing import Router
from popproxy._session import ClientSession, SessionFactory, SessionSettings
from popproxy._tls import UpstreamTarget
from popproxy._upstream import UpstreamConnection
from tests.peers.proxy import ProxyProcess, twistdCommand
from tests.peers.rawpop3 import dotStuff
from tests.sessionharness import ClosingTransport, FakeUpstream

# Header builders (test side: written from the specification, not the parser)

V1_TCP4 = b"PROXY TCP4 203.0.113.7 192.0.2.10 51234 110\r\n"
V1_TCP6 = b"PROXY TCP6 2001:DB8:0:0::7 2001:db8::a 51234 110\r\n"
LOAD_BALANCER = IPv4Address("TCP", "10.0.0.2", 33000)
LISTENER = IPv4Address("TCP", "10.0.0.1", 110)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def v2(command: int, familyProtocol: int, block: bytes, version: int = 2) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, familyProtocol])
        + struct.pack("!H", len(block))
        + block
    )


def v2TCP4(source: str, destination: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = (
        ipaddress.IPv4Address(source).packed
        + ipaddress.IPv4Address(destination).packed
        + struct.pack("!HH", sport, dport)
    )
    return v2(1, 0x11, block + tlvs)


def v2TCP6(source: str, destination: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = (
        ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address(destination).packed
        + struct.pack("!HH", sport, dport)
    )
    return v2(1, 0x21, block + tlvs)


PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS = 0x01, 0x02, 0x04


def sslTLV(client: int, verify: int = 0, subTLVs: bytes = b"") -> bytes:
    """
    A PP2_TYPE_SSL TLV: client flags, verify result, sub-TLVs.
    """
    return tlv(0x20, struct.pack("!BI", client, verify) + subTLVs)


SOME_TLVS = tlv(0x01, b"pop3") + tlv(0x02, b"mail.example.org") + tlv(0x04, b"") + tlv(0x05, b"x")

VALID = {
    "v1 TCP4": (
        V1_TCP4,
        ProxyHeader(
            1, IPv4Address("TCP", "203.0.113.7", 51234), IPv4Address("TCP", "192.0.2.10", 110)
        ),
    ),
    "v1 TCP6": (
        V1_TCP6,
        ProxyHeader(
            1, IPv6Address("TCP", "2001:db8::7", 51234), IPv6Address("TCP", "2001:db8::a", 110)
        ),
    ),
    "v1 UNKNOWN": (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None)),
    "v1 UNKNOWN with addresses": (
        b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n",
        ProxyHeader(1, None, None),
    ),
    "v2 TCP4 with TLVs": (
        v2TCP4("203.0.113.7", "192.0.2.10", 51234, 110, SOME_TLVS),
        ProxyHeader(
            2, IPv4Address("TCP", "203.0.113.7", 51234), IPv4Address("TCP", "192.0.2.10", 110)
        ),
    ),
    "v2 TCP6 with TLVs": (
        v2TCP6("2001:db8::7", "2001:db8::a", 0, 65535, SOME_TLVS),
        ProxyHeader(
            2, IPv6Address("TCP", "2001:db8::7", 0), IPv6Address("TCP", "2001:db8::a", 65535)
        ),
    ),
    "v2 LOCAL": (
        v2(0, 0x11, b"\x00" * 12 + b"ignored"),
        ProxyHeader(2, None, None, local=True),
    ),
    "v2 LOCAL UNSPEC": (v2(0, 0x00, b""), ProxyHeader(2, None, None, local=True)),
    "v2 PROXY UNSPEC": (v2(1, 0x00, b"whatever"), ProxyHeader(2, None, None)),
}


# The parser


@pytest.mark.parametrize("name", sorted(VALID))
def test_parsesValidHeaders(name: str) -> None:
    """
    Each kind of valid header parses in one feed to the expected frozen
    value, and the bytes after it are handed back untouched.
    """
    data, expected = VALID[name]
    header, remaining = ProxyHeaderParser().feed(data + b"CAPA\r\n\x00\xff")
    assert header == expected
    assert remaining == b"CAPA\r\n\x00\xff"


@pytest.mark.parametrize("name", sorted(VALID))
def test_byteByByte(name: str) -> None:
    """
    Fed one byte at a time, the parser reports nothing until the last byte
    of the header, then the same header; short first reads (under the 8 or
    16 bytes Twisted's parser insists on) are not refused.
    """
    data, expected = VALID[name]
    parser = ProxyHeaderParser()
    for index in range(len(data) - 1):
        assert parser.feed(data[index : index + 1]) == (None, b"")
    assert parser.feed(data[-1:]) == (expected, b"")


def test_headerIsFrozen() -> None:
    """
    The parsed header is an immutable value.
    """
    header, _ = ProxyHeaderParser().feed(V1_TCP4)
    assert header is not None
    with pytest.raises(AttributeError):
        header.source = None  # type: ignore[misc]


INVALID = {
    "not a PROXY header": b"USER alice\r\n",
    "lower-case proxy": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 unknown protocol": b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 missing port": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "v1 extra field": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    "v1 double space": b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 no protocol": b"PROXY \r\n",
    "v1 bad IPv4": b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
    "v1 IPv4 leading zero": b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
    "v1 IPv6 in TCP4": b"PROXY TCP4 ::1 ::2 1 2\r\n",
    "v1 IPv4 in TCP6": b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 IPv6 scope": b"PROXY TCP6 fe80::1%eth0 ::2 1 2\r\n",
    "v1 port too big": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "v1 signed port": b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    "v1 non-ASCII": b"PROXY TCP4 1.2.3.\xb4 5.6.7.8 1 2\r\n",
    "v1 bare LF": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "v1 no CRLF within 107 bytes": b"PROXY UNKNOWN " + b"x" * 100,
    "v2 bad signature": b"\r\n\r\n\x00\r\nQUIT\r" + b"\x21\x11\x00\x00",
    "v2 version 1": v2(1, 0x11, b"\x00" * 12, version=1),
    "v2 version 3": v2(1, 0x11, b"\x00" * 12, version=3),
    "v2 unknown command": v2(2, 0x11, b"\x00" * 12),
    "v2 UDP over IPv4": v2(1, 0x12, b"\x00" * 12),
    "v2 UNIX stream": v2(1, 0x31, b"\x00" * 216),
    "v2 unknown family": v2(1, 0x41, b"\x00" * 12),
    "v2 TCP4 too short": v2(1, 0x11, b"\x00" * 11),
    "v2 TCP6 too short": v2(1, 0x21, b"\x00" * 35),
    "v2 truncated TLV": v2TCP4("1.2.3.4", "5.6.7.8", 1, 2, b"\x01\x00"),
    "v2 TLV past the end": v2TCP4("1.2.3.4", "5.6.7.8", 1, 2, b"\x01\x00\x05abc"),
    "v2 over the length cap": V2_SIGNATURE + b"\x21\x11\x10\x01",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalidHeaders(name: str) -> None:
    """
    Malformed, unsupported or oversized headers raise InvalidProxyHeader
    with a message, and the parser keeps refusing afterwards.
    """
    parser = ProxyHeaderParser()
    with pytest.raises(InvalidProxyHeader) as raised:
        parser.feed(INVALID[name] + b"CAPA\r\n")
    assert str(raised.value)
    with pytest.raises(InvalidProxyHeader):
        parser.feed(b"PROXY UNKNOWN\r\n")


@pytest.mark.parametrize(
    "start",
    [b"G", b"PROXX", b"\r\n\r\n\x00\r\nQ\x00", V2_SIGNATURE + b"\x11", V2_SIGNATURE + b"\x23"],
)
def test_invalidDetectedEarly(start: bytes) -> None:
    """
    A wrong first byte, prefix, signature, version or command is refused as
    soon as it arrives, without waiting for the rest of the header.
    """
    with pytest.raises(InvalidProxyHeader):
        ProxyHeaderParser().feed(start)


def test_lengthCapCheckedBeforeBuffering() -> None:
    """
    A v2 length over the cap is refused at byte 16, before any of the
    block is buffered; the cap is configurable.
    """
    with pytest.raises(InvalidProxyHeader, match="over the limit"):
        ProxyHeaderParser().feed(V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 4097))
    header = v2TCP4("1.2.3.4", "5.6.7.8", 1, 2, tlv(0xEE, b"x" * 5000))
    assert ProxyHeaderParser(maxV2Length=8192).feed(header)[0] is not None
    with pytest.raises(InvalidProxyHeader):
        ProxyHeaderParser(maxV2Length=12).feed(header)


def test_v1LongestHeader() -> None:
    """
    A v1 header of exactly 107 bytes (the specification's maximum) is
    accepted.
    """
    longest = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
    assert len(longest) == 107
    assert ProxyHeaderParser().feed(longest) == (ProxyHeader(1, None, None), b"")


def test_feedAfterHeader() -> None:
    """
    Once the header is complete the parser is done: feeding it more is a
    programming error, not application data.
    """
    parser = ProxyHeaderParser()
    parser.feed(V1_TCP4)
    with pytest.raises(RuntimeError):
        parser.feed(b"CAPA\r\n")


@st.composite
def validHeaders(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v2-4", "v2-6", "v1-unknown", "v2-local"]))
    port = st.integers(0, 65535)
    sport, dport = draw(port), draw(port)
    v4 = st.ip_addresses(v=4).map(str)
    v6 = st.ip_addresses(v=6).map(str)
    if kind == "v1-unknown":
        return b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None)
    if kind == "v2-local":
        block = draw(st.binary(max_size=64))
        return v2(0, draw(st.integers(0, 255)), block), ProxyHeader(2, None, None, local=True)
    hosts = v4 if kind.endswith("4") else v6
    source, destination = draw(hosts), draw(hosts)
    address = IPv4Address if kind.endswith("4") else IPv6Address
    expected = ProxyHeader(
        1 if kind.startswith("v1") else 2,
        address("TCP", source, sport),
        address("TCP", destination, dport),
    )
    if kind.startswith("v1"):
        line = f"PROXY TCP{kind[-1]} {source} {destination} {sport} {dport}\r\n"
        return line.encode("ascii"), expected
    # Any TLV but SSL (0x20), whose contents are checked (tested below).
    otherTypes = st.integers(0, 255).filter(lambda kind: kind != 0x20)
    tlvs = b"".join(
        tlv(tlvType, value)
        for tlvType, value in draw(
            st.lists(st.tuples(otherTypes, st.binary(max_size=40)), max_size=4)
        )
    )
    if draw(st.booleans()):
        version = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12))
        tlvs += sslTLV(PP2_CLIENT_SSL, 0, tlv(0x21, version.encode("ascii")))
        expected = replace(expected, tls=ProxyTLS(PP2_CLIENT_SSL, 0, version))
    build = v2TCP4 if kind == "v2-4" else v2TCP6
    return build(source, destination, sport, dport, tlvs), expected


@given(
    validHeaders(),
    st.binary(max_size=64),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_anySplitSameResult(
    valid: tuple[bytes, ProxyHeader], payload: bytes, cuts: list[int]
) -> None:
    """
    However a valid header plus the bytes after it are split into reads,
    the parser yields the same header once, at the read that completes it,
    and the payload comes back whole (from that read on).
    """
    data, expected = valid
    stream = data + payload
    points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    parser = ProxyHeaderParser()
    headers: list[ProxyHeader] = []
    after = b""
    for start, end in zip(points, points[1:], strict=False):
        chunk = stream[start:end]
        if headers:
            after += chunk
            continue
        header, remaining = parser.feed(chunk)
        if header is None:
            assert remaining == b""
        else:
            headers.append(header)
            after += remaining
    assert headers == [expected]
    assert after == payload


# The SSL TLV (PP2_TYPE_SSL, 0x20)

TLS13 = tlv(0x21, b"TLSv1.3")
CIPHER = tlv(0x23, b"TLS_AES_256_GCM_SHA384")

SSL_VALID: dict[str, tuple[bytes, ProxyTLS | None]] = {
    # What HAProxy's send-proxy-v2-ssl sends for a TLS client.
    "TLS with version": (sslTLV(PP2_CLIENT_SSL, 0, TLS13), ProxyTLS(1, 0, "TLSv1.3")),
    "TLS among other TLVs": (
        tlv(0x01, b"pop3") + sslTLV(PP2_CLIENT_SSL, 0, TLS13 + CIPHER) + tlv(0x05, b"id"),
        ProxyTLS(1, 0, "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ),
    "TLS with verified client certificate": (
        sslTLV(0x07, 0, TLS13 + tlv(0x22, b"caf\xc3\xa9 \x00") + CIPHER),
        ProxyTLS(7, 0, "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ),
    "TLS, certificate not verified": (sslTLV(0x05, 18), ProxyTLS(5, 18)),
    # The specification's reading: verify is non-zero without a certificate.
    "TLS, no certificate, verify non-zero": (sslTLV(PP2_CLIENT_SSL, 1), ProxyTLS(1, 1)),
    "TLS with unknown flag bits": (sslTLV(0x81), ProxyTLS(0x81, 0)),
    # HAProxy sends the TLV for plain-text clients too, with no flag set.
    "plain client": (sslTLV(0), ProxyTLS(0, 0)),
    "plain client, verify non-zero": (sslTLV(0, 1), ProxyTLS(0, 1)),
    "no SSL TLV": (tlv(0x01, b"pop3"), None),
}


@pytest.mark.parametrize("name", sorted(SSL_VALID))
def test_sslTLVParsed(name: str) -> None:
    """
    A v2 header's SSL TLV becomes a frozen ProxyTLS on the header, the same
    whether the header arrives in one read or byte by byte; C{encrypted}
    is the PP2_CLIENT_SSL flag.
    """
    tlvs, expected = SSL_VALID[name]
    data = v2TCP4("203.0.113.7", "127.0.0.1", 51234, 110, tlvs)
    header, remaining = ProxyHeaderParser().feed(data + b"CAPA\r\n")
    assert header is not None and remaining == b"CAPA\r\n"
    assert header.tls == expected
    if expected is not None:
        assert header.tls is not None
        assert header.tls.encrypted == bool(expected.client & PP2_CLIENT_SSL)
        with pytest.raises(AttributeError):
            header.tls.client = 1  # type: ignore[misc]
    parser = ProxyHeaderParser()
    for index in range(len(data) - 1):
        assert parser.feed(data[index : index + 1]) == (None, b"")
    assert parser.feed(data[-1:]) == (header, b"")


def test_sslTLVOnTCP6() -> None:
    """
    The SSL TLV is read after IPv6 addresses too.
    """
    data = v2TCP6("2001:db8::7", "::1", 1, 110, sslTLV(PP2_CLIENT_SSL, 0, TLS13))
    header, _ = ProxyHeaderParser().feed(data)
    assert header is not None and header.tls == ProxyTLS(1, 0, "TLSv1.3")


@pytest.mark.parametrize(
    "header",
    [
        v2(0, 0x11, b"\x00" * 12 + sslTLV(PP2_CLIENT_SSL)),
        v2(1, 0x00, sslTLV(PP2_CLIENT_SSL)),
    ],
    ids=["LOCAL", "PROXY UNSPEC"],
)
def test_sslTLVIgnoredWhereBlockIs(header: bytes) -> None:
    """
    In a LOCAL or AF_UNSPEC header, whose block the specification says to
    ignore, an SSL TLV says nothing: the header has no TLS information.
    """
    parsed, _ = ProxyHeaderParser().feed(header)
    assert parsed is not None and parsed.tls is None


SSL_INVALID = {
    "empty": tlv(0x20, b""),
    "shorter than flags and verify": tlv(0x20, b"\x01\x00\x00\x00"),
    "sub-TLV truncated": sslTLV(PP2_CLIENT_SSL, 0, b"\x21\x00"),
    "sub-TLV past the end": sslTLV(PP2_CLIENT_SSL, 0, b"\x21\x00\x09TLSv1.3"),
    "two SSL TLVs": sslTLV(PP2_CLIENT_SSL) + sslTLV(PP2_CLIENT_SSL),
    "certificate without TLS": sslTLV(PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS),
    "session certificate without TLS": sslTLV(PP2_CLIENT_CERT_SESS),
    "connection certificate without session": sslTLV(PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN),
    "version without TLS": sslTLV(0, 0, TLS13),
    "version twice": sslTLV(PP2_CLIENT_SSL, 0, TLS13 + tlv(0x21, b"TLSv1.2")),
    "version with CRLF": sslTLV(PP2_CLIENT_SSL, 0, tlv(0x21, b"TLSv1.3\r\nX")),
    "version not ASCII": sslTLV(PP2_CLIENT_SSL, 0, tlv(0x21, b"TLSv1.3\xff")),
    "cipher with ESC": sslTLV(PP2_CLIENT_SSL, 0, tlv(0x23, b"\x1b[2J")),
}


@pytest.mark.parametrize("name", sorted(SSL_INVALID))
def test_sslTLVInvalid(name: str) -> None:
    """
    An SSL TLV that is cut short, repeated, contradicts itself (TLS details
    without the TLS flag) or carries unprintable text makes the whole
    header invalid: the connection is refused rather than guessed at.
    """
    data = v2TCP4("203.0.113.7", "127.0.0.1", 51234, 110, SSL_INVALID[name])
    with pytest.raises(InvalidProxyHeader) as raised:
        ProxyHeaderParser().feed(data)
    assert str(raised.value)


def parseOutcome(data: bytes) -> tuple[ProxyHeader | None, bytes] | str:
    try:
        return ProxyHeaderParser().feed(data)
    except InvalidProxyHeader:
        return "invalid"


@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda value: b"\x20" + value, st.binary(max_size=300)),
        st.builds(
            lambda flags, rest: tlv(0x20, bytes([flags]) + rest),
            st.integers(0, 255),
            st.binary(max_size=60),
        ),
    ),
    st.binary(max_size=20),
    st.integers(0, 400),
)
def test_arbitraryTLVBytes(tlvs: bytes, payload: bytes, cut: int) -> None:
    """
    Whatever bytes follow the addresses, the parser either refuses the
    header with InvalidProxyHeader or returns one having consumed exactly
    the length the header declared (the payload comes back whole), and
    splitting the input into two reads changes nothing.
    """
    data = v2TCP4("203.0.113.7", "127.0.0.1", 51234, 110, tlvs)
    whole = parseOutcome(data + payload)
    if whole != "invalid":
        assert isinstance(whole, tuple) and whole[0] is not None
        assert whole[1] == payload
    parser = ProxyHeaderParser()
    split: tuple[ProxyHeader | None, bytes] | str
    try:
        header, rest = parser.feed(data[:cut])
        if header is None:
            header, rest = parser.feed(data[cut:] + payload)
        else:
            rest += data[cut:] + payload
        split = (header, rest)
    except InvalidProxyHeader:
        split = "invalid"
    assert split == whole


@given(
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.lists(
        st.tuples(st.sampled_from([0x21, 0x22, 0x23, 0x24, 0x25, 0x7F]), st.binary(max_size=16)),
        max_size=4,
    ),
)
def test_sslTLVRules(client: int, verify: int, subTLVs: list[tuple[int, bytes]]) -> None:
    """
    For any flags, verify value and sub-TLVs, the header is accepted exactly
    when the SSL TLV is consistent (no certificate or TLS details without
    PP2_CLIENT_SSL, no connection certificate without a session one, the
    version and cipher sent at most once and printable), and then the
    value holds the flags, verify result, version and cipher sent.
    """
    known = [(kind, value) for kind, value in subTLVs if kind in (0x21, 0x23)]
    kinds = [kind for kind, _ in known]
    printable = all(value.isascii() and value.decode().isprintable() for _, value in known)
    encrypted = bool(client & PP2_CLIENT_SSL)
    consistent = (
        len(kinds) == len(set(kinds))
        and printable
        and (encrypted or (not client & 0x06 and not subTLVs))
        and not (encrypted and client & PP2_CLIENT_CERT_CONN and not client & PP2_CLIENT_CERT_SESS)
    )
    block = sslTLV(client, verify, b"".join(tlv(kind, value) for kind, value in subTLVs))
    outcome = parseOutcome(v2TCP4("203.0.113.7", "127.0.0.1", 1, 110, block))
    if not consistent:
        assert outcome == "invalid"
        return
    assert isinstance(outcome, tuple) and outcome[0] is not None
    values = dict(known)
    assert outcome[0].tls == ProxyTLS(
        client,
        verify,
        values[0x21].decode() if 0x21 in values else None,
        values[0x23].decode() if 0x23 in values else None,
    )
    assert outcome[0].tls.encrypted == encrypted


# The wrapper, with a recording protocol


class Recorder(Protocol):
    """
    Greets on connect, like a POP3 server, and records what happens to it.
    """

    def __init__(self, pauseOnConnect: bool = False) -> None:
        self.events: list[object] = []
        self.pauseOnConnect = pauseOnConnect

    def makeConnection(self, transport: Any) -> None:
        self.events.append("makeConnection")
        super().makeConnection(transport)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.events.append(("peer", self.transport.getPeer(), self.transport.getHost()))
        self.transport.write(b"+OK hello\r\n")
        if self.pauseOnConnect:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.events.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.events.append("connectionLost")


@implementer(IPushProducer)
class StillProducer:
    """
    A push producer that produces nothing: a test checks only where it is
    registered.
    """

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class RecordingFactory(Factory):
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.built: list[Recorder] = []

    def buildProtocol(self, addr: Any) -> Recorder:
        protocol = Recorder(**self.options)
        self.built.append(protocol)
        return protocol


def connectRecorder(
    timeout: float = HEADER_TIMEOUT, **options: Any
) -> tuple[ProxyHeaderWrapper, Recorder, ClosingTransport, Clock, ProxyHeaderFactory]:
    clock = Clock()
    factory = ProxyHeaderFactory(RecordingFactory(**options), clock, timeout)
    wrapper = factory.buildProtocol(LOAD_BALANCER)
    assert wrapper is not None
    transport = ClosingTransport(clock, LOAD_BALANCER)
    transport.hostAddr = LISTENER  # type: ignore[assignment]  # typed as its None default
    transport.protocol = wrapper
    wrapper.makeConnection(transport)
    recorder = wrapper.wrappedProtocol
    assert isinstance(recorder, Recorder)
    return wrapper, recorder, transport, clock, factory


def test_nothingBeforeHeader() -> None:
    """
    Until the last byte of the header arrives the wrapped protocol is not
    even connected and nothing is written; then it is connected once, sees
    the header's addresses, and greets.
    """
    wrapper, recorder, transport, clock, _ = connectRecorder()
    for byte in V1_TCP4[:-1]:
        wrapper.dataReceived(bytes([byte]))
        assert recorder.events == []
        assert transport.value() == b""
    wrapper.dataReceived(V1_TCP4[-1:])
    header = VALID["v1 TCP4"][1]
    # Typed as getPeer() and getHost() answer: with mypy-zope, mypy finds no
    # value common to an interface and a class implementing it (as for
    # isinstance in Shoobx/mypy-zope#91), so == between the header's
    # IPv4Address and an IAddress would read as never true and mypy would
    # check nothing after it.
    source: IAddress | None = header.source
    destination: IAddress | None = header.destination
    assert recorder.events == ["makeConnection", ("peer", source, destination)]
    assert transport.value() == b"+OK hello\r\n"
    assert wrapper.getPeer() == source
    assert wrapper.getHost() == destination
    assert wrapper.header == VALID["v1 TCP4"][1]


def test_payloadAfterHeaderDelivered() -> None:
    """
    Bytes that arrive in the same read as the end of the header, and later
    reads, reach the wrapped protocol in order, after its connectionMade.
    """
    wrapper, recorder, _, _, _ = connectRecorder()
    wrapper.dataReceived(V1_TCP4[:5])
    wrapper.dataReceived(V1_TCP4[5:] + b"CAPA\r\n")
    wrapper.dataReceived(b"USER a\r\n")
    assert recorder.events[0] == "makeConnection"
    assert recorder.events[2:] == [b"CAPA\r\n", b"USER a\r\n"]


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", v2(0, 0x00, b"")])
def test_localAndUnknownUseRealAddresses(header: bytes) -> None:
    """
    For v1 UNKNOWN and v2 LOCAL the wrapped protocol sees the connection's
    own addresses (the load balancer's health check).
    """
    wrapper, recorder, _, _, _ = connectRecorder()
    wrapper.dataReceived(header)
    assert recorder.events[1] == ("peer", LOAD_BALANCER, LISTENER)
    assert wrapper.getPeer() == LOAD_BALANCER


def test_invalidHeaderCloses() -> None:
    """
    An invalid header closes the connection without a byte written; the
    wrapped protocol never hears of it, later bytes are ignored, and the
    rejection is logged with the load balancer's address.
    """
    with capturedLogs() as events:
        wrapper, recorder, transport, clock, factory = connectRecorder()
        wrapper.dataReceived(b"USER alice\r\n")
    assert transport.disconnecting
    wrapper.dataReceived(b"PROXY UNKNOWN\r\n")
    clock.advance(0)
    assert transport.closedBy is not None
    assert transport.value() == b""
    assert recorder.events == []
    assert factory.protocols == {}
    assert clock.getDelayedCalls() == []
    messages = [formatEvent(event) for event in events]
    assert any("10.0.0.2:33000" in m and "PROXY header" in m for m in messages), messages


def test_headerTimeout() -> None:
    """
    A connection that has not completed its header within the timeout is
    closed, unanswered; a header completed in time cancels the deadline.
    """
    wrapper, recorder, transport, clock, _ = connectRecorder(timeout=5)
    wrapper.dataReceived(V1_TCP4[:10])
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.isDisconnecting()
    clock.advance(0)
    assert transport.closedBy is not None
    assert transport.value() == b""
    assert recorder.events == []

    wrapper, recorder, transport, clock, _ = connectRecorder(timeout=5)
    wrapper.dataReceived(V1_TCP4)
    assert clock.getDelayedCalls() == []
    clock.advance(60)
    assert not transport.disconnecting


def test_defaultTimeout() -> None:
    """
    By default the header must arrive within 10 seconds.
    """
    _, _, transport, clock, _ = connectRecorder()
    assert [call.getTime() for call in clock.getDelayedCalls()] == [10.0]
    clock.advance(10)
    assert transport.disconnecting


def test_lostBeforeHeader() -> None:
    """
    A connection that ends before its header is complete never reaches the
    wrapped protocol: neither makeConnection nor connectionLost is called,
    and the deadline is cancelled.
    """
    wrapper, recorder, transport, clock, factory = connectRecorder()
    wrapper.dataReceived(V1_TCP4[:7])
    transport.dropped(Failure(ConnectionResetError()))
    assert recorder.events == []
    assert clock.getDelayedCalls() == []
    assert factory.protocols == {}


def test_lostAfterHeaderOnce() -> None:
    """
    After the header, the wrapped protocol's connectionLost is called
    exactly once, even if the transport reports the loss twice.
    """
    wrapper, recorder, _, _, factory = connectRecorder()
    wrapper.dataReceived(V1_TCP4)
    wrapper.connectionLost(Failure(ConnectionResetError()))
    wrapper.connectionLost(Failure(ConnectionResetError()))
    assert recorder.events.count("connectionLost") == 1
    assert factory.protocols == {}


def test_producerAndConsumerPassThrough() -> None:
    """
    To the wrapped protocol the wrapper is a transport, push producer and
    consumer; registering producers and pausing, resuming and stopping
    reading act on the real transport.
    """
    wrapper, _, transport, _, _ = connectRecorder()
    wrapper.dataReceived(V1_TCP4)
    for interface in (ITransport, IPushProducer, IConsumer):
        assert verifyObject(interface, wrapper)
    # Typed as the interface (see test_nothingBeforeHeader).
    producer: IPushProducer = StillProducer()
    wrapper.registerProducer(producer, True)
    assert transport.producer is producer and transport.streaming
    wrapper.unregisterProducer()
    assert transport.registeredProducer() is None
    wrapper.pauseProducing()
    assert transport.producerState == "paused"
    wrapper.resumeProducing()
    assert transport.producerState == "producing"
    wrapper.stopProducing()
    assert transport.producerState == "stopped"


def test_pausedOnConnectHoldsPayload() -> None:
    """
    If the wrapped protocol pauses reading while it is being connected,
    the bytes that followed the header wait for resumeProducing, and come
    before anything read later.
    """
    wrapper, recorder, transport, _, _ = connectRecorder(pauseOnConnect=True)
    wrapper.dataReceived(V1_TCP4 + b"CAPA\r\n")
    assert recorder.events[2:] == []
    assert transport.producerState == "paused"
    wrapper.resumeProducing()
    wrapper.dataReceived(b"QUIT\r\n")
    assert recorder.events[2:] == [b"CAPA\r\n", b"QUIT\r\n"]


def test_wrappedFactoryRefuses() -> None:
    """
    When the wrapped factory refuses a connection (returns None), so does
    the wrapping factory; its log prefix says PROXY is in use.
    """

    class Refusing(Factory):
        def buildProtocol(self, addr: Any) -> None:
            return None

    factory = ProxyHeaderFactory(Refusing(), Clock())
    assert factory.buildProtocol(LOAD_BALANCER) is None
    assert factory.logPrefix() == "Refusing (PROXY)"


# The wrapper in front of a real ClientSession


class SessionRig:
    """
    A ClientSession behind the PROXY wrapper on an in-memory connection
    from the load balancer, with one fake upstream (as in sessionharness).
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.upstreams: list[FakeUpstream] = []
        settings = SessionSettings(
            router=Router(Config(upstream="tcp:upstream:110").routing),
            connect=self.connect,
            clock=self.clock,
        )
        self.factory = ProxyHeaderFactory(SessionFactory(settings), self.clock)
        wrapper = self.factory.buildProtocol(LOAD_BALANCER)
        assert wrapper is not None
        self.wrapper = wrapper
        self.client = ClosingTransport(self.clock, LOAD_BALANCER)
        self.client.protocol = wrapper
        wrapper.makeConnection(self.client)
        session = wrapper.wrappedProtocol
        assert isinstance(session, ClientSession)
        self.session = session

    def connect(
        self, target: UpstreamTarget, origin: ClientOrigin | None
    ) -> Deferred[UpstreamConnection]:
        address = target.endpoint
        connection = UpstreamConnection(self.clock, 60.0)
        transport = ClosingTransport(self.clock)
        transport.protocol = connection
        connection.makeConnection(transport)
        self.upstreams.append(FakeUpstream(address, connection, transport, origin))
        connection.dataReceived(b"+OK upstream ready\r\n")
        return connection.ready


def test_sessionGreetsAfterHeader() -> None:
    """
    A real ClientSession behind the wrapper says nothing and connects
    nowhere while a v2 header trickles in; once it is complete the session
    greets, and it logs and records the PROXY source address as its client,
    and the addresses it passes on upstream (client_address) are the
    header's, not the load balancer's.
    """
    rig = SessionRig()
    header = VALID["v2 TCP4 with TLVs"][0]
    with capturedLogs() as events:
        for byte in header[:-1]:
            rig.wrapper.dataReceived(bytes([byte]))
        assert rig.client.take() == b""
        assert rig.upstreams == []
        rig.wrapper.dataReceived(header[-1:])
    assert rig.client.take() == b"+OK popproxy ready\r\n"
    assert rig.session.record.client == "203.0.113.7:51234"
    assert [u.address for u in rig.upstreams] == ["tcp:upstream:110"]
    assert rig.upstreams[0].origin == ClientOrigin(
        IPv4Address("TCP", "203.0.113.7", 51234), IPv4Address("TCP", "192.0.2.10", 110)
    )
    messages = [formatEvent(event) for event in events]
    assert any("opened by 203.0.113.7:51234" in m for m in messages), messages


def test_pipelinedCommandAfterHeader() -> None:
    """
    A POP3 command sent in the same segment as the header reaches the
    session and is answered after the greeting.
    """
    rig = SessionRig()
    rig.wrapper.dataReceived(V1_TCP6 + b"CAPA\r\n")
    assert rig.session.record.client == "[2001:db8::7]:51234"
    assert rig.upstreams[0].received() == b"CAPA\r\n"
    rig.upstreams[0].reply(b"+OK\r\nTOP\r\nUIDL\r\n.\r\n")
    received = rig.client.take()
    assert received.startswith(b"+OK popproxy ready\r\n+OK capability list follows\r\n")
    assert received.endswith(b".\r\n")


def test_sessionClosedAfterHeaderEndsOnce() -> None:
    """
    A session whose client leaves after the header is closed exactly once
    (its upstream connection dropped, its close logged once).
    """
    rig = SessionRig()
    rig.wrapper.dataReceived(V1_TCP4)
    with capturedLogs() as events:
        rig.client.dropped(Failure(ConnectionResetError()))
        rig.wrapper.connectionLost(Failure(ConnectionResetError()))
    closed = [e for e in events if "closed" in formatEvent(e)]
    assert len(closed) == 1
    assert rig.upstreams[0].transport.disconnecting


# _assembly.serviceFromConfig


def test_haproxyListener() -> None:
    """
    A listen description starting with haproxy: listens on the endpoint
    after the prefix with the PROXY wrapper around the session factory,
    timed by the reactor; other descriptions listen as before.
    """
    reactor = MemoryReactorClock()
    config = Config(
        upstream="tcp:127.0.0.1:110",
        listen=("HAProxy:tcp:1110:interface=127.0.0.1", "tcp:1111:interface=127.0.0.1"),
    )
    service = serviceFromConfig(config, reactor)
    listeners = [child for child in service if isinstance(child, Listener)]
    assert len(listeners) == 2
    for listener in listeners:
        assert listener._raiseSynchronously
    service.privilegedStartService()
    service.startService()
    (port1, listener1, _, interface1), (port2, listener2, _, interface2) = reactor.tcpServers
    assert (port1, interface1, port2, interface2) == (1110, "127.0.0.1", 1111, "127.0.0.1")
    # The factory in use, which a reload may replace.
    assert isinstance(listener1, ListenerFactory) and isinstance(listener2, ListenerFactory)
    factory1, factory2 = listener1.current, listener2.current
    assert isinstance(factory1, ProxyHeaderFactory)
    timer: IReactorTime = reactor  # as the factory types it (see test_nothingBeforeHeader)
    assert factory1.clock is timer
    assert factory1.timeout == HEADER_TIMEOUT
    assert isinstance(factory1.wrappedFactory, SessionFactory)
    assert isinstance(factory2, SessionFactory)


# End to end: twistd behind a PROXY header on a real socket


class CommandLineProxy(ProxyProcess):
    """
    `twistd -n popproxy --listen haproxy:tcp:PORT --upstream ...`, no file.
    """

    def __init__(self, workdir: Path, upstream: str) -> None:
        super().__init__(workdir, "")
        self.upstream = upstream

    def command(self) -> list[str]:
        return [
            twistdCommand(),
            "-n",
            "--pidfile=",
            "--logfile",
            str(self.logPath),
            "popproxy",
            "--listen",
            f"haproxy:tcp:{self.port}:interface=127.0.0.1",
            "--upstream",
            self.upstream,
        ]


def readUntil(sock: socket.socket, buffer: bytearray, end: bytes, timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    while end not in buffer:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {end!r}; got {bytes(buffer)!r}")
        buffer += chunk
    cut = buffer.index(end) + len(end)
    data = bytes(buffer[:cut])
    del buffer[:cut]
    return data


def test_endToEndBehindProxyHeader(rawPop3: Any, tmp_path: Path) -> None:
    """
    Through a real haproxy: listener, popproxy stays silent until a v1
    header sent in two segments is complete, then greets, logs the client
    in at the upstream and relays a message byte for byte; its log names
    the PROXY source address as the client.
    """
    message = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
    server = rawPop3(messages=[message], user="u", password="p")
    proxy = CommandLineProxy(tmp_path, f"tcp:127.0.0.1:{server.port}")
    proxy.start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(100)
            sock.sendall(b"PROXY TCP4 198.51.100.7 ")
            time.sleep(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(100)
            sock.sendall(b"127.0.0.1 40123 110\r\n")
            buffer = bytearray()
            assert readUntil(sock, buffer, b"\r\n") == b"+OK popproxy ready\r\n"
            sock.sendall(b"USER u\r\nPASS p\r\n")
            assert readUntil(sock, buffer, b"+OK logged in\r\n").startswith(b"+OK")
            sock.sendall(b"RETR 1\r\n")
            response = readUntil(sock, buffer, b"\r\n.\r\n")
            assert response == b"+OK %d octets\r\n" % len(message) + dotStuff(message)
            sock.sendall(b"QUIT\r\n")
            assert readUntil(sock, buffer, b"\r\n").startswith(b"+OK")
        deadline = time.monotonic() + 10
        while "client=198.51.100.7:40123" not in proxy.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = proxy.log()
        assert "opened by 198.51.100.7:40123" in log, log
        assert "client=198.51.100.7:40123" in log, log
    finally:
        proxy.stop()
