"""
Tests for popproxy._memorycounters: the in-process counter store counts,
expires on its clock, keeps the later of two deadlines and stays within
its key limit by dropping the oldest keys.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from popproxy._counterstore import ICounterStore
from popproxy._memorycounters import MemoryCounters

T = TypeVar("T")


def now(deferred: Deferred[T]) -> T:
    """
    The result C{deferred} already has (the store answers at once).
    """
    results: list[T] = []
    deferred.addCallback(results.append)
    assert len(results) == 1, "the store did not answer at once"
    return results[0]


def test_isACounterStore() -> None:
    """
    MemoryCounters has every method of the ICounterStore contract.
    """
    store: ICounterStore = MemoryCounters(Clock())
    for name in ("hit", "count", "blockUntil", "blockedUntil", "forget"):
        assert callable(getattr(store, name))


def test_hitCountsWithinItsWindow() -> None:
    """
    Hits add up until the window that began with the first one ends; then
    the counter starts again from nothing.
    """
    clock = Clock()
    store = MemoryCounters(clock)
    assert now(store.hit("a", 1, 10)) == 1
    clock.advance(9)
    assert now(store.hit("a", 5, 10)) == 6
    assert now(store.count("a")) == 6
    clock.advance(1)
    assert now(store.count("a")) == 0
    assert now(store.hit("a", 1, 10)) == 1
    assert now(store.count("missing")) == 0


def test_laterDeadlineWins() -> None:
    """
    A later deadline replaces an earlier one, an earlier one is ignored,
    and a deadline that has passed reads as no deadline.
    """
    clock = Clock()
    store = MemoryCounters(clock)
    store.blockUntil("a", 20)
    store.blockUntil("a", 10)
    assert now(store.blockedUntil("a")) == 20
    store.blockUntil("a", 30)
    assert now(store.blockedUntil("a")) == 30
    clock.advance(30)
    assert now(store.blockedUntil("a")) is None
    assert len(store) == 0


def test_forgetDropsCounterAndDeadline() -> None:
    """
    forget() drops both what was counted and the deadline.
    """
    store = MemoryCounters(Clock())
    store.hit("a", 3, 100)
    store.blockUntil("a", 50)
    store.forget("a")
    assert now(store.count("a")) == 0
    assert now(store.blockedUntil("a")) is None


def test_deadlineKeepsCounterAlive() -> None:
    """
    A key with a deadline later than its counting window keeps its count
    until the deadline.
    """
    clock = Clock()
    store = MemoryCounters(clock)
    store.hit("a", 2, 10)
    store.blockUntil("a", 60)
    clock.advance(30)
    assert now(store.blockedUntil("a")) == 60
    assert now(store.count("a")) == 2


def test_memoryIsBounded() -> None:
    """
    A flood of distinct keys keeps at most maxKeys of them: the earliest
    to expire go first, the newest stay.
    """
    clock = Clock()
    store = MemoryCounters(clock, maxKeys=100)
    for number in range(10_000):
        clock.advance(0.01)
        store.hit(f"k{number}", 1, 600)
    assert len(store) == 100
    assert now(store.count("k9999")) == 1
    assert now(store.count("k0")) == 0
    assert len(store._expiries) <= 2 * 100 + 16
