"""
A worker's retirement: once the main process runs a new worker in its
place (a reload added a listener, L{popproxy._workerpool}), the old one
stops accepting on every listener and exits once every connection it
accepted has ended by itself (the client's QUIT, an idle timeout), so no
client is cut the way a stop cuts them; or, once C{[proxy] retire_after}
seconds have passed with connections still open (a client that keeps
sending NOOPs would hold it for ever), it stops the way SIGTERM stops it.

A connection counts from the moment it is accepted, before the session's
admission is answered (over the shared counters, a round trip to the main
process) and before a PROXY header has arrived: a session's registration
with the graceful stop comes too late to tell that nobody is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import WeakSet

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from popproxy._listenerfactory import ListenerFactory
from popproxy._reload import ListenerSet

log = Logger(namespace="popproxy")

#: Seconds between two looks, while retiring, at the connections still open.
CHECK_INTERVAL = 1.0


class OpenConnections:
    """
    The connections a worker's listeners accepted, while they are open
    (held weakly: one that ended and was let go is forgotten).
    """

    def __init__(self) -> None:
        self._accepted: WeakSet[Protocol] = WeakSet()

    def accepted(self, protocol: Protocol) -> None:
        self._accepted.add(protocol)

    def count(self) -> int:
        """
        How many are open now: their transport has not been lost.
        """
        return sum(1 for protocol in list(self._accepted) if _isOpen(protocol))


def _isOpen(protocol: Protocol) -> bool:
    transport = getattr(protocol, "transport", None)
    return transport is not None and bool(getattr(transport, "connected", False))


class CountedListenerFactory(ListenerFactory):
    """
    A L{ListenerFactory} whose connections are noted in C{connections}.
    """

    def __init__(self, current: Any, connections: OpenConnections) -> None:
        super().__init__(current)
        self._connections = connections

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        built = super().buildProtocol(addr)
        if built is not None:
            self._connections.accepted(built)
        return built


class Retirement:
    """
    Stops a worker that was replaced, without cutting anyone if its
    clients leave within the cap, gracefully once it is over.

    @param listeners: the worker's listeners, all closed when it begins.
    @param connections: those they accepted.
    @param stop: stops the process with its graceful stop (which finds no
        session when the last connection has ended; at the cap, each
        session finishes its command in flight and is told the proxy is
        stopping).
    @param cap: the seconds it waits for the last connection to end,
        asked when it begins (C{[proxy] retire_after} as the worker's
        latest reload read it).
    """

    def __init__(
        self,
        clock: IReactorTime,
        listeners: ListenerSet,
        connections: OpenConnections,
        stop: Callable[[], None],
        cap: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._listeners = listeners
        self._connections = connections
        self._stop = stop
        self._cap = cap
        self._poll: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self.begun = False

    def begin(self) -> None:
        """
        Accept no more; stop once the last open connection has ended, or
        at the cap.
        """
        if self.begun:
            return
        self.begun = True
        for description in list(self._listeners.descriptions()):
            self._listeners.close(description)
        cap = self._cap()
        count = self._connections.count()
        log.info(
            "replaced by a new worker: accepts no more, exits once its {count} "
            "connections have ended (at most {cap:g} s, then it stops them)",
            count=count,
            cap=cap,
        )
        if count:
            self._deadline = self._clock.callLater(cap, self._capReached, cap)
        self._check()

    def _check(self) -> None:
        if self._connections.count():
            self._poll = self._clock.callLater(CHECK_INTERVAL, self._check)
            return
        self._endWaits()
        log.info("replaced by a new worker: its last connection has ended")
        self._stop()

    def _capReached(self, cap: float) -> None:
        self._endWaits()
        log.info(
            "replaced by a new worker: {count} connections still open after {cap:g} s "
            "([proxy] retire_after); stopping them: each finishes its command in flight",
            count=self._connections.count(),
            cap=cap,
        )
        self._stop()

    def _endWaits(self) -> None:
        for wait in (self._poll, self._deadline):
            if wait is not None and wait.active():
                wait.cancel()
        self._poll = self._deadline = None
