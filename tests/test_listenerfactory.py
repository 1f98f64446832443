"""
Tests for popproxy._listenerfactory: a listening port's factory whose
sessions come from the factory in use when they connect; replacing it
leaves the connections already made alone and passes the port's start and
stop on.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol, ServerFactory

from popproxy._listenerfactory import ListenerFactory

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


class Named(ServerFactory):
    noisy = False
    protocol = Protocol

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = self.stopped = 0

    def startFactory(self) -> None:
        self.started += 1

    def stopFactory(self) -> None:
        self.stopped += 1

    def logPrefix(self) -> str:
        return self.name


def test_newConnectionsUseTheReplacement() -> None:
    """
    Connections made before a replacement keep the factory that built
    them; those made after come from the new one.
    """
    old, new = Named("old"), Named("new")
    listener = ListenerFactory(old)
    before = listener.buildProtocol(ADDRESS)
    listener.replace(new)
    after = listener.buildProtocol(ADDRESS)
    assert before is not None and after is not None
    assert before.factory is old and after.factory is new


def test_startAndStopPassedOn() -> None:
    """
    The port's start reaches the factory in use; a replacement while
    listening starts the new one and stops the old one; the port's stop
    reaches the one in use then.  Its log prefix is that factory's.
    """
    old, new = Named("old"), Named("new")
    listener = ListenerFactory(old)
    listener.doStart()
    assert (old.started, old.stopped) == (1, 0)
    assert listener.logPrefix() == "old"
    listener.replace(new)
    assert (old.started, old.stopped, new.started) == (1, 1, 1)
    assert listener.logPrefix() == "new"
    listener.doStop()
    assert (new.started, new.stopped) == (1, 1)


def test_replacedBeforeListening() -> None:
    """
    Replaced before its port listens, neither factory is started or
    stopped yet.
    """
    old, new = Named("old"), Named("new")
    listener = ListenerFactory(old)
    listener.replace(new)
    assert (old.started, old.stopped, new.started) == (0, 0, 0)
