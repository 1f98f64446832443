"""
Tests for L{popproxy._admission}: who may open a session, with no socket
and a hand-driven clock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from popproxy._admission import (
    RESERVED_DESCRIPTORS,
    TOO_FAST,
    TOO_MANY_FROM_ADDRESS,
    TOO_MANY_SESSIONS,
    Admission,
    ConnectionLimits,
    Refusal,
    Ticket,
    clientNetwork,
    descriptorLimit,
    sessionsForDescriptors,
)


class Time:
    """
    A clock the test moves.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


UNTRUSTING = ConnectionLimits(trusted=())


def admission(limits: ConnectionLimits = UNTRUSTING, time: Time | None = None) -> Admission:
    return Admission(limits, time or Time(), descriptors=1 << 20)


def admitMany(gate: Admission, host: str, count: int) -> list[Ticket | Refusal]:
    return [gate.admit(host) for _ in range(count)]


def test_perAddressLimit() -> None:
    """
    An address gets C{perAddress} sessions, the next is refused with the
    address reason; another address is not affected; a session that ends
    makes room again.
    """
    gate = admission(replace(UNTRUSTING, perAddress=3))
    tickets = admitMany(gate, "192.0.2.1", 3)
    assert all(isinstance(t, Ticket) for t in tickets)
    assert gate.admit("192.0.2.1") is TOO_MANY_FROM_ADDRESS
    assert isinstance(gate.admit("192.0.2.2"), Ticket)
    first = tickets[0]
    assert isinstance(first, Ticket)
    gate.release(first)
    assert isinstance(gate.admit("192.0.2.1"), Ticket)
    assert gate.sessionsFrom("192.0.2.1") == 3


def test_totalLimit() -> None:
    """
    Past C{maxSessions} every address is refused with the sessions reason,
    until one ends.
    """
    gate = admission(replace(UNTRUSTING, maxSessions=2))
    one = gate.admit("192.0.2.1")
    assert isinstance(gate.admit("198.51.100.7"), Ticket)
    assert gate.admit("203.0.113.9") is TOO_MANY_SESSIONS
    assert isinstance(one, Ticket)
    gate.release(one)
    assert isinstance(gate.admit("203.0.113.9"), Ticket)
    assert gate.open == 2


def test_refusalLinesAreTemporaryErrors() -> None:
    """
    Each refusal is one RFC 2449/3206 C{-ERR [SYS/TEMP]} line.
    """
    for refusal in (TOO_MANY_SESSIONS, TOO_MANY_FROM_ADDRESS, TOO_FAST):
        assert refusal.line.startswith(b"-ERR [SYS/TEMP] ")
        assert refusal.line.endswith(b"\r\n") and refusal.line.count(b"\r\n") == 1


def test_connectionRate() -> None:
    """
    An address opens C{connectionRate} connections per interval, even if
    each ended at once; the next is refused until the oldest leaves the
    window; refused attempts do not fill it.
    """
    time = Time()
    gate = admission(replace(UNTRUSTING, connectionRate=3, rateInterval=10), time)
    for _ in range(3):
        ticket = gate.admit("192.0.2.1")
        assert isinstance(ticket, Ticket)
        gate.release(ticket)
        time.now += 1
    assert gate.admit("192.0.2.1") is TOO_FAST
    assert isinstance(gate.admit("192.0.2.99"), Ticket)
    time.now += 7.5
    assert isinstance(gate.admit("192.0.2.1"), Ticket)
    assert gate.admit("192.0.2.1") is TOO_FAST


def test_trustedNetworksExemptFromAddressLimits() -> None:
    """
    A trusted network (loopback by default) has no per-address or rate
    limit, but counts toward the total, which protects the descriptors.
    """
    gate = admission(ConnectionLimits(perAddress=1, connectionRate=1, maxSessions=5))
    assert all(isinstance(t, Ticket) for t in admitMany(gate, "127.0.0.1", 4))
    assert isinstance(gate.admit("::1"), Ticket)
    assert gate.admit("127.0.0.1") is TOO_MANY_SESSIONS


def test_unknownAddressCountsOnlyInTotal() -> None:
    """
    A connection without an IP address (a UNIX socket, no peer) is
    admitted under the total limit only.
    """
    gate = admission(replace(UNTRUSTING, perAddress=1, maxSessions=3))
    assert isinstance(gate.admit(None), Ticket)
    assert isinstance(gate.admit("/run/popproxy.sock"), Ticket)
    assert isinstance(gate.admit(None), Ticket)
    assert gate.admit(None) is TOO_MANY_SESSIONS


def test_ipv6SharesPerPrefix() -> None:
    """
    IPv6 clients in one /64 (the default) share one count; another /64
    has its own; an IPv4-mapped address counts as its IPv4 address.
    """
    gate = admission(replace(UNTRUSTING, perAddress=2))
    assert isinstance(gate.admit("2001:db8:1:2::1"), Ticket)
    assert isinstance(gate.admit("2001:db8:1:2:ffff::9"), Ticket)
    assert gate.admit("2001:db8:1:2::abcd") is TOO_MANY_FROM_ADDRESS
    assert isinstance(gate.admit("2001:db8:1:3::1"), Ticket)
    assert isinstance(gate.admit("192.0.2.5"), Ticket)
    assert isinstance(gate.admit("::ffff:192.0.2.5"), Ticket)
    assert gate.admit("192.0.2.5") is TOO_MANY_FROM_ADDRESS


def test_reconfigureKeepsCounts() -> None:
    """
    A reload's new limits apply to the sessions already open.
    """
    gate = admission(replace(UNTRUSTING, perAddress=5))
    admitMany(gate, "192.0.2.1", 3)
    gate.reconfigure(replace(UNTRUSTING, perAddress=3))
    assert gate.admit("192.0.2.1") is TOO_MANY_FROM_ADDRESS
    assert gate.open == 3


def test_defaultTotalFromDescriptors() -> None:
    """
    Without C{max_sessions}, the total leaves the reserve and five
    descriptors per session (client, upstream, clamd, spamd, spool), so
    admitted sessions can always reach their peers.
    """
    assert sessionsForDescriptors(1024) == (1024 - RESERVED_DESCRIPTORS) // 5 == 192
    assert sessionsForDescriptors(20000) == 3987
    assert sessionsForDescriptors(10) == 1
    gate = Admission(ConnectionLimits(), Time(), descriptors=1024)
    assert gate.maxSessions == 192
    assert descriptorLimit() > 0


def test_forgetsQuietNetworks() -> None:
    """
    The rate window forgets networks that opened nothing within an
    interval: memory follows the clients of one interval, not all ever seen.
    """
    time = Time()
    gate = admission(replace(UNTRUSTING, rateInterval=10), time)
    for number in range(100):
        ticket = gate.admit(f"10.0.{number}.1")
        assert isinstance(ticket, Ticket)
        gate.release(ticket)
    time.now += 11
    gate.admit("10.1.0.1")
    assert gate.networksRemembered == 1


ipv6 = st.integers(min_value=0, max_value=(1 << 128) - 1).map(ipaddress.IPv6Address)
ipv4 = st.integers(min_value=0, max_value=(1 << 32) - 1).map(ipaddress.IPv4Address)


@given(ipv6, ipv6, st.integers(min_value=1, max_value=128))
def test_ipv6NetworkIsThePrefix(
    one: ipaddress.IPv6Address, other: ipaddress.IPv6Address, prefix: int
) -> None:
    """
    Two IPv6 addresses share a client network exactly when their first
    C{prefix} bits are equal (mapped IPv4 addresses aside).
    """
    if one.ipv4_mapped is not None or other.ipv4_mapped is not None:
        return
    same = (int(one) >> (128 - prefix)) == (int(other) >> (128 - prefix))
    first = clientNetwork(str(one), 32, prefix)
    second = clientNetwork(str(other), 32, prefix)
    assert first is not None and second is not None
    assert (first == second) == same
    assert first.prefixlen == prefix and one in first


@given(ipv4, ipv4, st.integers(min_value=1, max_value=32))
def test_ipv4NetworkIsThePrefix(
    one: ipaddress.IPv4Address, other: ipaddress.IPv4Address, prefix: int
) -> None:
    """
    The same for IPv4, written plainly or IPv4-mapped.
    """
    same = (int(one) >> (32 - prefix)) == (int(other) >> (32 - prefix))
    first = clientNetwork(str(one), prefix, 64)
    second = clientNetwork(f"::ffff:{other}", prefix, 64)
    assert first is not None and second is not None
    assert (first == second) == same


@given(st.lists(st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"])))
def test_countsReturnToZero(hosts: list[str]) -> None:
    """
    Whatever was admitted, releasing every ticket leaves nothing counted.
    """
    gate = admission(replace(UNTRUSTING, perAddress=3, connectionRate=1000))
    tickets = [t for t in (gate.admit(h) for h in hosts) if isinstance(t, Ticket)]
    for ticket in tickets:
        gate.release(ticket)
    assert gate.open == 0
    assert all(gate.sessionsFrom(h) == 0 for h in hosts)
