"""
The Redis counter store (popproxy/_redisstore.py) against a real redis-server started by the
tests: every ICounterStore operation's semantics (fixed windows that expire, deadlines that only
grow, forgetting), namespaced keys, two connections hitting one key, the database and ACL login
from the URL; then Redis killed mid-test (calls fail fast with CounterStoreUnavailable, the
fallback answers locally with one warning) and started again (used again).

The tests drive the global reactor in short iterations until each Deferred fires (with a bound),
so the client runs on the very reactor the proxy uses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from popproxy._counterstore import CounterStoreUnavailable
from popproxy._fallbackstore import FallbackCounterStore
from popproxy._redisclient import Backoff, RedisClient
from popproxy._redisstore import RedisCounterStore, counterStoreFor, redisClientFor
from popproxy._storeaddress import RedisAddress
from tests.peers.redis import RedisServer, command
from tests.test_fallbackstore import DictStore

ANSWER_WITHIN = 5.0


def wait(deferred: Deferred[Any], timeout: float = ANSWER_WITHIN) -> Any:
    """
    Run the reactor until C{deferred} fires; return its result or raise its failure.
    """
    results: list[Any] = []
    deferred.addBoth(results.append)
    deadline = time.monotonic() + timeout
    while not results:
        assert time.monotonic() < deadline, f"no answer within {timeout}s"
        reactor.iterate(0.005)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def unavailableWithin(deferred: Deferred[Any]) -> float:
    """
    Assert that C{deferred} fails with CounterStoreUnavailable; return how long it took.
    """
    started = time.monotonic()
    with pytest.raises(CounterStoreUnavailable):
        wait(deferred)
    return time.monotonic() - started


def makeClient(redis: RedisServer, timeout: float = 2.0) -> RedisClient:
    """
    A client of the test Redis; a generous timeout (the machine may be loaded) except where a
    test says otherwise.
    """
    endpoint = TCP4ClientEndpoint(reactor, redis.host, redis.port, timeout=timeout)
    return RedisClient(reactor, endpoint, timeout=timeout, backoff=Backoff(0.2, 0.4))


@pytest.fixture
def clients() -> Iterator[list[RedisClient]]:
    """
    The clients a test makes, closed at its end (no connection outlives a test).
    """
    made: list[RedisClient] = []
    yield made
    for client in made:
        wait(client.close())


@pytest.fixture
def store(redis: RedisServer, clients: list[RedisClient]) -> RedisCounterStore:
    clients.append(makeClient(redis))
    return RedisCounterStore(clients[-1], reactor)


def raw(redis: RedisServer, *arguments: str) -> bytes:
    """One command sent straight to Redis: what is really stored."""
    return command(redis.host, redis.port, *(argument.encode() for argument in arguments))


def test_hitCountsAndCountReads(store: RedisCounterStore, redis: RedisServer) -> None:
    """
    hit adds and answers the new value; count reads it (0 for an unknown key); the counter is
    a popproxy:-prefixed key with an expiry.
    """
    assert wait(store.count("203.0.113.7")) == 0
    assert wait(store.hit("203.0.113.7", 1, 60)) == 1
    assert wait(store.hit("203.0.113.7", 3, 60)) == 4
    assert wait(store.count("203.0.113.7")) == 4
    assert raw(redis, "INCRBY", "popproxy:count:203.0.113.7", "0") == b":4"
    assert 59_000 <= int(raw(redis, "PTTL", "popproxy:count:203.0.113.7")[1:]) <= 60_000


def test_keysOfAnyClientBytes(store: RedisCounterStore) -> None:
    """
    A key holding a login name that was not UTF-8 (decoded with
    surrogateescape) is counted like any other, not failed.
    """
    key = "accountpenalty:" + b"\xff\xferoot".decode("utf-8", "surrogateescape")
    assert wait(store.hit(key, 1, 60)) == 1
    assert wait(store.hit(key, 1, 60)) == 2
    assert wait(store.count(key)) == 2


def test_aWindowIsFixedAtTheFirstHit(store: RedisCounterStore, redis: RedisServer) -> None:
    """
    Later hits do not extend the window, even with a longer ttl.
    """
    wait(store.hit("user@example.org", 1, 30))
    wait(store.hit("user@example.org", 1, 600))
    assert int(raw(redis, "PTTL", "popproxy:count:user@example.org")[1:]) <= 30_000


def test_aCounterExpiresAfterItsTtl(store: RedisCounterStore) -> None:
    """
    A counter with a 0.3 s window reads 0 once the window is over, and not before.
    """
    started = time.monotonic()
    wait(store.hit("short", 2, 0.3))
    while wait(store.count("short")) != 0:
        assert time.monotonic() - started < ANSWER_WITHIN
    assert time.monotonic() - started >= 0.29
    assert wait(store.hit("short", 1, 0.3)) == 1


def test_deadlinesOnlyGrow(store: RedisCounterStore, redis: RedisServer) -> None:
    """
    A later deadline replaces an earlier one, an earlier one is ignored, a past one is not
    recorded; deadlines read back exactly; the key outlives the deadline by a minute at most.
    """
    now = reactor.seconds()
    assert wait(store.blockedUntil("198.51.100.0/24")) is None
    wait(store.blockUntil("198.51.100.0/24", now + 100.125))
    wait(store.blockUntil("198.51.100.0/24", now + 50))
    assert wait(store.blockedUntil("198.51.100.0/24")) == now + 100.125
    wait(store.blockUntil("198.51.100.0/24", now + 200.5))
    assert wait(store.blockedUntil("198.51.100.0/24")) == now + 200.5
    assert 250_000 <= int(raw(redis, "PTTL", "popproxy:block:198.51.100.0/24")[1:]) <= 260_500
    wait(store.blockUntil("elsewhere", now - 1))
    assert raw(redis, "EXISTS", "popproxy:block:elsewhere") == b":0"


def test_aDeadlineEndsOnTheCallersClock(store: RedisCounterStore) -> None:
    """
    Once the deadline has passed, blockedUntil answers None (the key itself lingers).
    """
    until = reactor.seconds() + 0.3
    wait(store.blockUntil("soon", until))
    assert wait(store.blockedUntil("soon")) == until
    while wait(store.blockedUntil("soon")) is not None:
        assert reactor.seconds() < until + ANSWER_WITHIN
    assert reactor.seconds() >= until


def test_forgetDropsCounterAndDeadline(store: RedisCounterStore) -> None:
    """
    After forget, the key counts 0 and is not blocked; other keys keep theirs.
    """
    until = reactor.seconds() + 60
    for key in ("a", "b"):
        wait(store.hit(key, 5, 60))
        wait(store.blockUntil(key, until))
    wait(store.forget("a"))
    assert wait(store.count("a")) == 0 and wait(store.blockedUntil("a")) is None
    assert wait(store.count("b")) == 5 and wait(store.blockedUntil("b")) == until


def test_twoInstancesHittingOneKeyCountEveryHit(
    redis: RedisServer, clients: list[RedisClient]
) -> None:
    """
    Two connections (two proxy instances) pipelining 200 hits each on one key, interleaved:
    every hit gets its own value, the total is exact and the key has its expiry.
    """
    clients.extend([makeClient(redis), makeClient(redis)])
    stores = [RedisCounterStore(client, reactor) for client in clients]
    hits = [stores[i % 2].hit("shared", 1, 60) for i in range(400)]
    values = wait(gatherResults(hits))
    assert sorted(values) == list(range(1, 401))
    assert wait(stores[0].count("shared")) == 400
    assert int(raw(redis, "PTTL", "popproxy:count:shared")[1:]) > 0


def test_theURLChoosesDatabasePrefixAndLogin(
    redis: RedisServer, clients: list[RedisClient]
) -> None:
    """
    A client made from a URL logs in with its user and password and uses its database and
    key prefix; a wrong password is CounterStoreUnavailable saying so.
    """
    assert raw(redis, "ACL", "SETUSER", "proxy", "on", ">s3cret", "~*", "+@all") == b"+OK"
    address = RedisAddress(redis.host, redis.port, 3, "proxy", "s3cret", prefix="site-a:")
    clients.append(redisClientFor(reactor, address))
    store = RedisCounterStore(clients[-1], reactor, address.prefix)
    assert wait(store.hit("k", 7, 60)) == 7
    assert raw(redis, "EXISTS", "site-a:count:k") == b":0"
    wrong = RedisAddress(redis.host, redis.port, 3, "proxy", "nope")
    clients.append(redisClientFor(reactor, wrong))
    with pytest.raises(CounterStoreUnavailable, match="WRONGPASS"):
        wait(RedisCounterStore(clients[-1], reactor).count("k"))
    clients.append(redisClientFor(reactor, RedisAddress(redis.host, redis.port, 3)))
    assert wait(RedisCounterStore(clients[-1], reactor, "site-a:").count("k")) == 7


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The fallback store's log lines during the test, as "level: text"."""
    lines: list[str] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_namespace", "").startswith("popproxy._fallbackstore"):
            lines.append(f"{event['log_level'].name}: {formatEvent(event)}")

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_redisDownFallsBackAndRedisBackIsUsedAgain(
    redis: RedisServer, clients: list[RedisClient], logged: list[str]
) -> None:
    """
    Redis killed mid-test: the Redis store fails fast with CounterStoreUnavailable (bounded by
    its 0.5 s timeout, at once while reconnecting waits), the fallback answers every call from
    the local store with exactly one warning; Redis started again: after the backoff the
    shared counters are used again, with one line saying so.
    """
    clients.append(makeClient(redis, timeout=0.5))
    shared = RedisCounterStore(clients[-1], reactor)
    local = DictStore()
    store = FallbackCounterStore(shared, local, f"redis://{redis.host}:{redis.port}/0")
    assert wait(store.hit("203.0.113.9", 1, 60)) == 1
    redis.kill()
    assert unavailableWithin(shared.count("203.0.113.9")) < 1.0
    assert unavailableWithin(shared.count("203.0.113.9")) < 0.25
    assert [wait(store.hit("203.0.113.9", 1, 60)) for _ in range(20)] == list(range(1, 21))
    assert wait(store.count("203.0.113.9")) == 20
    assert len(logged) == 1 and logged[0].startswith("warn: counter store redis://")
    redis.start()
    started = time.monotonic()
    while wait(store.hit("203.0.113.9", 1, 60)) != 1:
        assert time.monotonic() - started < ANSWER_WITHIN, logged
    assert raw(redis, "INCRBY", "popproxy:count:203.0.113.9", "0") == b":1"
    assert [line.split(":")[0] for line in logged] == ["warn", "info"]


def test_theHookBuildsTheStoreTheSettingAsksFor(redis: RedisServer, logged: list[str]) -> None:
    """
    "memory" keeps the local store; a Redis address gives the shared store with the local one
    behind it.
    """
    local = DictStore()
    assert counterStoreFor(None, local, reactor) is local
    store = counterStoreFor(RedisAddress(redis.host, redis.port), local, reactor)
    assert isinstance(store, FallbackCounterStore)
    assert wait(store.hit("k", 2, 60)) == 2 and local.calls == 0
    assert raw(redis, "INCRBY", "popproxy:count:k", "0") == b":2"
    redis.kill()
    assert wait(store.count("k")) == 0 and local.calls == 1
    assert len(logged) == 1
