"""
Writing the HAProxy PROXY protocol header (v1 text, v2 binary) that tells an
upstream server which client a connection carries.

A pure function of the client's addresses: L{buildProxyHeader} turns a
L{ClientOrigin} into the bytes to send before anything else on the upstream
connection (before the TLS handshake, for implicit TLS).  Its counterpart,
the receiving side, is L{popproxy._proxyheader}.

Reference: U{https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt}.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

from popproxy._proxyheader import V2_SIGNATURE

__all__ = ["ClientOrigin", "buildProxyHeader"]

Address = IPv4Address | IPv6Address

_V2_PROXY = 0x21  # version 2, command PROXY
_V2_LOCAL_FAMILY = 0x00  # AF_UNSPEC: "use the connection's own addresses"
_TCP4 = 0x11
_TCP6 = 0x21


@dataclass(frozen=True, slots=True)
class ClientOrigin:
    """
    Where a client's connection came from and where it arrived: the
    addresses a PROXY header or XCLIENT passes upstream.

    @ivar source: the client's address (from a C{haproxy:} listener's
        header, when the client came through one), or C{None} when the
        connection has no IP address (a UNIX socket).
    @ivar destination: the proxy's address the client connected to, or
        C{None} likewise.
    """

    source: Address | None
    destination: Address | None

    @classmethod
    def of(cls, peer: IAddress, host: IAddress) -> ClientOrigin:
        """
        The origin of a connection whose transport says C{getPeer()} is
        C{peer} and C{getHost()} is C{host}; addresses that are not TCP over
        IP are left out.
        """
        return cls(_tcpAddress(peer), _tcpAddress(host))


def _tcpAddress(address: IAddress) -> Address | None:
    if isinstance(address, (IPv4Address, IPv6Address)) and address.type == "TCP":
        return address
    return None


def _asIPv4(address: Address) -> ipaddress.IPv4Address | None:
    """
    The address as IPv4, if it is one (an IPv4-mapped IPv6 address, as a
    dual-stack C{tcp6} listener reports IPv4 clients, counts as one).
    """
    parsed = ipaddress.ip_address(address.host.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address):
        return parsed.ipv4_mapped
    return parsed


def _asIPv6(address: Address) -> ipaddress.IPv6Address:
    parsed = ipaddress.ip_address(address.host.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + parsed.packed)
    return parsed


def buildProxyHeader(version: int, origin: ClientOrigin) -> bytes:
    """
    The PROXY header (C{version} 1 or 2) announcing C{origin}.

    Both addresses IPv4 (or IPv4-mapped) give C{TCP4}; otherwise C{TCP6},
    with an IPv4 address written in its mapped form, since a header has one
    family for both.  An origin without both addresses gives v1's
    C{UNKNOWN} or v2's C{AF_UNSPEC}: the receiver then uses the
    connection's own addresses.
    """
    if version not in (1, 2):
        raise ValueError(f"PROXY protocol version must be 1 or 2, not {version!r}")
    source, destination = origin.source, origin.destination
    if source is None or destination is None:
        if version == 1:
            return b"PROXY UNKNOWN\r\n"
        return V2_SIGNATURE + bytes([_V2_PROXY, _V2_LOCAL_FAMILY]) + b"\x00\x00"
    source4, destination4 = _asIPv4(source), _asIPv4(destination)
    if source4 is not None and destination4 is not None:
        addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (
            source4,
            destination4,
        )
    else:
        addresses = (_asIPv6(source), _asIPv6(destination))
    if version == 1:
        protocol = "TCP4" if addresses[0].version == 4 else "TCP6"
        line = (
            f"PROXY {protocol} {addresses[0]} {addresses[1]} {source.port} {destination.port}\r\n"
        )
        return line.encode("ascii")
    block = (
        addresses[0].packed
        + addresses[1].packed
        + source.port.to_bytes(2, "big")
        + destination.port.to_bytes(2, "big")
    )
    family = _TCP4 if addresses[0].version == 4 else _TCP6
    return V2_SIGNATURE + bytes([_V2_PROXY, family]) + len(block).to_bytes(2, "big") + block
