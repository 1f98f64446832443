"""
Where abuse-protection counters live: the L{ICounterStore} contract, shared
by the in-process store (the default) and the Redis store (several
instances, one limit).  Counters are named by opaque keys (an address
prefix, an account: the store never interprets them) and expire on their
own, so a store that loses its state forgets only recent history.

Every call answers with a Deferred, so a networked store never blocks the
reactor; a store that cannot answer fails the Deferred with
L{CounterStoreUnavailable} and the caller falls back to its local counters.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred


class CounterStoreUnavailable(Exception):
    """
    The store cannot answer now (e.g. Redis is down); C{str()} says why.
    """


class ICounterStore(Protocol):
    """
    Expiring counters and deadlines, by key.
    """

    def hit(self, key: str, amount: int, ttl: float) -> Deferred[int]:
        """
        Add C{amount} to the counter C{key} and fire with its new value;
        the counter expires C{ttl} seconds after it was created (a fixed
        window starting at its first hit).
        """
        ...

    def count(self, key: str) -> Deferred[int]:
        """
        Fire with the counter C{key} (0 if it does not exist or expired).
        """
        ...

    def blockUntil(self, key: str, until: float) -> Deferred[None]:
        """
        Record that C{key} is blocked until C{until} (seconds since the
        epoch, on the caller's clock); a later deadline replaces an earlier
        one, an earlier one is ignored.
        """
        ...

    def blockedUntil(self, key: str) -> Deferred[float | None]:
        """
        Fire with C{key}'s deadline, or C{None} if it is not blocked.
        """
        ...

    def forget(self, key: str) -> Deferred[None]:
        """
        Drop the counter and the deadline of C{key}.
        """
        ...
