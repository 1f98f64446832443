"""
Tests for popproxy._retirement, how a replaced worker ends: it closes every
listener at once, counts the connections it accepted (from their accept,
before any session exists) and stops the process once the last one has
ended, never cutting one; or, at the cap ([proxy] retire_after), with the
graceful stop: each session finishes its command in flight and is told the
proxy is stopping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from popproxy._generation import ListenerPlan
from popproxy._gracefulstop import GracefulStop
from popproxy._lifecycle import Lifecycle
from popproxy._retirement import (
    CHECK_INTERVAL,
    CountedListenerFactory,
    OpenConnections,
    Retirement,
)
from popproxy._session import STOPPING
from tests.sessionharness import Harness

#: The cap the tests retire under (seconds; below the sessions' idle timeout).
CAP = 120.0


@dataclass
class FakeTransport:
    """
    A connection's transport; like a real one, it holds its protocol.
    """

    protocol: Protocol
    connected: bool = True


@dataclass
class FakeListeners:
    """
    The ListenerSet of a worker: what is open, what was closed.
    """

    listening: list[str] = field(default_factory=lambda: ["tcp:110", "tcp:995"])
    closed: list[str] = field(default_factory=list)

    def descriptions(self) -> list[str]:
        return list(self.listening)

    def open(self, description: str, plan: ListenerPlan) -> None:
        raise AssertionError("a retiring worker opens nothing")

    def replace(self, description: str, plan: ListenerPlan) -> None:
        raise AssertionError("a retiring worker replaces nothing")

    def close(self, description: str) -> None:
        self.listening.remove(description)
        self.closed.append(description)


def accept(factory: CountedListenerFactory) -> FakeTransport:
    """
    What a listening port does with a new connection.
    """
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    transport = FakeTransport(protocol)
    protocol.makeConnection(transport)
    return transport


def test_connectionsCountedFromTheirAccept() -> None:
    """
    Each connection a listener builds counts while its transport is
    connected, whichever factory a reload put in place meanwhile.
    """
    connections = OpenConnections()
    factory = CountedListenerFactory(Factory.forProtocol(Protocol), connections)
    first = accept(factory)
    factory.replace(Factory.forProtocol(Protocol))
    second = accept(factory)
    assert connections.count() == 2
    first.connected = False
    assert connections.count() == 1
    # One the reactor let go of is forgotten.
    second.protocol.transport = None
    del second
    assert connections.count() == 0


def test_retirementWaitsForTheLastConnection() -> None:
    """
    Retiring closes every listener at once and says how many connections
    are open and the cap; the process is stopped only once the last has
    ended (looked at every CHECK_INTERVAL seconds), before the cap, which
    then never fires; a second request changes nothing.
    """
    clock = Clock()
    listeners = FakeListeners()
    connections = OpenConnections()
    factory = CountedListenerFactory(Factory.forProtocol(Protocol), connections)
    held = [accept(factory), accept(factory)]
    stops: list[None] = []
    retirement = Retirement(clock, listeners, connections, lambda: stops.append(None), lambda: CAP)
    with capturedLogs() as events:
        retirement.begin()
        retirement.begin()
        held[0].connected = False
        clock.advance(CAP - CHECK_INTERVAL * 2)
        assert stops == []
        held[1].connected = False
        clock.advance(CHECK_INTERVAL)
        assert stops == [None]
        clock.advance(CAP * 10)
    assert stops == [None]
    assert listeners.closed == ["tcp:110", "tcp:995"]
    assert [formatEvent(e) for e in events] == [
        "replaced by a new worker: accepts no more, exits once its 2 connections "
        "have ended (at most 120 s, then it stops them)",
        "replaced by a new worker: its last connection has ended",
    ]
    assert clock.getDelayedCalls() == []


def test_retirementWithNoConnectionStopsAtOnce() -> None:
    """
    A worker retired while no connection is open stops at once, and
    leaves no timer behind.
    """
    clock = Clock()
    stops: list[None] = []
    retirement = Retirement(
        clock, FakeListeners(), OpenConnections(), lambda: stops.append(None), lambda: CAP
    )
    retirement.begin()
    assert stops == [None]
    assert clock.getDelayedCalls() == []


def heldSessions(clock: Clock, stop: GracefulStop, connections: OpenConnections) -> list[Harness]:
    """
    Two logged-in sessions on C{clock}, reporting to C{stop}, their
    connections noted in C{connections} (connected, as a TCP transport
    says).
    """
    sessions = [Harness(clock=clock, stop=stop) for _ in range(2)]
    for h in sessions:
        h.login()
        h.client.connected = True
        connections.accepted(h.session)
    return sessions


def startRetrieval(h: Harness) -> None:
    """
    The client asks for message 1 and the upstream sends its first line.
    """
    h.send(b"RETR 1\r\n")
    h.upstream.reply(b"+OK 40 octets\r\nSubject: big\r\n\r\n")
    assert h.received() == b"+OK 40 octets\r\nSubject: big\r\n\r\n"


def test_capStopsTheSessionsGracefully() -> None:
    """
    Sessions still open at the cap get the graceful stop: the idle one is
    told at once that the proxy is stopping, the busy one once its RETR is
    answered (begun just before the cap), neither before it; the log says how many it had to stop
    (and the graceful stop its own line), and a connection ending after
    that stops nothing twice.
    """
    clock = Clock()
    stop = GracefulStop(clock, 30.0, Lifecycle())
    stop.startService()
    connections = OpenConnections()
    idle, busy = heldSessions(clock, stop, connections)
    stops: list[Deferred[None]] = []
    retirement = Retirement(
        clock, FakeListeners(), connections, lambda: stops.append(stop.stopService()), lambda: CAP
    )
    with capturedLogs() as events:
        retirement.begin()
        clock.advance(CAP - CHECK_INTERVAL / 2)
        startRetrieval(busy)
        assert (idle.received(), stops) == (b"", [])
        clock.advance(CHECK_INTERVAL / 2)
    assert len(stops) == 1
    assert idle.received() == STOPPING
    assert busy.received() == b""
    busy.upstream.reply(b"line\r\n.\r\n")
    assert busy.received() == b"line\r\n.\r\n" + STOPPING
    assert [formatEvent(e) for e in events][1:3] == [
        "replaced by a new worker: 2 connections still open after 120 s ([proxy] retire_after); "
        "stopping them: each finishes its command in flight",
        "stopping: 2 sessions open, each may finish its command in flight for up to 30.0 s",
    ]
    with capturedLogs() as later:
        idle.client.connected = False
        busy.client.connected = False
        clock.advance(CAP)
    assert len(stops) == 1
    assert "last connection" not in " ".join(formatEvent(e) for e in later)


def test_capReadWhenItBegins() -> None:
    """
    The cap is asked for when the retirement begins (the worker's latest
    reload read it), not when the worker started.
    """
    clock = Clock()
    connections = OpenConnections()
    held = accept(CountedListenerFactory(Factory.forProtocol(Protocol), connections))
    caps = [CAP]
    stops: list[None] = []
    retirement = Retirement(
        clock, FakeListeners(), connections, lambda: stops.append(None), lambda: caps[-1]
    )
    caps.append(5.0)
    retirement.begin()
    clock.advance(4.0)
    assert stops == []
    clock.advance(1.0)
    assert stops == [None]
    assert held.connected


def test_capZeroStopsInTheNextTurn() -> None:
    """
    A cap of 0 waits for nobody: with a connection open the graceful stop
    begins in the reactor's next turn, and the log says so.
    """
    clock = Clock()
    connections = OpenConnections()
    accept(CountedListenerFactory(Factory.forProtocol(Protocol), connections))
    stops: list[None] = []
    retirement = Retirement(
        clock, FakeListeners(), connections, lambda: stops.append(None), lambda: 0.0
    )
    with capturedLogs() as events:
        retirement.begin()
        assert stops == []
        clock.advance(0)
    assert stops == [None]
    assert [formatEvent(e) for e in events] == [
        "replaced by a new worker: accepts no more, exits once its 1 connections "
        "have ended (at most 0 s, then it stops them)",
        "replaced by a new worker: 1 connections still open after 0 s ([proxy] retire_after); "
        "stopping them: each finishes its command in flight",
    ]
