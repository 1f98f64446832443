"""
Tests for popproxy._loginthrottle: the brute-force policy across sessions,
over the in-process counters on a task.Clock.  What it proves: a failure
slows the address's next attempt on any session (hanging up gains
nothing), the wait doubles up to its cap, parallel sessions queue, a spray
over many accounts is blocked while a phone with a stale password is not,
an account attacked from many addresses is slowed except from an address
its owner logged in from, IPv6 counts per prefix, and each failure and
block is one fixed-format log line.
"""

from __future__ import annotations

from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from popproxy._counterstore import CounterStoreUnavailable
from popproxy._loginthrottle import (
    Admission,
    LoginThrottle,
    ThrottleSettings,
    addressPrefix,
)
from popproxy._memorycounters import MemoryCounters
from popproxy._metrics import Metrics
from tests.metricsamples import scrape, value

T = TypeVar("T")

ATTACKER = "192.0.2.66"
HOME = "198.51.100.7"


def now(deferred: Deferred[T]) -> T:
    results: list[T] = []
    deferred.addCallback(results.append)
    assert len(results) == 1, "the throttle did not answer at once"
    return results[0]


def made(**settings: object) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    clock.advance(1_000_000)
    throttle = LoginThrottle(
        MemoryCounters(clock),
        clock,
        ThrottleSettings(**settings),  # type: ignore[arg-type]
    )
    return throttle, clock


def test_firstAttemptGoesAtOnce() -> None:
    """
    An address with no failures is not held back.
    """
    throttle, _ = made()
    assert now(throttle.admit(HOME, "alice")) == Admission()


def test_hangingUpEarlyGainsNothing() -> None:
    """
    A failure holds back the address's next attempt on a new session too:
    a client that reconnects 50 ms after its failure still waits the rest
    of the delay before its password may go upstream.
    """
    throttle, clock = made()
    now(throttle.failed(ATTACKER, "bob"))
    clock.advance(0.05)
    assert now(throttle.admit(ATTACKER, "bob")).wait == pytest.approx(0.95)


def test_waitDoublesUpToItsCap() -> None:
    """
    Each failure doubles the wait: 1, 2, 4, 8, then 15 s at most.
    """
    throttle, clock = made()
    waits = []
    for _ in range(6):
        admission = now(throttle.admit(ATTACKER, "bob"))
        clock.advance(admission.wait)
        waits.append(admission.wait)
        now(throttle.failed(ATTACKER, "bob"))
    assert waits == [0, 1, 2, 4, 8, 15]


def test_parallelSessionsQueue() -> None:
    """
    Sessions opened in parallel from a penalised address go one after the
    other, each a delay apart; one that would wait longer than the cap is
    refused at once.
    """
    throttle, _ = made(maxDelay=4.0)
    now(throttle.failed(ATTACKER, "bob"))
    waits = [now(throttle.admit(ATTACKER, "bob")) for _ in range(5)]
    assert [a.wait for a in waits[:4]] == [1, 2, 3, 4]
    assert waits[4].queueFull and waits[4].refused


def test_stalePhoneIsSlowedNotBlocked() -> None:
    """
    A phone polling every minute with a stale password for one account
    fails for hours from one address and is never blocked.
    """
    throttle, clock = made()
    for _ in range(240):
        admission = now(throttle.admit(HOME, "alice"))
        assert not admission.refused
        clock.advance(admission.wait)
        now(throttle.failed(HOME, "alice"))
        clock.advance(60)


def test_sprayIsBlocked() -> None:
    """
    Failures against six distinct accounts from one address block it: the
    next attempt, for any account, is refused without waiting, until the
    block ends.
    """
    throttle, clock = made()
    with capturedLogs() as events:
        for number in range(6):
            clock.advance(now(throttle.admit(ATTACKER, f"user{number}")).wait)
            now(throttle.failed(ATTACKER, f"user{number}"))
    blocked = now(throttle.admit(ATTACKER, "someone"))
    assert blocked.refused and blocked.blockedUntil is not None
    assert blocked.blockedUntil == clock.seconds() + 900
    lines = [formatEvent(event) for event in events]
    assert lines[-1] == f"login block: client={ATTACKER} seconds=900 account=user5"
    assert sum(line.startswith("login failure:") for line in lines) == 6
    clock.advance(901)
    assert not now(throttle.admit(ATTACKER, "someone")).refused


def test_retriesOfOneAccountCountLessThanNewAccounts() -> None:
    """
    Retries of one account weigh one each: 25 failures for one account do
    not block, where 6 distinct accounts did.
    """
    throttle, clock = made()
    for _ in range(25):
        clock.advance(now(throttle.admit(ATTACKER, "bob")).wait)
        now(throttle.failed(ATTACKER, "bob"))
    assert not now(throttle.admit(ATTACKER, "bob")).refused


def test_accountSlowedFromEveryAddressButItsOwners() -> None:
    """
    Failures for one account from many addresses slow that account's
    next attempt from a new address, but not from the address its owner
    logged in from before.
    """
    throttle, clock = made()
    now(throttle.succeeded(HOME, "alice"))
    for number in range(4):
        now(throttle.failed(f"203.0.113.{number}", "alice"))
    assert now(throttle.admit("203.0.113.200", "Alice")).wait == 8
    assert now(throttle.admit(HOME, "alice")).wait == 0
    assert now(throttle.admit("203.0.113.201", "bob")).wait == 0


def test_successResetsTheAddressDelay() -> None:
    """
    A successful login from an address lets its next attempt go at once
    (as Dovecot's penalty does).
    """
    throttle, _ = made()
    now(throttle.failed(HOME, "alice"))
    now(throttle.failed(HOME, "alice"))
    now(throttle.succeeded(HOME, "alice"))
    assert now(throttle.admit(HOME, "alice")).wait == 0


def test_ipv6CountsPerPrefix() -> None:
    """
    IPv6 failures count for the address's /64: another address of the same
    /64 waits, one of another /64 does not; IPv4-mapped addresses count as
    the IPv4 address.
    """
    throttle, _ = made()
    now(throttle.failed("2001:db8:0:1::5", "bob"))
    assert now(throttle.admit("2001:db8:0:1::99", "carol")).wait == 1
    assert now(throttle.admit("2001:db8:0:2::5", "carol")).wait == 0
    assert addressPrefix("::ffff:192.0.2.1", 64) == "192.0.2.1"
    assert addressPrefix("2001:db8::1", 48) == "2001:db8::/48"


def test_failureLogLine() -> None:
    """
    A failure is logged as one line with the client's address and the
    account, unprintable characters escaped.
    """
    throttle, _ = made()
    with capturedLogs() as events:
        now(throttle.failed(ATTACKER, "bob\nlogin block: client=10.0.0.1"))
    assert [formatEvent(event) for event in events] == [
        f"login failure: client={ATTACKER} account=bob\\x0alogin block: client=10.0.0.1"
    ]


class BrokenStore(MemoryCounters):
    """
    A store that cannot answer (Redis down, say).
    """

    def blockedUntil(self, key: str) -> Deferred[float | None]:
        return fail(CounterStoreUnavailable("down"))

    def hit(self, key: str, amount: int, ttl: float) -> Deferred[int]:
        return fail(CounterStoreUnavailable("down"))


def test_brokenStoreAdmits() -> None:
    """
    When the counters cannot be read, the attempt goes on (logged), rather
    than every login failing with the store.
    """
    clock = Clock()
    throttle = LoginThrottle(BrokenStore(clock), clock)
    with capturedLogs() as events:
        assert now(throttle.admit(HOME, "alice")) == Admission()
        assert now(throttle.failed(HOME, "alice")) is None
    assert any("the counters failed" in formatEvent(event) for event in events)


def test_metricsCountThrottlingAndBlocks() -> None:
    """
    Held-back and refused attempts and blocks are counted in the metrics.
    """
    registry = CollectorRegistry()
    metrics = Metrics()
    metrics.begin(registry, None)
    clock = Clock()
    throttle = LoginThrottle(MemoryCounters(clock), clock, ThrottleSettings(), metrics)
    for number in range(6):
        clock.advance(now(throttle.admit(ATTACKER, f"user{number}")).wait)
        now(throttle.failed(ATTACKER, f"user{number}"))
    now(throttle.admit(ATTACKER, "x"))
    samples = scrape(registry)
    assert value(samples, "popproxy_logins_throttled_total", reason="delayed") == 5
    assert value(samples, "popproxy_logins_throttled_total", reason="blocked") == 1
    assert value(samples, "popproxy_login_blocks_total") == 1
