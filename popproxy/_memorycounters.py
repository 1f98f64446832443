"""
The in-process L{ICounterStore}: L{MemoryCounters} keeps expiring counters
and deadlines in one dictionary, on an injected clock.  Its memory is
bounded: past C{maxKeys} keys the oldest (the earliest to expire) are
dropped first, so a flood of distinct addresses or account names costs a
fixed amount of memory and forgets only the oldest history.

Its Deferreds have already fired when they are returned: the counters are
read and changed in one step, with no other caller in between.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

#: Keys kept by default: about 100 bytes each, so some 20 MB at most.
DEFAULT_MAX_KEYS = 200_000


@dataclass(slots=True)
class _Entry:
    """
    One key's counter and deadline, and when the key is forgotten.
    """

    value: int
    expires: float
    blockedUntil: float | None = None


class MemoryCounters:
    """
    Expiring counters and deadlines, in this process.
    """

    def __init__(self, clock: IReactorTime, maxKeys: int = DEFAULT_MAX_KEYS) -> None:
        self._clock = clock
        self._maxKeys = maxKeys
        self._entries: dict[str, _Entry] = {}
        # (expiry, key) pairs, some stale (a key whose expiry moved later,
        # or that was forgotten): checked against _entries when popped.
        self._expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def hit(self, key: str, amount: int, ttl: float) -> Deferred[int]:
        entry = self._live(key)
        if entry is None:
            entry = self._entries[key] = _Entry(0, self._clock.seconds() + ttl)
            self._scheduleExpiry(key, entry.expires)
        elif entry.value == 0 and entry.blockedUntil is not None:
            # A key that held only a deadline starts its counting window now.
            self._extend(key, entry, self._clock.seconds() + ttl)
        entry.value += amount
        return succeed(entry.value)

    def count(self, key: str) -> Deferred[int]:
        entry = self._live(key)
        return succeed(0 if entry is None else entry.value)

    def blockUntil(self, key: str, until: float) -> Deferred[None]:
        if until <= self._clock.seconds():
            return succeed(None)
        entry = self._live(key)
        if entry is None:
            entry = self._entries[key] = _Entry(0, until, until)
            self._scheduleExpiry(key, until)
            return succeed(None)
        if entry.blockedUntil is None or until > entry.blockedUntil:
            entry.blockedUntil = until
        self._extend(key, entry, until)
        return succeed(None)

    def blockedUntil(self, key: str) -> Deferred[float | None]:
        entry = self._live(key)
        if entry is None or entry.blockedUntil is None:
            return succeed(None)
        if entry.blockedUntil <= self._clock.seconds():
            return succeed(None)
        return succeed(entry.blockedUntil)

    def forget(self, key: str) -> Deferred[None]:
        self._entries.pop(key, None)
        return succeed(None)

    def _live(self, key: str) -> _Entry | None:
        """
        C{key}'s entry, unless it has expired (then it is dropped).
        """
        self._dropExpired()
        return self._entries.get(key)

    def _extend(self, key: str, entry: _Entry, expires: float) -> None:
        if expires > entry.expires:
            entry.expires = expires
            self._scheduleExpiry(key, expires)

    def _scheduleExpiry(self, key: str, expires: float) -> None:
        heapq.heappush(self._expiries, (expires, key))
        while len(self._entries) > self._maxKeys:
            self._dropEarliest()
        if len(self._expiries) > 2 * self._maxKeys + 16:
            # Too many stale pairs: rebuild the heap from the live keys.
            self._expiries = [(entry.expires, k) for k, entry in self._entries.items()]
            heapq.heapify(self._expiries)

    def _dropExpired(self) -> None:
        now = self._clock.seconds()
        while self._expiries and self._expiries[0][0] <= now:
            self._dropEarliest()

    def _dropEarliest(self) -> None:
        expires, key = heapq.heappop(self._expiries)
        entry = self._entries.get(key)
        if entry is not None and entry.expires == expires:
            del self._entries[key]
