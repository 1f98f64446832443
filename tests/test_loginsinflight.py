"""
Tests for popproxy._loginsinflight: the cap on login attempts from one
client network awaiting their verdict, on a task.Clock.  What it proves:
the first C{limit} attempts go at once and the next waits until one of them
has its verdict; a wait is bounded (refused after C{max_wait}); networks
are independent, IPv6 counts per prefix, trusted networks and clients
without an IP address are not capped; with a shared ledger two processes
share one cap, and a ledger that fails is replaced by the process's own
count (told to the outage once, not asked while it is down).
"""

from __future__ import annotations

from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from popproxy._addresscounts import AddressLimits, LocalLedger
from popproxy._counterstore import CounterStoreUnavailable
from popproxy._fallbackstore import StoreOutage
from popproxy._loginsinflight import LAST_RETRY, InFlight, LoginsInFlight
from popproxy._metrics import Metrics
from popproxy._sessionledger import ISessionLedger
from tests.metricsamples import scrape, value

T = TypeVar("T")

ATTACKER = "192.0.2.66"


def fired(deferred: Deferred[T]) -> list[T]:
    """
    What C{deferred} fired with, as a list that fills in when it does.
    """
    results: list[T] = []
    deferred.addCallback(results.append)
    return results


def begun(registry: CollectorRegistry) -> Metrics:
    metrics = Metrics()
    metrics.begin(registry, None)
    return metrics


def made(limit: int = 2, maxWait: float = 15.0, **options: object) -> tuple[LoginsInFlight, Clock]:
    clock = Clock()
    clock.advance(1_000_000)
    return LoginsInFlight(clock, limit, maxWait=maxWait, **options), clock  # type: ignore[arg-type]


def place(gate: LoginsInFlight, address: str = ATTACKER) -> InFlight:
    [got] = fired(gate.enter(address))
    assert got is not None
    return got


def test_firstAttemptsGoAtOnceTheNextWaitsForAVerdict() -> None:
    """
    Two attempts from one address get their places at once; a third waits
    until one of them has its verdict, then goes within one retry.
    """
    gate, clock = made()
    first = place(gate)
    place(gate)
    third = fired(gate.enter(ATTACKER))
    clock.advance(5)
    assert third == []
    gate.leave(first)
    clock.advance(LAST_RETRY)
    assert len(third) == 1 and third[0] is not None
    assert gate.inFlight(ATTACKER) == 2


def test_waitIsBounded() -> None:
    """
    An attempt that finds no place within C{maxWait} is refused (fires
    with None) and counted in the metrics; the places are left as they were.
    """
    registry = CollectorRegistry()
    gate, clock = made(limit=1, maxWait=3.0, metrics=begun(registry))
    place(gate)
    waiting = fired(gate.enter(ATTACKER))
    clock.advance(2.9)
    assert waiting == []
    clock.advance(0.2)
    assert waiting == [None]
    assert gate.inFlight(ATTACKER) == 1
    samples = scrape(registry)
    assert value(samples, "popproxy_logins_throttled_total", reason="in_flight_full") == 1


def test_waitedAttemptIsCounted() -> None:
    """
    An attempt that had to wait for its place shows in the metrics as
    C{in_flight_wait}; one that went at once does not.
    """
    registry = CollectorRegistry()
    gate, clock = made(limit=1, metrics=begun(registry))
    first = place(gate)
    waiting = fired(gate.enter(ATTACKER))
    gate.leave(first)
    clock.advance(1)
    assert len(waiting) == 1 and waiting[0] is not None
    samples = scrape(registry)
    assert value(samples, "popproxy_logins_throttled_total", reason="in_flight_wait") == 1


def test_networksAreIndependent() -> None:
    """
    A network with its places taken does not hold back another's attempts.
    """
    gate, _ = made(limit=1)
    place(gate)
    place(gate, "198.51.100.7")


def test_ipv6CountsPerPrefix() -> None:
    """
    Two addresses of one /64 share its places; another /64 has its own.
    """
    gate, _ = made(limit=1, ipv6Prefix=64)
    place(gate, "2001:db8:1:1::1")
    assert fired(gate.enter("2001:db8:1:1::2")) == []
    place(gate, "2001:db8:1:2::1")


def test_trustedAndAddresslessAreNotCapped() -> None:
    """
    Clients in a trusted network (a local TLS terminator makes every
    client look like one) and clients without an IP address take no place.
    """
    gate, _ = made(limit=1, trusted=("127.0.0.0/8",))
    for _ in range(5):
        gate.leave(place(gate, "127.0.0.1"))
        place(gate, "127.0.0.1")
        place(gate, "")
    assert gate.inFlight("127.0.0.1") == 0


def test_sharedLedgerCapsTwoProcessesTogether() -> None:
    """
    Two processes asking one ledger (the main process's, or Redis) share
    one cap: with one place, the second process's attempt waits until the
    first process's attempt leaves.
    """
    clock = Clock()
    ledger = LocalLedger(clock.seconds)
    one = LoginsInFlight(clock, 1, maxWait=15.0, ledger=ledger)
    two = LoginsInFlight(clock, 1, maxWait=15.0, ledger=ledger)
    first = place(one)
    waiting = fired(two.enter(ATTACKER))
    clock.advance(1)
    assert waiting == []
    one.leave(first)
    clock.advance(LAST_RETRY)
    assert len(waiting) == 1 and waiting[0] is not None and waiting[0].shared


class BrokenLedger:
    """
    A shared ledger that cannot answer; counts how often it was asked.
    """

    def __init__(self) -> None:
        self.asked = 0

    def enter(self, key: str, lease: str, limits: AddressLimits) -> Deferred[str | None]:
        self.asked += 1
        return fail(CounterStoreUnavailable("Redis unreachable"))

    def hold(self, key: str, lease: str) -> None:
        raise AssertionError("not used")

    def leave(self, key: str, lease: str) -> None:
        raise AssertionError("a place it never gave was given back to it")


def test_failingLedgerFallsBackToOwnCount() -> None:
    """
    A shared ledger that fails: the attempt is counted in the process's
    own count (still capped), the outage is told once, and while it is
    down the ledger is not asked again.
    """
    ledger = BrokenLedger()
    checked: ISessionLedger = ledger
    outage = StoreOutage("redis://192.0.2.1:6379/0")
    gate, _ = made(limit=1, ledger=checked, outage=outage)
    first = place(gate)
    assert not first.shared and outage.down
    assert fired(gate.enter(ATTACKER)) == []
    assert ledger.asked == 1
    gate.leave(first)
    assert gate.inFlight(ATTACKER) == 0


@pytest.mark.parametrize("limit", [1, 3])
def test_limitIsTheCap(limit: int) -> None:
    """
    Exactly C{limit} attempts go at once, whatever the limit.
    """
    gate, _ = made(limit=limit)
    for _ in range(limit):
        place(gate)
    assert fired(gate.enter(ATTACKER)) == []
