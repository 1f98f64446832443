"""
The tag plugin's Twisted client of spamd (plugins/tag/_client.py): the SYMBOLS request it
sends, its timeout, its answer and its cancellation, over in-memory connections.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
)
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from plugins.tag import (
    SpamdAnswer,
    SpamdClient,
    SpamdError,
    spamdRequest,
)
from tests.test_plugin_tag import HAM


def attempted(reactor: MemoryReactorClock, index: int = 0) -> Protocol:
    """The protocol the client's C{index}th connection attempt on C{reactor} builds."""
    protocol = reactor.tcpClients[index][2].buildProtocol(None)
    assert isinstance(protocol, Protocol)
    return protocol


def test_clientSendsSymbolsAndTimesOut() -> None:
    """
    The client sends a SPAMC/1.5 SYMBOLS request with Content-length and User;
    a spamd that does not answer within the timeout fails the check with a
    TimeoutError and the connection is aborted.
    """
    reactor = MemoryReactorClock()
    client = SpamdClient(TCP4ClientEndpoint(reactor, "127.0.0.1", 783), reactor, 5.0, "bob")
    checked = client.check(b"Subject: x\r\n\r\nbody\r\n")
    protocol = attempted(reactor)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value() == (
        b"SYMBOLS SPAMC/1.5\r\nContent-length: 20\r\nUser: bob\r\n\r\nSubject: x\r\n\r\nbody\r\n"
    )
    assert transport.value() == spamdRequest(b"Subject: x\r\n\r\nbody\r\n", "bob")
    failures: list[Failure] = []
    checked.addErrback(failures.append)
    reactor.advance(4.9)
    assert not failures
    reactor.advance(0.2)
    assert failures and failures[0].check(TimeoutError)
    assert transport.disconnecting


def connectedClient() -> tuple[Deferred[SpamdAnswer], Any, StringTransport]:
    """A check in flight on a memory reactor: its Deferred, protocol and transport."""
    reactor = MemoryReactorClock()
    client = SpamdClient(TCP4ClientEndpoint(reactor, "127.0.0.1", 783), reactor, 5.0)
    checked = client.check(HAM)
    protocol = attempted(reactor)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return checked, protocol, transport


def test_clientAnswersAndCancels() -> None:
    """
    A complete answer fires the check and closes the connection; cancelling a
    check (the chain's own timeout) aborts its connection.
    """
    checked, protocol, transport = connectedClient()
    answers: list[SpamdAnswer] = []
    checked.addCallback(answers.append)
    protocol.dataReceived(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\n")
    protocol.dataReceived(b"Spam: False ; -0.0 / 5.0\r\n\r\nNO_RE")
    assert not answers
    protocol.dataReceived(b"LAYS")
    assert answers == [SpamdAnswer(False, -0.0, 5.0, ("NO_RELAYS",))]
    assert transport.disconnecting

    cancelled, _, transport = connectedClient()
    failures: list[Failure] = []
    cancelled.addErrback(failures.append)
    cancelled.cancel()
    assert failures[0].check(CancelledError)
    assert transport.disconnecting


def test_pingSendsPingAndTakesPong() -> None:
    """
    A PING goes out as SPAMC/1.5 asks; spamd's PONG line answers it and the connection is
    closed.
    """
    reactor = MemoryReactorClock()
    client = SpamdClient(TCP4ClientEndpoint(reactor, "127.0.0.1", 783), reactor, 5.0)
    pinging = client.ping()
    protocol = attempted(reactor)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value() == b"PING SPAMC/1.5\r\n\r\n"
    results: list[Any] = []
    pinging.addCallback(results.append)
    protocol.dataReceived(b"SPAMD/1.5 0 PO")
    assert results == []
    protocol.dataReceived(b"NG\r\n")
    assert results == [None]
    assert transport.disconnecting


def test_pingFailsOnAnotherAnswerSilenceOrClose() -> None:
    """
    An error line is a SpamdError, silence past the timeout a TimeoutError (the connection
    aborted), a close without a PONG a SpamdError.
    """
    reactor = MemoryReactorClock()
    client = SpamdClient(TCP4ClientEndpoint(reactor, "127.0.0.1", 783), reactor, 5.0)
    failures: list[Failure] = []
    transports = []
    for _ in range(3):
        client.ping().addErrback(failures.append)
    protocols = [attempted(reactor, i) for i in range(3)]
    for protocol in protocols:
        transports.append(StringTransport())
        protocol.makeConnection(transports[-1])
    protocols[0].dataReceived(b"SPAMD/1.0 76 Bad header line: PING\r\n")
    protocols[2].connectionLost(Failure(ConnectionError("closed")))
    reactor.advance(5.1)
    assert [f.type for f in failures] == [SpamdError, SpamdError, TimeoutError]
    assert "76 Bad header line" in failures[0].getErrorMessage()
    assert transports[1].disconnecting
