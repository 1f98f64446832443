"""
The graceful stop of one process: L{GracefulStop} knows the sessions the
process serves and, when the process stops, marks the L{Lifecycle} as
stopping, lets each session finish the command in flight for up to a grace
period, then cuts those still busy.

It is a service of the service tree (L{popproxy._assembly}), which stops the
listeners in the same turn, so no session starts once the stop has begun.
It never touches a connection: it asks the sessions (L{StoppableSession}).
It keeps them in the process's L{SessionRegistry} (L{GracefulStop.sessions}),
which also lists them, as snapshots, to whoever asks which are open now.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from functools import partial
from types import FrameType
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from popproxy._lifecycle import Lifecycle
from popproxy._sessionregistry import Listed, SessionRegistry

log = Logger(namespace="popproxy")

#: Seconds the stop waits for cut sessions to report their end before the
#: process exits anyway (the reactor closes what is left).
CUT_WAIT = 5.0


class StoppableSession(Listed, Protocol):
    """
    What the stop asks of a session (and the registry: its snapshot).
    """

    def finishThenClose(self) -> None:
        """
        End once the command in flight is answered (at once when none is),
        telling the client why; never QUIT upstream.
        """

    def cut(self) -> None:
        """
        End at once: drop what was not yet sent (a response in flight never
        gets its terminating line) and the upstream connection, no QUIT.
        """


class GracefulStop(Service):
    """
    The open sessions of one process, and their end when it stops.

    @param grace: seconds each session may take to finish its command in
        flight once the stop has begun.
    @ivar lifecycle: the process's serving state, marked as stopping when
        the stop begins (what the health check reads).
    @ivar sessions: the sessions open now, oldest first.
    """

    def __init__(self, clock: IReactorTime, grace: float, lifecycle: Lifecycle) -> None:
        self._clock = clock
        self._grace = grace
        self.lifecycle = lifecycle
        self.sessions: SessionRegistry[StoppableSession] = SessionRegistry()
        self._stopped: Deferred[None] | None = None
        self._timer: IDelayedCall | None = None

    def opened(self, session: StoppableSession) -> None:
        """
        A session has started; once stopping, it is asked to end at once.
        """
        self.sessions.add(session)
        if self.lifecycle.stopping:
            session.finishThenClose()

    def closed(self, session: StoppableSession) -> None:
        """
        A session has ended.
        """
        self.sessions.discard(session)
        if self._stopped is not None and not self.sessions:
            self._finish("every session has ended")

    def stopService(self) -> Deferred[None]:
        """
        Begin the stop: ask every session to end after its command in
        flight; the result fires once all have ended, at most the grace
        period (and L{CUT_WAIT}) later.
        """
        super().stopService()
        self.lifecycle.beginStopping()
        stopped = self._stopped = Deferred()
        if not self.sessions:
            self._finish("no session was open")
            return stopped
        log.info(
            "stopping: {count} sessions open, each may finish its command in flight "
            "for up to {grace} s",
            count=len(self.sessions),
            grace=self._grace,
        )
        self._timer = self._clock.callLater(self._grace, self._cutTheRest)
        for session in self.sessions:
            session.finishThenClose()
        return stopped

    def _cutTheRest(self) -> None:
        log.warn(
            "stopping: grace period ({grace} s) over, cutting {count} sessions still busy "
            "(no terminating line to their clients, no QUIT upstream)",
            grace=self._grace,
            count=len(self.sessions),
        )
        self._timer = self._clock.callLater(CUT_WAIT, self._finish, "cut sessions did not end")
        for session in self.sessions:
            session.cut()

    def _finish(self, why: str) -> None:
        stopped, self._stopped = self._stopped, None
        if stopped is None:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        log.info("stopping: {why}", why=why)
        stopped.callback(None)


def stopOnShutdown(reactor: Any, ports: Iterable[Any], stop: GracefulStop) -> None:
    """
    For a process without a service tree (a worker): when the reactor is
    asked to stop, stop listening on C{ports} (read then: a reload may have
    closed some) and run C{stop} before it does.
    """
    reactor.addSystemEventTrigger("before", "shutdown", _stopServing, ports, stop)


def _stopServing(ports: Iterable[Any], stop: GracefulStop) -> Deferred[None]:
    for port in list(ports):
        port.stopListening()
    return stop.stopService()


#: The signals an init system or an operator sends to stop the process.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def ignoreRepeatedStops(reactor: Any) -> None:
    """
    Once the process has begun to stop, a further SIGTERM or SIGINT is
    logged and ignored: the reactor would otherwise be asked to stop again
    and log C{ReactorNotRunning} as a traceback.  SIGKILL still ends the
    process at once.
    """
    reactor.addSystemEventTrigger("before", "shutdown", _replaceStopHandlers, reactor)


def _replaceStopHandlers(reactor: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for number in STOP_SIGNALS:
        signal.signal(number, partial(_repeatedStop, reactor))


def _repeatedStop(reactor: Any, number: int, frame: FrameType | None) -> None:
    # A signal handler must not log itself (it may interrupt the logger).
    reactor.callFromThread(
        log.info,
        "{signal} ignored: already stopping (SIGKILL ends the process at once)",
        signal=signal.Signals(number).name,
    )
