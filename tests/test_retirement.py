"""
Tests for popproxy._retirement, how a replaced worker ends: it closes every
listener at once, counts the connections it accepted (from their accept,
before any session exists) and stops the process only once the last one
has ended, never cutting one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from popproxy._generation import ListenerPlan
from popproxy._retirement import (
    CHECK_INTERVAL,
    CountedListenerFactory,
    OpenConnections,
    Retirement,
)


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
    are open; the process is stopped only once the last has ended (looked
    at every CHECK_INTERVAL seconds), and a second request changes nothing.
    """
    clock = Clock()
    listeners = FakeListeners()
    connections = OpenConnections()
    factory = CountedListenerFactory(Factory.forProtocol(Protocol), connections)
    held = [accept(factory), accept(factory)]
    stops: list[None] = []
    retirement = Retirement(clock, listeners, connections, lambda: stops.append(None))
    with capturedLogs() as events:
        retirement.begin()
        retirement.begin()
    assert listeners.closed == ["tcp:110", "tcp:995"]
    assert [formatEvent(e) for e in events] == [
        "replaced by a new worker: accepts no more, exits once its 2 connections have ended"
    ]
    held[0].connected = False
    clock.advance(CHECK_INTERVAL * 100)
    assert stops == []
    held[1].connected = False
    clock.advance(CHECK_INTERVAL)
    assert stops == [None]
    clock.advance(CHECK_INTERVAL * 10)
    assert stops == [None]


def test_retirementWithNoConnectionStopsAtOnce() -> None:
    """
    A worker retired while no connection is open stops at once.
    """
    stops: list[None] = []
    retirement = Retirement(Clock(), FakeListeners(), OpenConnections(), lambda: stops.append(None))
    retirement.begin()
    assert stops == [None]
