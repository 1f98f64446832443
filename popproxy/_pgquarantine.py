"""
The PostgreSQL quarantine as the filter chain sees it: an
L{IPartQuarantine} whose writes run in the reactor's thread pool, at most
C{maxConnections} at once (the others wait on the reactor, holding no
thread), and that knows whether its database answers (L{StoreStatus}, for
the health page, the metrics and one log line per change).

A store that fails (PostgreSQL down, refusing, not migrated) fails the
Deferred: the chain then answers C{-ERR [SYS/TEMP]} and the message stays
on the server, as with a full disk.  After a failure the database is asked
again every C{recheck} seconds until it answers, so its state comes back
without traffic; the next store opens a new connection in any case.

The blocking work itself is L{popproxy._pgstore.PostgresStore}'s (any
object with its C{write} and C{ping} will do: the tests hand a stand-in).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy._metrics import NO_METRICS, Metrics
from popproxy._quarantine import StoreItem, partItems, storeItems
from popproxy.interfaces import FilterContext, IPartQuarantine, RemovedPart

__all__ = ["PostgresQuarantine", "StoreStatus"]


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """
    The last known state of a quarantine store.

    @ivar store: its kind (C{"postgresql"}), fit for a metric label.
    @ivar address: where it is, without a password.
    @ivar reachable: C{True} after the last attempt worked, C{False} after
        it failed, C{None} before any attempt.
    @ivar since: when C{reachable} took its value (the clock's seconds).
    @ivar detail: the last failure's reason, empty when reachable.
    """

    store: str
    address: str
    reachable: bool | None = None
    since: float | None = None
    detail: str = ""


def _reason(failure: Failure) -> str:
    """
    A failure's one-line reason (psycopg's messages may span lines).
    """
    text = " ".join(str(failure.value).split())
    return text or failure.type.__name__


@implementer(IPartQuarantine)
class PostgresQuarantine:
    """
    @param store: the blocking store (C{write(items)}, C{ping()}).
    @param runInThread: where its calls run (the reactor's thread pool).
    @param clock: for the state's times and the rechecks.
    """

    log = Logger(namespace="popproxy.quarantine")

    def __init__(
        self,
        store: Any,
        address: str,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
        clock: Any,
        metrics: Metrics = NO_METRICS,
        maxConnections: int = 4,
        recheck: float = 5.0,
    ) -> None:
        self._store = store
        self._runInThread = runInThread
        self._clock = clock
        self._metrics = metrics
        self._semaphore = DeferredSemaphore(maxConnections)
        self._recheck = recheck
        self._pending: Any = None
        self.status = StoreStatus("postgresql", address)

    # IPartQuarantine

    def store(
        self, original: bytes, context: FilterContext, reason: str, plugin: str = ""
    ) -> Deferred[str]:
        writing = self._write(storeItems(original, context, reason, plugin), "message")
        return writing.addCallback(lambda identifiers: identifiers[0])

    def storeParts(
        self,
        message: bytes,
        parts: Sequence[RemovedPart],
        context: FilterContext,
        plugin: str = "",
    ) -> Deferred[list[str]]:
        return self._write(partItems(message, parts, context, plugin), "part")

    def _write(self, items: list[StoreItem], kind: str) -> Deferred[list[str]]:
        writing = self._semaphore.run(self._runInThread, lambda: self._store.write(items))
        return writing.addCallbacks(
            self._stored, self._failed, callbackArgs=(kind, len(items)), errbackArgs=(kind,)
        )

    def _stored(self, identifiers: list[str], kind: str, count: int) -> list[str]:
        self._metrics.quarantineStored(kind, count)
        self._reached()
        return identifiers

    def _failed(self, failure: Failure, kind: str) -> Failure:
        self._metrics.quarantineFailed(kind)
        self._unreached(failure)
        return failure

    # The database's state

    def start(self) -> None:
        """
        Ask the database once (the proxy has started): the log and the
        health page say at once whether it answers.
        """
        self._ask()

    def stop(self) -> None:
        """
        No more rechecks (the proxy stops).
        """
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def _ask(self) -> None:
        self._pending = None
        asking = self._semaphore.run(self._runInThread, self._store.ping)
        asking.addCallbacks(lambda _: self._reached(), self._unreached)

    def _reached(self) -> None:
        if self.status.reachable is not True:
            if self.status.reachable is False:
                self.log.info(
                    "quarantine store {address} answers again", address=self.status.address
                )
            self.status = StoreStatus(
                "postgresql", self.status.address, True, self._clock.seconds()
            )

    def _unreached(self, failure: Failure) -> None:
        detail = _reason(failure)
        if self.status.reachable is not False:
            self.log.warn(
                "quarantine store {address} cannot be used: {detail}; retrievals that must "
                "quarantine get -ERR [SYS/TEMP] until it can",
                address=self.status.address,
                detail=detail,
            )
            self.status = StoreStatus(
                "postgresql", self.status.address, False, self._clock.seconds(), detail
            )
        elif detail != self.status.detail:
            self.status = StoreStatus(
                "postgresql", self.status.address, False, self.status.since, detail
            )
        if self._pending is None:
            self._pending = self._clock.callLater(self._recheck, self._ask)
