"""
The fallback store (popproxy/_fallbackstore.py): the shared store answers while it can; when
it is unavailable the local store answers, with one warning per outage and one line when the
shared store is back; other errors are not hidden.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from popproxy._counterstore import CounterStoreUnavailable
from popproxy._fallbackstore import FallbackCounterStore


class DictStore:
    """
    A tiny in-memory ICounterStore for these tests (no expiry: the tests do not need it);
    C{down} makes every call fail with CounterStoreUnavailable, C{broken} with another error.
    """

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.deadlines: dict[str, float] = {}
        self.down = False
        self.broken = False
        self.calls = 0

    def _answer(self, value: Any) -> Deferred[Any]:
        self.calls += 1
        if self.down:
            return fail(CounterStoreUnavailable("connection refused"))
        if self.broken:
            return fail(ZeroDivisionError("a bug"))
        return succeed(value)

    def hit(self, key: str, amount: int, ttl: float) -> Deferred[int]:
        if not (self.down or self.broken):
            self.counters[key] = self.counters.get(key, 0) + amount
        return self._answer(self.counters.get(key, 0))

    def count(self, key: str) -> Deferred[int]:
        return self._answer(self.counters.get(key, 0))

    def blockUntil(self, key: str, until: float) -> Deferred[None]:
        if not (self.down or self.broken):
            self.deadlines[key] = max(until, self.deadlines.get(key, until))
        return self._answer(None)

    def blockedUntil(self, key: str) -> Deferred[float | None]:
        return self._answer(self.deadlines.get(key))

    def forget(self, key: str) -> Deferred[None]:
        if not (self.down or self.broken):
            self.counters.pop(key, None)
            self.deadlines.pop(key, None)
        return self._answer(None)


def result(deferred: Deferred[Any]) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert len(results) == 1
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


@pytest.fixture
def logged() -> Any:
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def lines(events: list[LogEvent]) -> list[str]:
    return [
        f"{event['log_level'].name}: {formatEvent(event)}"
        for event in events
        if event.get("log_namespace", "").startswith("popproxy._fallbackstore")
    ]


def makeStores() -> tuple[FallbackCounterStore, DictStore, DictStore]:
    shared, local = DictStore(), DictStore()
    return FallbackCounterStore(shared, local, "redis://10.0.0.5:6379/0"), shared, local


def test_theSharedStoreAnswersWhileItCan(logged: list[LogEvent]) -> None:
    """
    Every operation goes to the shared store; the local store is not touched; nothing is
    logged.
    """
    store, shared, local = makeStores()
    assert result(store.hit("a", 2, 60)) == 2
    assert result(store.count("a")) == 2
    result(store.blockUntil("a", 100.0))
    assert result(store.blockedUntil("a")) == 100.0
    result(store.forget("a"))
    assert shared.counters == {} and local.calls == 0 and lines(logged) == []


def test_anOutageFallsBackWithOneWarningAndOneLineWhenBack(logged: list[LogEvent]) -> None:
    """
    While the shared store is down every operation is answered by the local store (logins
    go on); the outage is one warning naming the store and the reason, however many calls;
    the first answer after it is one info line; a second outage warns again.
    """
    store, shared, local = makeStores()
    shared.down = True
    assert [result(store.hit("a", 1, 60)) for _ in range(5)] == [1, 2, 3, 4, 5]
    result(store.blockUntil("a", 50.0))
    assert result(store.blockedUntil("a")) == 50.0
    assert result(store.count("a")) == 5
    assert lines(logged) == [
        "warn: counter store redis://10.0.0.5:6379/0 unavailable (connection refused):"
        " each instance counts on its own until it answers again"
    ]
    shared.down = False
    assert result(store.hit("a", 1, 60)) == 1
    assert result(store.count("a")) == 1
    shared.down = True
    assert result(store.count("a")) == 5
    assert [line.split(":")[0] for line in lines(logged)] == ["warn", "info", "warn"]
    assert "answers again" in lines(logged)[1]


def test_otherErrorsAreNotHidden(logged: list[LogEvent]) -> None:
    """
    Only CounterStoreUnavailable falls back: a bug in the shared store fails the call, and
    no outage is logged.
    """
    store, shared, local = makeStores()
    shared.broken = True
    with pytest.raises(ZeroDivisionError):
        result(store.hit("a", 1, 60))
    assert local.calls == 0 and lines(logged) == []
