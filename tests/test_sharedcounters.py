"""
Tests for popproxy._sharedcounters: workers count in the main process's
store over their socket pairs (here iosim's in-memory connections), so a
failure counted by one worker slows and blocks the address in another; a
worker that loses the main process, or gets no answer in time, counts on
its own with one warning; a malformed request ends the connection.  The
same pair carries the sessions per client network: one per-address limit
for all workers, and a worker that is gone leaves none of its sessions
counted.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.test import iosim

from popproxy._activity import ActivityWatch, FilterRun, LoginBlock
from popproxy._addresscounts import ADDRESS, AddressLimits, LocalLedger
from popproxy._counterstore import CounterStoreUnavailable
from popproxy._loginthrottle import LoginThrottle
from popproxy._memorycounters import MemoryCounters
from popproxy._sharedcounters import ANSWER_TIMEOUT, CounterServer, RemoteCounters

T = TypeVar("T")


class Worker:
    """
    One worker's RemoteCounters connected to a CounterServer of the main
    process's store.
    """

    def __init__(
        self,
        store: MemoryCounters,
        clock: Clock,
        ledger: LocalLedger | None = None,
        watch: ActivityWatch | None = None,
    ) -> None:
        self.server = CounterServer(store, ledger, watch, clock)
        self.sessions: tuple[Any, ...] = ()
        self.counters = RemoteCounters(clock, lambda: self.sessions)
        self.pump = iosim.connect(
            self.server,
            iosim.makeFakeServer(self.server),
            self.counters,
            iosim.makeFakeClient(self.counters),
            clock=clock,
        )

    def answer(self, deferred: Deferred[T]) -> T:
        """
        Carry the request and its answer; the result.
        """
        results: list[Any] = []
        deferred.addBoth(results.append)
        self.pump.flush()
        assert len(results) == 1, "no answer"
        return results[0]


def test_workersShareOneStore() -> None:
    """
    What one worker counts, another reads; keys with spaces and control
    characters arrive as they were.
    """
    clock = Clock()
    store = MemoryCounters(clock)
    one, two = Worker(store, clock), Worker(store, clock)
    key = "tried:192.0.2.1|bob smith\r\nx"
    assert one.answer(one.counters.hit(key, 2, 60)) == 2
    assert two.answer(two.counters.hit(key, 3, 60)) == 5
    assert two.answer(two.counters.count(key)) == 5
    one.answer(one.counters.blockUntil("block:192.0.2.1", 100.5))
    assert two.answer(two.counters.blockedUntil("block:192.0.2.1")) == 100.5
    two.answer(two.counters.forget(key))
    assert one.answer(one.counters.count(key)) == 0


def test_failureInOneWorkerBlocksInAnother() -> None:
    """
    A spray whose failures land on one worker blocks the address for the
    other worker's sessions too.
    """
    clock = Clock()
    store = MemoryCounters(clock)
    one, two = Worker(store, clock), Worker(store, clock)
    first = LoginThrottle(one.counters, clock)
    second = LoginThrottle(two.counters, clock)
    for number in range(6):
        one.answer(first.failed("192.0.2.66", f"user{number}"))
    admission = two.answer(second.admit("192.0.2.66", "anyone"))
    assert admission.refused and admission.blockedUntil == 900


def test_mainProcessGoneCountsLocally() -> None:
    """
    When the main process's end closes, a request in flight fails, the
    worker warns once and counts on its own from then on.
    """
    clock = Clock()
    worker = Worker(MemoryCounters(clock), clock)
    worker.pump.flush()
    waiting = worker.counters.hit("a", 1, 60)
    failures: list[Any] = []
    waiting.addErrback(failures.append)
    with capturedLogs() as events:
        worker.server.transport.loseConnection()  # type: ignore[union-attr]
        worker.pump.flush()
        assert failures and failures[0].check(CounterStoreUnavailable)
        assert worker.answer(worker.counters.hit("a", 1, 60)) == 1
        assert worker.answer(worker.counters.hit("a", 1, 60)) == 2
    warnings = [formatEvent(e) for e in events if "unavailable" in formatEvent(e)]
    assert len(warnings) == 1
    assert "counting in this worker" in warnings[0]


def test_noAnswerInTimeCountsLocally() -> None:
    """
    A main process that does not answer within ANSWER_TIMEOUT fails the
    request; the worker counts on its own from then on.
    """
    clock = Clock()
    counters = RemoteCounters(clock)
    transport = iosim.makeFakeClient(counters)
    counters.makeConnection(transport)
    waiting = counters.count("a")
    failures: list[Any] = []
    waiting.addErrback(failures.append)
    clock.advance(ANSWER_TIMEOUT)
    assert failures and failures[0].check(CounterStoreUnavailable)
    results: list[int] = []
    counters.hit("a", 4, 60).addCallback(results.append)
    assert results == [4]


def test_malformedRequestEndsConnection() -> None:
    """
    A request that is not one of the store's methods closes the worker's
    connection instead of calling anything.
    """
    clock = Clock()
    server = CounterServer(MemoryCounters(clock))
    transport = iosim.makeFakeServer(server)
    server.makeConnection(transport)
    with capturedLogs():
        server.dataReceived(b'[1, "__init__", 1]\n')
    assert transport.disconnecting


LIMITS = AddressLimits(perAddress=2, connectionRate=100, rateInterval=60)


def test_workersShareOnePerAddressLimit() -> None:
    """
    Two sessions of 192.0.2.1 entered through two workers fill its limit
    for both; a lease held without a check (admitted while the main
    process did not answer) counts once however often it is held; a
    session left makes room again.
    """
    clock = Clock()
    store, ledger = MemoryCounters(clock), LocalLedger(clock.seconds)
    one, two = Worker(store, clock, ledger), Worker(store, clock, ledger)
    assert one.answer(one.counters.enter("192.0.2.1/32", "a.1", LIMITS)) is None
    assert two.answer(two.counters.enter("192.0.2.1/32", "b.1", LIMITS)) is None
    assert one.answer(one.counters.enter("192.0.2.1/32", "a.2", LIMITS)) == ADDRESS
    assert two.answer(two.counters.enter("192.0.2.9/32", "b.2", LIMITS)) is None
    one.counters.hold("192.0.2.9/32", "a.3")
    one.counters.hold("192.0.2.9/32", "a.3")
    one.pump.flush()
    assert ledger.counts.sessions("192.0.2.9/32") == 2
    two.counters.leave("192.0.2.1/32", "b.1")
    two.pump.flush()
    assert one.answer(one.counters.enter("192.0.2.1/32", "a.4", LIMITS)) is None


def test_workerGoneLeavesItsSessions() -> None:
    """
    When a worker's end of the pair closes (it died, even by SIGKILL), the
    main process stops counting every session it held, and only those.
    """
    clock = Clock()
    store, ledger = MemoryCounters(clock), LocalLedger(clock.seconds)
    one, two = Worker(store, clock, ledger), Worker(store, clock, ledger)
    for lease in ("a.1", "a.2"):
        assert one.answer(one.counters.enter("192.0.2.1/32", lease, LIMITS)) is None
    assert one.answer(one.counters.enter("192.0.2.1/32", "a.3", LIMITS)) == ADDRESS
    one.counters.transport.loseConnection()  # type: ignore[union-attr]
    one.pump.flush()
    assert ledger.counts.sessions("192.0.2.1/32") == 0
    assert two.answer(two.counters.enter("192.0.2.1/32", "b.1", LIMITS)) is None
    assert ledger.counts.sessions("192.0.2.1/32") == 1


def test_workerWithoutMainProcessDecidesAlone() -> None:
    """
    Once the main process is gone, a worker's admission question fails at
    once (the caller decides on its own counts).
    """
    clock = Clock()
    worker = Worker(MemoryCounters(clock), clock, LocalLedger(clock.seconds))
    worker.server.transport.loseConnection()  # type: ignore[union-attr]
    worker.pump.flush()
    failure: Any = worker.answer(worker.counters.enter("192.0.2.1/32", "a.1", LIMITS))
    assert failure.check(CounterStoreUnavailable)


def test_workersActivityReachesTheMainProcess() -> None:
    """
    A worker's filter answers and login blocks arrive, as they were, at
    the main process's watch (the console's), told without waiting; a
    main process without a watch drops them; after the main process is
    gone the worker tells nothing and goes on.
    """
    clock = Clock()
    runs: list[tuple[FilterRun, ...]] = []
    blocks: list[LoginBlock] = []
    worker = Worker(MemoryCounters(clock), clock, watch=ActivityWatch(runs.append, blocks.append))
    told = worker.counters.activityWatch()
    ran = (FilterRun("scan", "replace", 0.25), FilterRun("strip naïve", "deliver", 0.0))
    told.filtersRan(ran)
    block = LoginBlock("2001:db8::/64", "bob\r\nsmith", 10.5, 910.5)
    told.loginBlocked(block)
    worker.pump.flush()
    assert runs == [ran] and blocks == [block]
    blind = Worker(MemoryCounters(clock), clock)
    blind.counters.filtersRan(ran)
    blind.pump.flush()
    # (Not None first: mypy-zope takes an isinstance on "ITransport | None" for unreachable.)
    transport = blind.counters.transport
    assert transport is not None
    assert isinstance(transport, iosim.FakeTransport) and not transport.disconnecting
    worker.counters.transport.loseConnection()  # type: ignore[union-attr]
    worker.pump.flush()
    told.filtersRan(ran)
    worker.pump.flush()
    assert runs == [ran]


@pytest.mark.parametrize("count", [0, 1, 20, 21, 41, 500])
def test_aWorkerWithManySessionsTellsThemAll(count: int) -> None:
    """
    However many sessions a worker holds (500 would make one line of
    some 60 KB, over the line limit), the main process gets every one,
    and the pair stays connected: the next counter request is answered.
    """
    from popproxy._sessionrecord import SessionSnapshot

    clock = Clock()
    worker = Worker(MemoryCounters(clock), clock)
    worker.sessions = tuple(
        SessionSnapshot(
            f"{n:x}",
            "proxy.listen[0]",
            f"192.0.2.{n % 250}:{4000 + n}",
            "bob",
            None,
            5.5,
            2,
            10,
            99,
        )
        for n in range(count)
    )
    assert worker.answer(worker.server.askSessions()) == worker.sessions
    assert worker.answer(worker.counters.hit("k", 1, 60)) == 1


def test_mainProcessAsksAWorkerForItsSessions() -> None:
    """
    The main process's question gets the worker's open sessions as they
    are; one the worker cannot answer in time fails after the timeout;
    once the worker is gone a question fails at once.
    """
    from popproxy._sessionrecord import SessionSnapshot

    clock = Clock()
    worker = Worker(MemoryCounters(clock), clock)
    worker.sessions = (
        SessionSnapshot(
            "3", "proxy.listen[0]", "[2001:db8::1]:4000", "bob\r\n", None, 5.5, 2, 10, 99
        ),
    )
    assert worker.answer(worker.server.askSessions()) == worker.sessions
    silent: list[Any] = []
    worker.server.askSessions().addBoth(silent.append)
    clock.advance(ANSWER_TIMEOUT + 0.1)
    assert silent and isinstance(silent[0].value, Exception)
    worker.counters.transport.loseConnection()  # type: ignore[union-attr]
    worker.pump.flush()
    gone: list[Any] = []
    worker.server.askSessions().addBoth(gone.append)
    worker.pump.flush()
    assert gone and isinstance(gone[0].value, Exception)


def test_workerStoppingClosesWithoutWarning() -> None:
    """
    A worker that ends (its reactor shuts down, or it retires) closes its
    end itself: no warning that the main process went away, and a request
    still in flight fails instead of waiting forever, and the sessions
    finishing their last commands are answered by the worker's own counts.
    """
    clock = Clock()
    worker = Worker(MemoryCounters(clock), clock)
    worker.pump.flush()
    waiting = worker.counters.hit("a", 1, 60)
    failures: list[Any] = []
    waiting.addErrback(failures.append)
    with capturedLogs() as events:
        worker.counters.stopping()
        worker.counters.transport.loseConnection()  # type: ignore[union-attr]
        worker.pump.flush()
        assert worker.answer(worker.counters.hit("a", 1, 60)) == 1
    assert failures and failures[0].check(CounterStoreUnavailable)
    assert [formatEvent(e) for e in events if "unavailable" in formatEvent(e)] == []
