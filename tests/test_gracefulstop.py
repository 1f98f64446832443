"""
Tests for popproxy._gracefulstop.GracefulStop with real sessions over
in-memory transports (tests.sessionharness): what each client receives
when the proxy stops, what reaches the upstream (never QUIT), when the stop
is over, and what the log says.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs, formatEvent

from popproxy._gracefulstop import CUT_WAIT, GracefulStop, ignoreRepeatedStops
from popproxy._lifecycle import Lifecycle
from popproxy._session import STOPPING
from tests.sessionharness import Harness

GRACE = 30.0


def stopAndSessions(count: int) -> tuple[GracefulStop, Lifecycle, list[Harness]]:
    """
    A graceful stop and C{count} logged-in sessions reporting to it, on one
    clock.
    """
    clock = Clock()
    lifecycle = Lifecycle()
    stop = GracefulStop(clock, GRACE, lifecycle)
    stop.startService()
    sessions = [Harness(clock=clock, stop=stop) for _ in range(count)]
    for h in sessions:
        h.login()
    return stop, lifecycle, sessions


def startRetrieval(h: Harness) -> None:
    """
    The client asks for message 1 and the upstream sends its first line.
    """
    h.send(b"RETR 1\r\n")
    assert h.upstream.received() == b"RETR 1\r\n"
    h.upstream.reply(b"+OK 40 octets\r\nSubject: big\r\n\r\n")
    assert h.received() == b"+OK 40 octets\r\nSubject: big\r\n\r\n"


def stopped(deferred: Deferred[None]) -> bool:
    return deferred.called


def test_noSessionStopsAtOnce() -> None:
    """
    With no session open the stop is over at once, and the lifecycle
    says stopping (the health check answers 503 from then on).
    """
    clock = Clock()
    lifecycle = Lifecycle()
    stop = GracefulStop(clock, GRACE, lifecycle)
    stop.startService()
    with capturedLogs() as events:
        done = stop.stopService()
    assert stopped(done) and lifecycle.stopping
    assert [formatEvent(e) for e in events] == ["stopping: no session was open"]


def test_idleSessionToldAndClosed() -> None:
    """
    A session between commands is told the proxy is stopping (a temporary
    condition, RFC 2449) and closed; the upstream connection is dropped
    without QUIT; the stop is over when the connection has closed.
    """
    stop, lifecycle, (h,) = stopAndSessions(1)
    done = stop.stopService()
    assert lifecycle.stopping
    assert h.received() == STOPPING == b"-ERR [SYS/TEMP] the proxy is stopping\r\n"
    assert h.client.disconnecting
    assert h.upstream.received() == b""
    assert h.upstream.transport.disconnecting
    assert not stopped(done)
    with capturedLogs() as events:
        h.settle()
    assert stopped(done)
    lines = [formatEvent(e) for e in events]
    assert any("closed: proxy stopping; " in line for line in lines), lines
    assert lines[-1] == "stopping: every session has ended"


def test_retrievalInFlightFinishesThenCloses() -> None:
    """
    A RETR in flight when the stop begins is relayed to its end,
    terminating line included; the commands the client pipelined behind it
    (DELE, QUIT) never reach the upstream: the client reads the stopping
    line as their answer and the connection closes, so nothing is deleted.
    """
    stop, _, (h,) = stopAndSessions(1)
    startRetrieval(h)
    done = stop.stopService()
    h.send(b"DELE 1\r\nQUIT\r\n")
    assert h.received() == b"" and not h.client.disconnecting
    assert h.client.producer is not None
    h.upstream.reply(b"body line\r\n..dotted\r\n.\r\n")
    assert h.received() == b"body line\r\n..dotted\r\n.\r\n" + STOPPING
    client = h.client  # read afresh: mypy keeps the narrowing above across the call
    assert client.disconnecting and not client.aborted
    # A real transport closes only once no producer is registered: the
    # upstream (paused while a slow client reads) must be unregistered.
    assert h.client.registeredProducer() is None
    assert h.upstream.received() == b""
    h.settle()
    assert stopped(done)


def test_busyWhenGraceEndsIsCut() -> None:
    """
    A session still mid-RETR when the grace period ends is aborted: no
    terminating line, no stopping line (the client cannot take the message
    for complete), and no QUIT upstream; the log says it was cut.
    """
    stop, _, (busy, idle) = stopAndSessions(2)
    startRetrieval(busy)
    done = stop.stopService()
    idle.settle()
    assert not stopped(done)
    busy.upstream.reply(b"part of the body\r\n")
    busy.clock.advance(GRACE - 0.1)
    assert not busy.client.aborted
    with capturedLogs() as events:
        busy.clock.advance(0.1)
        client = busy.client  # read afresh: mypy keeps the narrowing above across the call
        assert client.aborted
        busy.settle()
    assert busy.received() == b"part of the body\r\n"
    assert busy.upstream.received() == b""
    assert busy.upstream.transport.disconnecting
    assert stopped(done)
    lines = [formatEvent(e) for e in events]
    assert lines[0].startswith("stopping: grace period (30.0 s) over, cutting 1 sessions")
    assert any("closed: proxy stopping: cut when the grace period ended;" in x for x in lines)


def test_unreadResponseCutAtGraceEnd() -> None:
    """
    A session whose whole response is written but not yet taken by the
    client when the grace period ends is aborted too (on a real connection
    that drops what the client had not taken, so it never sees the
    terminating line: tests/test_e2e_stop.py).  A
    connection that then never reports its end holds the stop up for
    CUT_WAIT seconds at most.
    """
    stop, _, (h,) = stopAndSessions(1)
    startRetrieval(h)
    done = stop.stopService()
    # The client reads nothing more: the closing connection never finishes
    # flushing, so the session is not over until the grace period is.
    h.client.dropped = lambda reason: None  # type: ignore[method-assign]
    h.upstream.reply(b"body\r\n.\r\n")
    h.settle()
    assert h.client.disconnecting and not h.client.aborted
    assert not stopped(done)
    h.clock.advance(GRACE)
    client = h.client  # read afresh: mypy keeps the narrowing above across the call
    assert client.aborted
    assert not stopped(done)
    h.clock.advance(CUT_WAIT)
    assert stopped(done)


def test_sessionOpenedWhileStoppingIsRefused() -> None:
    """
    A connection that arrives while the stop is under way (accepted just
    before the listener closed) is greeted with the stopping line instead
    of +OK, and closed.
    """
    clock = Clock()
    stop = GracefulStop(clock, GRACE, Lifecycle())
    stop.startService()
    done = stop.stopService()
    assert stopped(done)
    h = Harness(clock=clock, stop=stop)
    assert h.received() == STOPPING
    assert h.client.disconnecting


@pytest.fixture
def stopHandlersRestored() -> Iterator[None]:
    """
    The process's SIGTERM and SIGINT handlers, put back after the test.
    """
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


class CallRecorder(MemoryReactor):
    """
    A memory reactor that records what is handed to C{callFromThread}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list[tuple[Any, tuple[object, ...], dict[str, object]]] = []

    def callFromThread(self, f: Any, *args: object, **kw: object) -> None:
        self.fromThread.append((f, args, kw))


def test_repeatedStopSignalIsLoggedAndIgnored(stopHandlersRestored: None) -> None:
    """
    Once the reactor has begun to shut down, a further SIGTERM does not
    stop it again (which would log ReactorNotRunning as a traceback): it
    is logged as ignored, from the reactor's thread, and the process lives
    on until the stop is over.
    """
    reactor = CallRecorder()
    ignoreRepeatedStops(reactor)
    (trigger,) = reactor.triggers["before"]["shutdown"]
    function, args, kw = trigger
    function(*args, **kw)
    os.kill(os.getpid(), signal.SIGTERM)
    ((log, logArgs, logKw),) = reactor.fromThread
    with capturedLogs() as events:
        log(*logArgs, **logKw)
    assert [formatEvent(e) for e in events] == [
        "SIGTERM ignored: already stopping (SIGKILL ends the process at once)"
    ]
