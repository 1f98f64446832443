"""
Tests for L{popproxy._filterthreads}: work runs in pool threads, its result
reaches the "reactor" thread (here the test's), and cancelling a call
really stops it: its thread stops using the CPU and serves the next call.

Real threads; the reactor's C{callFromThread} is a queue the test drains,
and the write-off timer is a L{Clock}.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from popproxy import _filterthreads
from popproxy._filterthreads import FilterInterrupted, FilterThreads, FilterThreadsExhausted


class Reactor:
    """
    The test thread as the reactor thread: calls handed over with
    C{callFromThread} run when the test L{pump}s.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        self.clock = Clock()

    def callFromThread(self, function: Callable[..., Any], *args: Any) -> None:
        self.calls.put((function, args))

    def pump(self, deferred: Deferred[Any], within: float = 10.0) -> Any:
        """
        Run handed-over calls until C{deferred} has a result; return it (a
        L{Failure} if it failed).
        """
        results: list[Any] = []
        deferred.addBoth(results.append)
        deadline = time.monotonic() + within
        while not results:
            function, args = self.calls.get(timeout=max(0.01, deadline - time.monotonic()))
            function(*args)
        return results[0]

    def pumpUntil(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        """
        Run handed-over calls until C{condition()} holds.
        """
        deadline = time.monotonic() + within
        while not condition():
            assert time.monotonic() < deadline, "the condition never held"
            try:
                function, args = self.calls.get(timeout=0.01)
            except queue.Empty:
                continue
            function(*args)


@pytest.fixture
def reactor() -> Reactor:
    return Reactor()


def pool(reactor: Reactor, size: int = 1, maxLost: int | None = None) -> FilterThreads:
    return FilterThreads(
        reactor.callFromThread, reactor.clock, size=size, grace=2.0, maxLost=maxLost
    )


class Spinner:
    """
    Pure-Python work that never ends by itself, recording the CPU time its
    thread has used (until C{release} is set, so no test leaves it running).
    """

    def __init__(self, swallow: bool = False) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.cpu = 0.0
        self.thread = 0
        self.interruptions = 0
        self._swallow = swallow

    def __call__(self) -> None:
        self.thread = threading.get_ident()
        self.started.set()
        while not self.release.is_set():
            try:
                while not self.release.is_set():
                    self.cpu = time.thread_time()
            except BaseException:
                self.interruptions += 1
                if not self._swallow:
                    raise

    def cpuSpent(self, seconds: float) -> float:
        """
        CPU seconds the work used over the next C{seconds} of wall time.
        """
        before = self.cpu
        time.sleep(seconds)
        return self.cpu - before


def test_resultsAndErrorsReachTheCaller(reactor: Reactor) -> None:
    """
    A call's value, or its exception, arrives as its Deferred's result, and
    the call ran in another thread than the caller's.
    """
    threads = pool(reactor)
    assert reactor.pump(threads.run(threading.get_ident)) != threading.get_ident()

    def fail() -> None:
        raise ValueError("nope")

    failure = reactor.pump(threads.run(fail))
    assert isinstance(failure, Failure) and failure.check(ValueError)


def test_cancelStopsAPurePythonLoop(reactor: Reactor) -> None:
    """
    Cancelling a call stuck in a pure-Python loop stops the loop in its
    thread: the thread's CPU time stops growing, and the pool's one thread
    runs the next call.
    """
    threads = pool(reactor)
    spinner = Spinner()
    running = threads.run(spinner)
    assert spinner.started.wait(10)
    assert spinner.cpuSpent(0.2) > 0
    running.cancel()
    assert reactor.pump(running).check(CancelledError)
    assert reactor.pump(threads.run(threading.get_ident)) == spinner.thread
    assert spinner.interruptions == 1
    assert spinner.cpuSpent(0.3) == 0
    assert reactor.clock.getDelayedCalls()[0].getTime() == 2.0
    reactor.clock.advance(2)
    assert threads.lost == 0


def test_cancelBeforeItStartsNeverRuns(reactor: Reactor) -> None:
    """
    A call still queued when it is cancelled is dropped: it never runs.
    """
    threads = pool(reactor)
    spinner = Spinner()
    busy = threads.run(spinner)
    assert spinner.started.wait(10)
    ran: list[bool] = []
    queued = threads.run(lambda: ran.append(True))
    queued.cancel()
    busy.cancel()
    assert reactor.pump(busy).check(CancelledError)
    assert reactor.pump(threads.run(lambda: "next")) == "next"
    assert ran == []
    assert reactor.pump(queued).check(CancelledError)


def test_workThatIgnoresItsInterruptionIsWrittenOff(reactor: Reactor) -> None:
    """
    Work that catches the interruption and goes on cannot be stopped: after
    the grace period it is logged, its thread leaves the pool and a new one
    serves the next calls (while fewer than maxLost threads are lost).
    """
    threads = pool(reactor, maxLost=2)
    spinner = Spinner(swallow=True)
    try:
        running = threads.run(spinner)
        assert spinner.started.wait(10)
        running.cancel()
        after = threads.run(threading.get_ident)
        time.sleep(0.2)
        assert spinner.interruptions == 1 and spinner.cpuSpent(0.2) > 0
        with capturedLogs() as events:
            reactor.clock.advance(2)
        assert threads.lost == 1
        assert any("ignored its interruption" in formatEvent(e) for e in events)
        other = reactor.pump(after)
        assert isinstance(other, int) and other != spinner.thread
    finally:
        spinner.release.set()


def test_workOffloadedFromAPoolThreadRunsInline(reactor: Reactor) -> None:
    """
    Work handed to the pool from one of its own threads runs at once in
    that thread (it is already off the reactor and under its caller's time
    limit), so a pool of one cannot deadlock on it.
    """
    threads = pool(reactor)

    def outer() -> tuple[int, int]:
        inner = threads.run(threading.get_ident)
        results: list[int] = []
        inner.addCallback(results.append)
        return threading.get_ident(), results[0]

    first, second = reactor.pump(threads.run(outer))
    assert first == second != threading.get_ident()


def test_interruptingNestedWorkStopsItsCaller(reactor: Reactor) -> None:
    """
    Work offloaded from a pool thread (run inline there) that is
    interrupted does not swallow the interruption: the work that offloaded
    it stops too, instead of carrying on in a loop.
    """
    threads = pool(reactor)
    spinner = Spinner()
    rounds: list[int] = []

    def outer() -> None:
        while True:
            rounds.append(1)
            threads.run(spinner)

    running = threads.run(outer)
    assert spinner.started.wait(10)
    running.cancel()
    assert reactor.pump(threads.run(threading.get_ident)) == spinner.thread
    assert len(rounds) == 1
    assert spinner.cpuSpent(0.3) == 0


def test_interruptionIsNotAnException(reactor: Reactor) -> None:
    """
    The interruption is a BaseException: work that catches every
    C{Exception} (the usual guard) is still stopped.
    """
    threads = pool(reactor)
    started = threading.Event()
    caught: list[BaseException] = []

    def guarded() -> None:
        started.set()
        try:
            while True:
                pass
        except Exception as e:  # what a careful plugin writes
            caught.append(e)

    running = threads.run(guarded)
    assert started.wait(10)
    running.cancel()
    assert reactor.pump(threads.run(lambda: "free")) == "free"
    assert caught == []
    assert issubclass(FilterInterrupted, BaseException)
    assert not issubclass(FilterInterrupted, Exception)


def test_lostThreadsAreCappedAndTheirEndIsNoticed(reactor: Reactor) -> None:
    """
    Once as many threads are written off as the pool may lose (by default
    its size, here one), calls waiting and new calls fail at once with
    L{FilterThreadsExhausted}, and no new thread is started; when the lost
    thread's work returns at last, calls run again.
    """
    threads = pool(reactor)
    spinner = Spinner(swallow=True)
    try:
        running = threads.run(spinner)
        assert spinner.started.wait(10)
        running.cancel()
        waiting = threads.run(threading.get_ident)
        before = threading.active_count()
        with capturedLogs() as events:
            reactor.clock.advance(2)
        assert threads.lost == threads.stillLost == 1
        assert any("every filter call fails at once" in formatEvent(e) for e in events)
        assert reactor.pump(waiting).check(FilterThreadsExhausted)
        refused = threads.run(threading.get_ident)
        assert refused.called
        assert reactor.pump(refused).check(FilterThreadsExhausted)
        assert threading.active_count() == before
    finally:
        spinner.release.set()
    with capturedLogs():
        reactor.pumpUntil(lambda: threads.stillLost == 0)
    assert isinstance(reactor.pump(threads.run(threading.get_ident)), int)
    assert threads.lost == 1


def test_waitingForTheReactorCanBeInterrupted(reactor: Reactor) -> None:
    """
    Work waiting in callInReactor for a Deferred that never fires is still
    stopped when its call is cancelled: its thread serves the next call.
    """
    threads = pool(reactor)
    asked = threading.Event()

    def waitForever() -> Deferred[None]:
        asked.set()
        return Deferred()

    running = threads.run(lambda: threads.callInReactor(waitForever))
    reactor.pumpUntil(asked.is_set)
    running.cancel()
    assert reactor.pump(running).check(CancelledError)
    assert reactor.pump(threads.run(lambda: "free")) == "free"
    reactor.clock.advance(2)
    assert threads.lost == 0


def test_waitEndsWhenTheInterruptionIsLost(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Work waiting in callInReactor stops when its call is cancelled even if
    the exception sent to its thread never arrives (lost in a garbage
    collector callback, where Python only reports it): the wait checks for
    the cancellation itself, and the thread serves the next call.
    """
    monkeypatch.setattr(_filterthreads, "_setAsyncExc", lambda thread, exception: 1)
    threads = pool(reactor)
    asked = threading.Event()

    def waitForever() -> Deferred[None]:
        asked.set()
        return Deferred()

    running = threads.run(lambda: threads.callInReactor(waitForever))
    reactor.pumpUntil(asked.is_set)
    running.cancel()
    assert reactor.pump(running).check(CancelledError)
    assert reactor.pump(threads.run(lambda: "free")) == "free"
    reactor.clock.advance(2)
    assert threads.lost == 0


def test_callInReactorRunsThereAndReturnsTheResult(reactor: Reactor) -> None:
    """
    From a pool thread, callInReactor runs the call in the reactor thread
    and returns what its Deferred fires with, or raises its error.
    """
    threads = pool(reactor)

    def fromPool() -> tuple[bool, int, str]:
        where = threads.callInReactor(threading.get_ident)
        try:
            threads.callInReactor(lambda: fail(ValueError("refused")))
        except ValueError as e:
            error = str(e)
        return threads.inPool(), where, error

    assert reactor.pump(threads.run(fromPool)) == (True, threading.get_ident(), "refused")
    assert not threads.inPool()
