"""
The Twisted Redis client (popproxy/_redisclient.py) over in-memory transports and a
test clock: pipelining, the handshake, the deadline per command, failing fast while Redis is
known down, backoff, reconnecting after a lost connection.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy._counterstore import CounterStoreUnavailable
from popproxy._redisclient import Backoff, RedisClient, RedisProtocol
from popproxy._resp import encodeCommand


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    An endpoint whose connection attempts the test answers: C{accept()} connects the
    protocol to a StringTransport, C{refuse()} fails the attempt.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[IProtocolFactory, Deferred[IProtocol]]] = []
        self.protocols: list[RedisProtocol] = []

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        attempt: Deferred[IProtocol] = Deferred()
        self.attempts.append((protocolFactory, attempt))
        return attempt

    def accept(self) -> tuple[RedisProtocol, StringTransport]:
        factory, attempt = self.attempts[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6379))
        # (Not None first: mypy-zope takes an isinstance on "IProtocol | None" for unreachable.)
        assert protocol is not None
        assert isinstance(protocol, RedisProtocol)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.protocols.append(protocol)
        attempt.callback(protocol)
        return protocol, transport

    def refuse(self) -> None:
        self.attempts[-1][1].errback(ConnectionRefusedError("refused"))


def outcome(deferred: Deferred[Any]) -> list[Any]:
    results: list[Any] = []
    deferred.addBoth(results.append)
    return results


def unavailable(results: list[Any]) -> str:
    """The message of the CounterStoreUnavailable the call failed with."""
    assert len(results) == 1 and isinstance(results[0], Failure), results
    assert results[0].check(CounterStoreUnavailable), results[0]
    return results[0].getErrorMessage()


def makeClient(**options: Any) -> tuple[RedisClient, FakeEndpoint, Clock]:
    clock = Clock()
    endpoint = FakeEndpoint()
    client = RedisClient(clock, endpoint, timeout=0.5, backoff=Backoff(1.0, 4.0), **options)
    return client, endpoint, clock


def test_commandsArePipelinedAndAnsweredInOrder() -> None:
    """
    Commands issued while connecting and after go out back to back, without waiting for
    answers, and each Deferred gets its own reply.
    """
    client, endpoint, _ = makeClient()
    first = outcome(client.execute("INCR", "a"))
    protocol, transport = endpoint.accept()
    second = outcome(client.execute("GET", "b"))
    assert transport.value() == encodeCommand("INCR", "a") + encodeCommand("GET", "b")
    protocol.dataReceived(b":1\r\n$2\r")
    assert first == [1] and second == []
    protocol.dataReceived(b"\nhi\r\n")
    assert second == [b"hi"]
    assert len(endpoint.attempts) == 1


def test_handshakeGoesFirstOnEachConnection() -> None:
    """
    AUTH and SELECT precede the first command; a refused AUTH fails the command and the
    connection is dropped.
    """
    client, endpoint, _ = makeClient(handshake=(("AUTH", "pw"), ("SELECT", 2)))
    answer = outcome(client.execute("GET", "k"))
    protocol, transport = endpoint.accept()
    assert transport.value() == encodeCommand("AUTH", "pw") + encodeCommand("SELECT", 2)
    protocol.dataReceived(b"-WRONGPASS invalid username-password pair\r\n+OK\r\n")
    assert "WRONGPASS" in unavailable(answer)
    assert transport.disconnected


def test_anErrorReplyIsUnavailable() -> None:
    """
    An error reply fails that command only, saying what Redis answered.
    """
    client, endpoint, _ = makeClient()
    answer = outcome(client.execute("EVAL", "bad"))
    protocol, _ = endpoint.accept()
    later = outcome(client.execute("GET", "k"))
    protocol.dataReceived(b"-ERR Error compiling script\r\n$-1\r\n")
    assert "ERR Error compiling script" in unavailable(answer)
    assert later == [None]


def test_aCommandWithoutAnswerFailsAtItsDeadline() -> None:
    """
    No reply within the timeout: the command fails with CounterStoreUnavailable and the
    connection (whose later replies could no longer be matched) is dropped.
    """
    client, endpoint, clock = makeClient()
    answer = outcome(client.execute("GET", "k"))
    _, transport = endpoint.accept()
    clock.advance(0.49)
    assert answer == []
    clock.advance(0.02)
    assert "within 0.5s" in unavailable(answer)
    assert transport.disconnected


def test_aConnectionThatHangsFailsAtTheDeadline() -> None:
    """
    A connection attempt that never completes (a black-holed address) fails the command
    within its timeout too.
    """
    client, endpoint, clock = makeClient()
    answer = outcome(client.execute("GET", "k"))
    clock.advance(0.5)
    assert "within 0.5s" in unavailable(answer)


def test_aDownRedisFailsAtOnceUntilTheBackoffEnds() -> None:
    """
    After a refused connection, commands fail immediately without a new attempt until the
    backoff delay ends; the delay doubles with each failed attempt up to its maximum, and a
    success resets it.
    """
    client, endpoint, clock = makeClient()
    answer = outcome(client.execute("GET", "k"))
    endpoint.refuse()
    assert "refused" in unavailable(answer)
    for delay in (1.0, 2.0, 4.0, 4.0):
        attempts = len(endpoint.attempts)
        clock.advance(delay - 0.25)
        message = unavailable(outcome(client.execute("GET", "k")))
        assert "refused" in message and "next attempt in" in message
        assert len(endpoint.attempts) == attempts
        clock.advance(0.25)
        answer = outcome(client.execute("GET", "k"))
        assert len(endpoint.attempts) == attempts + 1
        endpoint.refuse()
        unavailable(answer)
    clock.advance(4.0)
    answer = outcome(client.execute("GET", "k"))
    protocol, _ = endpoint.accept()
    protocol.dataReceived(b":3\r\n")
    assert answer == [3]
    protocol.connectionLost(Failure(ConnectionLost()))
    answer = outcome(client.execute("GET", "k"))
    endpoint.refuse()
    unavailable(answer)
    clock.advance(1.0)
    outcome(client.execute("GET", "k"))
    assert len(endpoint.attempts) == 8


def test_aLostConnectionFailsPendingCommandsAndTheNextOneReconnects() -> None:
    """
    Redis going away fails every command waiting for a reply; the next command connects
    again at once (a lost connection is not a failed attempt).
    """
    client, endpoint, _ = makeClient()
    first = outcome(client.execute("GET", "a"))
    second = outcome(client.execute("GET", "b"))
    protocol, _ = endpoint.accept()
    protocol.connectionLost(Failure(ConnectionLost("gone")))
    assert "lost" in unavailable(first) and "lost" in unavailable(second)
    third = outcome(client.execute("GET", "c"))
    protocol, transport = endpoint.accept()
    assert transport.value() == encodeCommand("GET", "c")
    protocol.dataReceived(b"$1\r\nz\r\n")
    assert third == [b"z"]


def test_aGarbledStreamDropsTheConnection() -> None:
    """
    A reply that is not RESP, or a reply nobody asked for, drops the connection: nothing
    after it can be trusted.
    """
    client, endpoint, _ = makeClient()
    outcome(client.execute("GET", "a"))
    protocol, transport = endpoint.accept()
    protocol.dataReceived(b"?\r\n")
    assert transport.disconnected
    outcome(client.execute("GET", "a"))
    protocol, transport = endpoint.accept()
    protocol.dataReceived(b":1\r\n:2\r\n")
    assert transport.disconnected


def test_closeDropsTheConnection() -> None:
    """
    close() closes the connection and fires once it is gone; with none, at once.
    """
    client, endpoint, _ = makeClient()
    assert outcome(client.close()) == [None]
    outcome(client.execute("GET", "a"))
    protocol, transport = endpoint.accept()
    closed = outcome(client.close())
    assert transport.disconnecting and closed == []
    protocol.connectionLost(Failure(ConnectionLost()))
    assert closed == [None]


@pytest.mark.parametrize("failures, delay", [(1, 1.0), (2, 2.0), (3, 4.0), (9, 4.0)])
def test_backoffDoublesUpToItsMaximum(failures: int, delay: float) -> None:
    """
    The wait after n failed attempts in a row is initial * 2**(n-1), at most maximum.
    """
    assert Backoff(1.0, 4.0).delay(failures) == delay


def test_aClosedProtocolRefusesCommands() -> None:
    """
    A command on a protocol whose connection is gone fails at once instead of vanishing.
    """
    protocol = RedisProtocol()
    failed = outcome(protocol.execute("GET", "k"))
    assert "closed" in unavailable(failed)
