"""
The Redis session ledger (popproxy/_redisledger.py) against a real redis-server started by the
tests: two ledgers (two instances) share one per-address session limit and one connection rate;
a session left frees its place; the sessions of a ledger that stops renewing (an instance
killed) stop counting once their lease runs out, while a live ledger's are renewed past it and
put back after Redis lost them; every key expires on its own.

The reactor is driven as in tests/test_redisstore.py (the global one, in short iterations).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from twisted.internet import reactor

from popproxy._addresscounts import ADDRESS, RATE, AddressLimits
from popproxy._redisclient import RedisClient
from popproxy._redisledger import RedisLedger
from tests.peers.redis import RedisServer, command
from tests.test_redisstore import clients, makeClient, wait

__all__ = ["clients"]

LIMITS = AddressLimits(perAddress=3, connectionRate=100, rateInterval=60)
NETWORK = "192.0.2.7/32"


@pytest.fixture
def ledgers(redis: RedisServer, clients: list[RedisClient]) -> Iterator[list[RedisLedger]]:
    """
    Two ledgers with 1 s leases, each on its own connection (two instances); renewals stopped
    at the end of the test.
    """
    made = []
    for _ in range(2):
        clients.append(makeClient(redis))
        made.append(RedisLedger(clients[-1], reactor, "popproxy:", 1.0))
    yield made
    for ledger in made:
        ledger.stop()


def sessionsIn(redis: RedisServer) -> int:
    """What Redis holds for NETWORK: its session leases, expired ones included."""
    answer = command(redis.host, redis.port, b"ZCARD", f"popproxy:sessions:{NETWORK}".encode())
    return int(answer[1:])


def runFor(seconds: float) -> None:
    """Let the reactor run (renewals are due) for C{seconds}."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reactor.iterate(0.01)


def test_twoInstancesShareOneLimit(
    ledgers: list[RedisLedger], redis: RedisServer, clients: list[RedisClient]
) -> None:
    """
    Two sessions entered through one ledger and one through the other fill the limit of 3 for
    both; another network is not affected; a session left makes room.
    """
    one, two = ledgers
    assert wait(one.enter(NETWORK, "a.1", LIMITS)) is None
    assert wait(one.enter(NETWORK, "a.2", LIMITS)) is None
    assert wait(two.enter(NETWORK, "b.1", LIMITS)) is None
    assert wait(two.enter(NETWORK, "b.2", LIMITS)) == ADDRESS
    assert wait(one.enter(NETWORK, "a.3", LIMITS)) == ADDRESS
    assert wait(two.enter("192.0.2.8/32", "b.3", LIMITS)) is None
    assert sessionsIn(redis) == 3
    one.leave(NETWORK, "a.1")
    wait(clients[0].execute("PING"))  # one's connection: its ZREM is done
    assert wait(two.enter(NETWORK, "b.4", LIMITS)) is None
    assert one.held == 1 and two.held == 3


def test_connectionRateAcrossInstances(ledgers: list[RedisLedger]) -> None:
    """
    Connections admitted through either ledger count toward one rate; a refused one does not.
    """
    one, two = ledgers
    limits = AddressLimits(perAddress=100, connectionRate=3, rateInterval=60)
    for number, ledger in enumerate((one, two, one)):
        assert wait(ledger.enter(NETWORK, f"x.{number}", limits)) is None
        ledger.leave(NETWORK, f"x.{number}")
    assert wait(two.enter(NETWORK, "x.9", limits)) == RATE
    assert wait(one.enter(NETWORK, "x.10", limits)) == RATE


def test_deadInstanceSessionsRunOut(ledgers: list[RedisLedger], redis: RedisServer) -> None:
    """
    Instance A holds 3 sessions and dies (stops renewing, says nothing); B is refused until A's
    leases run out (1 s), then admitted.  B's own sessions, renewed, outlive their lease.
    """
    dead, live = ledgers
    for number in range(2):
        assert wait(dead.enter(NETWORK, f"a.{number}", LIMITS)) is None
    assert wait(live.enter(NETWORK, "b.0", LIMITS)) is None
    dead.stop()
    started = time.monotonic()
    assert wait(live.enter(NETWORK, "b.1", LIMITS)) == ADDRESS
    while wait(live.enter(NETWORK, "b.2", LIMITS)) == ADDRESS:
        assert time.monotonic() - started < 3.0, "the dead instance's sessions still count"
        runFor(0.05)
    assert time.monotonic() - started >= 0.8
    runFor(1.5)
    assert wait(live.enter(NETWORK, "b.3", LIMITS)) is None
    assert wait(live.enter(NETWORK, "b.4", LIMITS)) == ADDRESS


def test_renewalPutsSessionsBack(ledgers: list[RedisLedger], redis: RedisServer) -> None:
    """
    Redis restarted empty (FLUSHALL here): within one renewal (a third of the lease) the
    sessions still open count again; a session held without a check (admitted while Redis was
    down) counts too.
    """
    one, _ = ledgers
    assert wait(one.enter(NETWORK, "a.1", LIMITS)) is None
    one.hold(NETWORK, "a.2")
    redis.flush()
    assert sessionsIn(redis) == 0
    runFor(0.5)
    assert sessionsIn(redis) == 2


def test_keysExpireWithTheirLastLease(ledgers: list[RedisLedger], redis: RedisServer) -> None:
    """
    Keys carry an expiry no longer than the lease (sessions) or the interval (connections).
    """
    one, _ = ledgers
    wait(one.enter(NETWORK, "a.1", LIMITS))
    for key, most in (("sessions", 1000), ("connections", 60_000)):
        answer = command(redis.host, redis.port, b"PTTL", f"popproxy:{key}:{NETWORK}".encode())
        assert 0 < int(answer[1:]) <= most
