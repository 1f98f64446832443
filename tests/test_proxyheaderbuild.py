"""
Tests for popproxy._proxyheaderbuild: the PROXY headers popproxy sends
upstream are exactly the specification's bytes, and every header it builds
reads back (through popproxy's own parser) as the addresses it was given.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from popproxy._proxyheader import V2_SIGNATURE, ProxyHeader, ProxyHeaderParser
from popproxy._proxyheaderbuild import ClientOrigin, buildProxyHeader

CLIENT = IPv4Address("TCP", "203.0.113.7", 51234)
PROXY = IPv4Address("TCP", "192.0.2.10", 110)
CLIENT6 = IPv6Address("TCP", "2001:db8::7", 51234)
PROXY6 = IPv6Address("TCP", "2001:db8::a", 110)


def parsed(header: bytes) -> ProxyHeader:
    """
    What popproxy's receiving side reads from C{header}, which must be
    exactly one header with nothing after it.
    """
    result, rest = ProxyHeaderParser().feed(header)
    assert result is not None and rest == b""
    return result


def test_v1TCP4() -> None:
    """
    v1 over IPv4 is the specification's one text line.
    """
    header = buildProxyHeader(1, ClientOrigin(CLIENT, PROXY))
    assert header == b"PROXY TCP4 203.0.113.7 192.0.2.10 51234 110\r\n"


def test_v1TCP6() -> None:
    """
    v1 over IPv6 names TCP6 and writes the addresses in compressed form.
    """
    header = buildProxyHeader(1, ClientOrigin(CLIENT6, PROXY6))
    assert header == b"PROXY TCP6 2001:db8::7 2001:db8::a 51234 110\r\n"


def test_v2TCP4() -> None:
    """
    v2 over IPv4: signature, version 2 PROXY, TCP over IPv4, a 12-byte
    block of addresses then ports, big-endian.
    """
    header = buildProxyHeader(2, ClientOrigin(CLIENT, PROXY))
    assert header == (
        V2_SIGNATURE
        + b"\x21\x11\x00\x0c"
        + bytes([203, 0, 113, 7, 192, 0, 2, 10])
        + (51234).to_bytes(2, "big")
        + (110).to_bytes(2, "big")
    )


def test_v2TCP6() -> None:
    """
    v2 over IPv6: TCP over IPv6 and a 36-byte block.
    """
    header = buildProxyHeader(2, ClientOrigin(CLIENT6, PROXY6))
    assert header[12:16] == b"\x21\x21\x00\x24"
    assert header[16:32] == ipaddress.IPv6Address("2001:db8::7").packed
    assert len(header) == 16 + 36


def test_mappedIPv4IsTCP4() -> None:
    """
    An IPv4 client as a dual-stack tcp6 listener reports it
    (::ffff:a.b.c.d) goes upstream as plain TCP4, so the upstream logs and
    penalises the IPv4 address.
    """
    origin = ClientOrigin(
        IPv6Address("TCP", "::ffff:203.0.113.7", 51234),
        IPv6Address("TCP", "::ffff:192.0.2.10", 110),
    )
    assert buildProxyHeader(1, origin) == b"PROXY TCP4 203.0.113.7 192.0.2.10 51234 110\r\n"


def test_mixedFamiliesAreTCP6() -> None:
    """
    A header has one family for both addresses: an IPv6 client on an IPv4
    address cannot be TCP4, so both go as IPv6, the IPv4 one mapped.
    """
    header = buildProxyHeader(1, ClientOrigin(CLIENT6, PROXY))
    fields = header.split(b" ")
    assert fields[:3] == [b"PROXY", b"TCP6", b"2001:db8::7"]
    assert ipaddress.ip_address(fields[3].decode()) == ipaddress.ip_address("::ffff:192.0.2.10")
    destination = parsed(header).destination
    assert destination is not None and destination.port == 110


@pytest.mark.parametrize("version", [1, 2])
def test_unknownOrigin(version: int) -> None:
    """
    A client without IP addresses (a UNIX socket listener) gives v1
    UNKNOWN or v2 AF_UNSPEC: the upstream falls back to the connection's
    own addresses rather than being told something false.
    """
    origin = ClientOrigin.of(UNIXAddress(b"/run/pop.sock"), UNIXAddress(b"/run/pop.sock"))
    assert origin == ClientOrigin(None, None)
    header = buildProxyHeader(version, origin)
    assert parsed(header) == ProxyHeader(version, None, None)
    if version == 1:
        assert header == b"PROXY UNKNOWN\r\n"


def test_badVersion() -> None:
    """
    Only versions 1 and 2 exist.
    """
    with pytest.raises(ValueError, match="1 or 2"):
        buildProxyHeader(3, ClientOrigin(CLIENT, PROXY))


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str).filter(lambda a: ipaddress.IPv6Address(a).ipv4_mapped is None)
ports = st.integers(0, 65535)


@st.composite
def origins(draw: st.DrawFn) -> ClientOrigin:
    if draw(st.booleans()):
        source = IPv4Address("TCP", draw(ipv4), draw(ports))
        destination = IPv4Address("TCP", draw(ipv4), draw(ports))
        return ClientOrigin(source, destination)
    return ClientOrigin(
        IPv6Address("TCP", draw(ipv6), draw(ports)), IPv6Address("TCP", draw(ipv6), draw(ports))
    )


@given(origins(), st.sampled_from([1, 2]))
def test_roundTrip(origin: ClientOrigin, version: int) -> None:
    """
    Whatever addresses and ports, of either family, the header built reads
    back through the parser as the same addresses, with the same version.
    """
    header = parsed(buildProxyHeader(version, origin))
    assert header == ProxyHeader(version, origin.source, origin.destination)


@given(origins(), st.sampled_from([1, 2]), st.binary(max_size=64))
def test_applicationDataFollows(origin: ClientOrigin, version: int, after: bytes) -> None:
    """
    The header ends exactly where it says: the bytes after it (the
    upstream's own protocol) are handed back untouched.
    """
    _, rest = ProxyHeaderParser().feed(buildProxyHeader(version, origin) + after)
    assert rest == after
