"""
Per-address session counts and connection rates in memory: how many
sessions each client network holds open and when it opened its recent
connections (a sliding window), checked against an L{AddressLimits}.

Sans-IO, keyed by anything hashable (L{popproxy._admission.Admission}
keys it by network, the main process's L{LocalLedger} by the network's
text), with a clock given as a callable.  It is the per-process half of
the connection limits and, in the main process of a proxy with workers,
the count every process shares (L{popproxy._sharedcounters}).

The recent connections are kept for at most C{maxNetworks} networks
(L{MAX_NETWORKS}, about 1 KB each): past that, the network that tried to
connect longest ago is forgotten, so a client with many addresses (IPv6
/64s are cheap) cannot grow the process without bound, and a network that
keeps trying, the one the rate limit is for, stays counted.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, succeed

__all__ = ["ADDRESS", "MAX_NETWORKS", "RATE", "AddressCounts", "AddressLimits", "LocalLedger"]

K = TypeVar("K", bound=Hashable)

#: Why a connection is refused: its network holds too many sessions ...
ADDRESS = "address"
#: ... or opened too many connections within the interval.
RATE = "rate"

#: Networks whose recent connections are remembered at once.
MAX_NETWORKS = 50_000


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

    def __init__(self, clock: Callable[[], float], maxNetworks: int = MAX_NETWORKS) -> None:
        self._clock = clock
        self._sessions: dict[K, int] = {}
        # Ordered from the network that tried to connect longest ago.
        self._recent: OrderedDict[K, deque[float]] = OrderedDict()
        self._maxNetworks = maxNetworks
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
        recent = self._recentOf(key)
        horizon = now - limits.rateInterval
        while recent and recent[0] <= horizon:
            recent.popleft()
        if len(recent) >= limits.connectionRate:
            return RATE
        recent.append(now)
        self.hold(key)
        return None

    def _recentOf(self, key: K) -> deque[float]:
        """
        C{key}'s recent connections, its network now the last to be
        forgotten; a new network takes the place of the one that tried
        longest ago when C{maxNetworks} are remembered.
        """
        recent = self._recent.get(key)
        if recent is not None:
            self._recent.move_to_end(key)
            return recent
        while len(self._recent) >= self._maxNetworks:
            self._recent.popitem(last=False)
        recent = self._recent[key] = deque()
        return recent

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
