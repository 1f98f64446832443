"""
Tests for popproxy._clientnetwork: the one place that says which client
network an address counts as.  What it proves: the connection limits
(Admission), the logins in flight (LoginsInFlight) and the login throttle
(LoginThrottle) put the same addresses in one network, for IPv4, IPv6 per
/64, IPv4-mapped IPv6 and a peer that has no IP address; zones are
ignored and trusted networks are not counted.
"""

from __future__ import annotations

import ipaddress
from typing import TypeVar

import pytest
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from popproxy._admission import Admission, ConnectionLimits, Ticket
from popproxy._clientnetwork import clientNetwork, trustedNetworks
from popproxy._loginsinflight import LoginsInFlight
from popproxy._loginthrottle import LoginThrottle
from popproxy._memorycounters import MemoryCounters

T = TypeVar("T")

#: An address, another address of its network, an address of another
#: network next to it.
NETWORKS = [
    ("192.0.2.7", "::ffff:192.0.2.7", "192.0.2.8"),
    ("2001:db8:0:1::5", "2001:db8:0:1:ffff:ffff:ffff:ffff", "2001:db8:0:2::5"),
    ("::ffff:192.0.2.7", "192.0.2.7", "::ffff:192.0.2.8"),
]

#: What the session gives as the address of a UNIX socket's peer.
UNIX_PEER = str(UNIXAddress(b"/run/popproxy.sock"))


def firedNow(deferred: Deferred[T]) -> list[T]:
    """
    What C{deferred} has fired with by now (nothing: it waits).
    """
    results: list[T] = []
    deferred.addCallback(results.append)
    return results


def sharedInAdmission(first: str, second: str) -> bool:
    """
    Whether a session from C{first} counts against C{second}'s limit of
    one session per network.
    """
    limits = ConnectionLimits(perAddress=1, trusted=())
    admission = Admission(limits, lambda: 0.0, descriptors=1024)
    assert isinstance(admission.admit(first), Ticket)
    return not isinstance(admission.admit(second), Ticket)


def sharedInFlight(first: str, second: str) -> bool:
    """
    Whether a login in flight from C{first} takes C{second}'s one place.
    """
    gate = LoginsInFlight(Clock(), 1, maxWait=10.0)
    assert firedNow(gate.enter(first)) != []
    return firedNow(gate.enter(second)) == []


def sharedInThrottle(first: str, second: str) -> bool:
    """
    Whether a failed login from C{first} slows C{second}'s next attempt.
    """
    clock = Clock()
    clock.advance(1_000_000)
    throttle = LoginThrottle(MemoryCounters(clock), clock)
    assert firedNow(throttle.failed(first, "bob")) == [None]
    [admission] = firedNow(throttle.admit(second, "carol"))
    return admission.wait > 0


@pytest.mark.parametrize(("address", "sibling", "neighbour"), NETWORKS)
def test_limitsAgreeOnTheNetwork(address: str, sibling: str, neighbour: str) -> None:
    """
    For an IPv4 address, an IPv6 address (its /64) and an IPv4-mapped one,
    the connection limits, the logins in flight and the login throttle
    count another address of the network with it and the address next to
    the network apart.
    """
    for shared in (sharedInAdmission, sharedInFlight, sharedInThrottle):
        assert shared(address, sibling), shared.__name__
        assert not shared(address, neighbour), shared.__name__


def test_limitsAgreeOnAPeerWithoutAnAddress() -> None:
    """
    A UNIX socket's peer is no network: neither the connection limits nor
    the logins in flight count it, and the throttle counts it by its own
    text (every local client together), not as an IP network.
    """
    assert clientNetwork(UNIX_PEER, 32, 64) is None
    assert not sharedInAdmission(UNIX_PEER, UNIX_PEER)
    assert not sharedInFlight(UNIX_PEER, UNIX_PEER)
    assert sharedInThrottle(UNIX_PEER, UNIX_PEER)
    assert not sharedInThrottle(UNIX_PEER, "192.0.2.7")


def test_zoneIsIgnoredAndTrustedIsNotCounted() -> None:
    """
    A link-local address's zone does not make a network of its own; an
    address in a trusted network counts in none.
    """
    assert clientNetwork("fe80::1%eth0", 32, 64) == ipaddress.ip_network("fe80::/64")
    trusted = trustedNetworks(["127.0.0.1/8", "2001:db8::/32"])
    assert clientNetwork("127.0.0.9", 32, 64, trusted) is None
    assert clientNetwork("::ffff:127.0.0.9", 32, 64, trusted) is None
    assert clientNetwork("2001:db8:5::1", 32, 64, trusted) is None
    assert clientNetwork("192.0.2.7", 24, 64, trusted) == ipaddress.ip_network("192.0.2.0/24")
