"""
Per-address session counts and connection rates in memory: how many
sessions each client network holds open and when it opened its recent
connections (a sliding window), checked against an L{AddressLimits}.

Sans-IO, keyed by anything hashable (L{popproxy._admission.Admission}
keys it by network, the main process's L{LocalLedger} by the network's
text), with a clock given as a callable.  It is the per-process half of
the connection limits and, in the main process of a proxy with workers,
the count every process shares (L{popproxy._sharedcounters}).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, succeed

__all__ = ["ADDRESS", "RATE", "AddressCounts", "AddressLimits", "LocalLedger"]

K = TypeVar("K", bound=Hashable)

#: Why a connection is refused: its network holds too many sessions ...
ADDRESS = "address"
#: ... or opened too many connections within the interval.
RATE = "rate"


@dataclass(frozen=True, slots=True)
class AddressLimits:
    """
    What one client network may do: hold C{perAddress} sessions at once,
    open C{connectionRate} connections per C{rateInterval} seconds.
    """

    perAddress: int
    connectionRate: int
    rateInterval: float


class AddressCounts(Generic[K]):
    """
    Sessions open and recent connections, per client network.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._sessions: dict[K, int] = {}
        self._recent: dict[K, deque[float]] = {}
        self._swept = clock()

    def enter(self, key: K, limits: AddressLimits) -> str | None:
        """
        Count a new session of C{key} if its limits allow it: C{None} if
        they do, else the reason (L{ADDRESS}, L{RATE}); a refused
        connection is not counted at all.
        """
        if self._sessions.get(key, 0) >= limits.perAddress:
            return ADDRESS
        now = self._clock()
        self._sweep(now, limits.rateInterval)
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque()
        horizon = now - limits.rateInterval
        while recent and recent[0] <= horizon:
            recent.popleft()
        if len(recent) >= limits.connectionRate:
            return RATE
        recent.append(now)
        self.hold(key)
        return None

    def hold(self, key: K) -> None:
        """
        Count a session of C{key} without checking (one admitted elsewhere).
        """
        self._sessions[key] = self._sessions.get(key, 0) + 1

    def leave(self, key: K) -> None:
        """
        A session of C{key} has ended.
        """
        left = self._sessions.get(key, 1) - 1
        if left > 0:
            self._sessions[key] = left
        else:
            self._sessions.pop(key, None)

    def sessions(self, key: K) -> int:
        """
        Sessions open from C{key}.
        """
        return self._sessions.get(key, 0)

    @property
    def networksRemembered(self) -> int:
        """
        How many networks the rate window remembers.
        """
        return len(self._recent)

    def _sweep(self, now: float, interval: float) -> None:
        """
        Forget, once per interval, the networks that opened nothing within
        it: the rate window holds no more than the clients of one interval.
        """
        if now - self._swept < interval:
            return
        self._swept = now
        horizon = now - interval
        for key in [k for k, times in self._recent.items() if not times or times[-1] <= horizon]:
            del self._recent[key]


class LocalLedger:
    """
    L{popproxy._sessionledger.ISessionLedger} in this process: the main
    process's count, which its workers ask over their socket pairs.  The
    lease names are not needed here (a worker that ends has its sessions
    left by its L{popproxy._sharedcounters.CounterServer}).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.counts: AddressCounts[str] = AddressCounts(clock)

    def enter(self, key: str, lease: str, limits: AddressLimits) -> Deferred[str | None]:
        return succeed(self.counts.enter(key, limits))

    def hold(self, key: str, lease: str) -> None:
        self.counts.hold(key)

    def leave(self, key: str, lease: str) -> None:
        self.counts.leave(key)
