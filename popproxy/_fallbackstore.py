"""
A shared counter store that degrades to the process's own counters: every
call goes to the shared store first, and when it answers
L{CounterStoreUnavailable} the local store answers instead.  An outage is
logged once when it begins and once when it ends, however many calls fall
back in between (L{StoreOutage}, which the session counts of
L{popproxy._sharedadmission} report to as well); no login is refused
because the shared store is down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from popproxy._counterstore import CounterStoreUnavailable, ICounterStore
from popproxy._metrics import NO_METRICS, Metrics

__all__ = ["FallbackCounterStore", "StoreOutage"]

T = TypeVar("T")

Call = Callable[[ICounterStore], Deferred[T]]


class StoreOutage:
    """
    Whether the shared store is answering, as its users (the login
    counters, the session counts) last found: the log says once when an
    outage begins and once when it ends, and the metrics show it.

    @param name: how log lines name the shared store (no credentials).
    """

    log = Logger()

    def __init__(self, name: str, metrics: Metrics = NO_METRICS) -> None:
        self._name = name
        self._metrics = metrics
        self.down = False

    def answered(self) -> None:
        """
        The shared store answered a call.
        """
        if self.down:
            self.down = False
            self._metrics.counterStoreFallback(False)
            self.log.info(
                "counter store {store} answers again: limits are shared by every instance again",
                store=self._name,
            )

    def failed(self, reason: str) -> None:
        """
        A call to the shared store failed for C{reason}.
        """
        if not self.down:
            self.down = True
            self._metrics.counterStoreFallback(True)
            self.log.warn(
                "counter store {store} unavailable ({reason}): each instance counts on its own"
                " until it answers again",
                store=self._name,
                reason=reason,
            )


class FallbackCounterStore:
    """
    L{ICounterStore} over C{shared}, answered by C{local} while C{shared}
    is unavailable.

    @param name: how log lines name the shared store (no credentials).
    @param outage: where the shared store's state is kept (a new one, if
        not given).
    """

    def __init__(
        self,
        shared: ICounterStore,
        local: ICounterStore,
        name: str,
        outage: StoreOutage | None = None,
    ) -> None:
        self._shared = shared
        self._local = local
        self.outage = outage if outage is not None else StoreOutage(name)

    @property
    def sharedDown(self) -> bool:
        return self.outage.down

    def _either(self, call: Call[T]) -> Deferred[T]:
        answer = call(self._shared)
        answer.addCallbacks(self._sharedAnswered, self._sharedFailed, errbackArgs=(call,))
        return answer

    def _sharedAnswered(self, result: T) -> T:
        self.outage.answered()
        return result

    def _sharedFailed(self, failure: Failure, call: Call[T]) -> Deferred[T]:
        failure.trap(CounterStoreUnavailable)
        self.outage.failed(failure.getErrorMessage())
        return call(self._local)

    def hit(self, key: str, amount: int, ttl: float) -> Deferred[int]:
        return self._either(lambda store: store.hit(key, amount, ttl))

    def count(self, key: str) -> Deferred[int]:
        return self._either(lambda store: store.count(key))

    def blockUntil(self, key: str, until: float) -> Deferred[None]:
        return self._either(lambda store: store.blockUntil(key, until))

    def blockedUntil(self, key: str) -> Deferred[float | None]:
        return self._either(lambda store: store.blockedUntil(key))

    def forget(self, key: str) -> Deferred[None]:
        return self._either(lambda store: store.forget(key))
