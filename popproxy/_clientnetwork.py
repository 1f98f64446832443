"""
What client network an address counts as, for every per-address limit: the
connection limits (L{popproxy._admission}), the logins in flight
(L{popproxy._loginsinflight}), the login throttle
(L{popproxy._loginthrottle}) and the refusal log.

An IPv4 address (also written IPv4-mapped, C{::ffff:192.0.2.7}) counts
with its first C{ipv4Prefix} bits, an IPv6 address with its first
C{ipv6Prefix} (a /64 by default: one customer line hands out many
addresses); a zone (C{fe80::1%eth0}) is ignored; anything else (a UNIX
socket's peer) is no network.  Pure functions of text, so the limits
cannot disagree on which network a client is in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["Address", "Network", "clientAddress", "clientNetwork", "trustedNetworks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def clientAddress(host: str) -> Address | None:
    """
    C{host} as an IP address (an IPv4-mapped IPv6 address is the IPv4
    address it maps), or C{None} when it is no IP address.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def clientNetwork(
    host: str, ipv4Prefix: int, ipv6Prefix: int, trusted: tuple[Network, ...] = ()
) -> Network | None:
    """
    The client network C{host} belongs to, or C{None} when C{host} is no
    IP address or is in one of the C{trusted} networks (not counted).
    """
    address = clientAddress(host)
    if address is None or any(address in network for network in trusted):
        return None
    prefix = ipv4Prefix if address.version == 4 else ipv6Prefix
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False)


def trustedNetworks(networks: Iterable[str]) -> tuple[Network, ...]:
    """
    The C{trusted_networks} setting's networks (host bits allowed).
    """
    return tuple(ipaddress.ip_network(network, strict=False) for network in networks)
