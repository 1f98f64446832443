"""
Tests for popproxy._addresscounts: the sessions and recent connections per
client network, on a fake clock.  What it proves: however many networks
connect within one rate interval, at most C{maxNetworks} are remembered,
and a network that keeps trying is still refused for its rate; what is
forgotten first is the network that tried longest ago.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from popproxy._addresscounts import (
    MAX_NETWORKS,
    RATE,
    AddressCounts,
    AddressLimits,
    LocalLedger,
)

#: Three connections a minute per network; sessions are not the limit here.
LIMITS = AddressLimits(perAddress=1000, connectionRate=3, rateInterval=60.0)


def result(deferred: Deferred[str | None]) -> str | None:
    """
    What C{deferred}, fired already, fired with.
    """
    results: list[str | None] = []
    deferred.addCallback(results.append)
    assert len(results) == 1
    return results[0]


def connected(counts: AddressCounts[str], key: str) -> str | None:
    """
    A connection from C{key} (its session ended at once): the refusal
    reason, or C{None}.
    """
    reason = counts.enter(key, LIMITS)
    if reason is None:
        counts.leave(key)
    return reason


def test_manyNetworksAreBoundedAndAFloodStaysLimited() -> None:
    """
    10,000 networks connecting once each within the interval leave at most
    100 remembered, while a network that used its three connections and
    keeps trying between them is refused every time.
    """
    counts: AddressCounts[str] = AddressCounts(lambda: 0.0, maxNetworks=100)
    assert [connected(counts, "flood") for _ in range(3)] == [None, None, None]
    for number in range(10_000):
        assert connected(counts, f"net{number}") is None
        assert counts.networksRemembered <= 100
        if number % 50 == 0:
            assert connected(counts, "flood") == RATE
    assert counts.networksRemembered == 100
    assert connected(counts, "flood") == RATE


def test_theNetworkThatTriedLongestAgoIsForgotten() -> None:
    """
    With the networks remembered at their maximum, a new one takes the
    place of the one whose last try is oldest: a network that stopped
    trying while 100 others came gets its connections back, one that
    tried meanwhile does not.
    """
    counts: AddressCounts[str] = AddressCounts(lambda: 0.0, maxNetworks=100)
    for key in ("quiet", "busy"):
        assert [connected(counts, key) for _ in range(3)] == [None, None, None]
    for number in range(100):
        assert connected(counts, f"net{number}") is None
        if number == 98:
            assert connected(counts, "busy") == RATE
    assert connected(counts, "busy") == RATE
    assert connected(counts, "quiet") is None


def test_sharedCountRemembersAtMostMaxNetworks() -> None:
    """
    With the default maximum, in the count the main process keeps for its
    workers: connections from MAX_NETWORKS + 10,000 IPv6 /64s leave
    MAX_NETWORKS networks remembered, and an IPv4 address that keeps
    connecting among them is still refused once past its rate.
    """
    ledger = LocalLedger(lambda: 0.0)
    flood = "192.0.2.7/32"
    for _ in range(3):
        assert result(ledger.enter(flood, "lease", LIMITS)) is None
    for number in range(MAX_NETWORKS + 10_000):
        network = f"2001:db8:0:{number:x}::/64"
        assert result(ledger.enter(network, "lease", LIMITS)) is None
        ledger.leave(network, "lease")
        if number % 1000 == 0:
            assert result(ledger.enter(flood, "lease", LIMITS)) == RATE
    assert ledger.counts.networksRemembered == MAX_NETWORKS
    assert result(ledger.enter(flood, "lease", LIMITS)) == RATE
