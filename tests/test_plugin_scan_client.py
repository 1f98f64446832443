"""
The scan plugin's Twisted client of clamd (plugins/scan/_client.py) over in-memory
transports: streaming, early refusal, the connection limit, cancelling, an unreachable clamd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from popproxy._plugins import _loadFile
from tests.typedtransport import ProducerTransport

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "scan"

# The plugin module itself (the very module object the loader uses), for its protocol parts.
scan: Any = _loadFile(PLUGIN)


# The Twisted client, over in-memory transports.


def connectedProtocol(data: bytes, chunkSize: int = 4) -> tuple[Any, ProducerTransport]:
    protocol = scan.InstreamProtocol(data, chunkSize)
    transport = ProducerTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_protocolStreamsAndReadsTheAnswer() -> None:
    """
    The command, every chunk and the terminator go out (chunk by chunk, as the transport
    asks for more); the answer clamd gives before closing is the result.
    """
    protocol, transport = connectedProtocol(b"0123456789")
    while (producer := transport.registeredProducer()) is not None:
        IPullProducer(producer).resumeProducing()
    assert transport.value() == (b"zINSTREAM\0\0\0\0\x040123\0\0\0\x044567\0\0\0\x0289\0\0\0\0")
    results: list[Any] = []
    protocol.finished.addCallback(results.append)
    protocol.dataReceived(b"stream: Popproxy.Test FOUND\0")
    protocol.connectionLost(Failure(ConnectionError("closed")))
    assert results[0].names == ("Popproxy.Test",)


def test_protocolStopsSendingWhenClamdRefusesEarly() -> None:
    """
    clamd's size-limit reply, arriving while data is still being sent, stops the sending
    and becomes StreamTooLarge.
    """
    protocol, transport = connectedProtocol(b"x" * 100)
    IPullProducer(transport.producer).resumeProducing()
    protocol.dataReceived(b"INSTREAM size limit exceeded. ERROR\0")
    assert transport.producer is None
    sent = len(transport.value())
    protocol.connectionLost(Failure(ConnectionError("reset")))
    assert len(transport.value()) == sent
    failures: list[Failure] = []
    protocol.finished.addErrback(failures.append)
    assert failures[0].check(scan.StreamTooLarge)


def test_signatureFoundBeforeAnOverlongReplyWins() -> None:
    """
    A FOUND followed in the same read by more octets than any reply can
    be: the connection is dropped, and the signature found still decides
    (an OK in the same place would give way to the error).
    """
    for first, expected in ((b"stream: Popproxy.Test FOUND\0", ("Popproxy.Test",)), (b"", None)):
        protocol, transport = connectedProtocol(b"0123456789")
        protocol.dataReceived(first + b"x" * 20_000)
        assert transport.disconnecting or transport.disconnected
        protocol.connectionLost(Failure(ConnectionError("aborted")))
        results: list[Any] = []
        protocol.finished.addBoth(results.append)
        if expected is None:
            assert isinstance(results[0], Failure) and results[0].check(scan.ClamdError)
        else:
            assert results[0].names == expected


class FakeEndpoint:
    """A client endpoint whose connection attempts the test completes by hand."""

    def __init__(self) -> None:
        self.attempts: list[tuple[Deferred[Any], Any]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        attempt: Deferred[Any] = Deferred()
        self.attempts.append((attempt, factory))
        return attempt

    def complete(self, index: int) -> tuple[Any, ProducerTransport]:
        attempt, factory = self.attempts[index]
        protocol = factory.buildProtocol(None)
        transport = ProducerTransport()
        protocol.makeConnection(transport)
        attempt.callback(protocol)
        return protocol, transport


def test_aClientWithoutAClockIsRefused() -> None:
    """
    A client cannot be made without a clock: any client can open sessions, and a closing
    session needs one to drop the connection of a clamd that stopped reading (CLOSE_GRACE)
    instead of waiting for it forever.
    """
    with pytest.raises(TypeError, match="clock"):
        scan.ClamdClient(FakeEndpoint())


def test_clientQueuesBeyondItsConnectionLimit() -> None:
    """
    With max_connections 2, five scans open two connections; each finished (or cancelled)
    scan lets exactly one waiting scan connect.
    """
    endpoint = FakeEndpoint()
    client = scan.ClamdClient(endpoint, maxConnections=2, clock=Clock())
    scans = [client.scan(b"data %d" % number) for number in range(5)]
    assert len(endpoint.attempts) == 2
    assert client.waiting == 3
    protocol, _ = endpoint.complete(0)
    protocol.dataReceived(b"stream: OK\0")
    protocol.connectionLost(Failure(ConnectionError("closed")))
    results: list[Any] = []
    scans[0].addCallback(results.append)
    assert results[0].names == ()
    assert len(endpoint.attempts) == 3
    scans[1].cancel()
    scans[1].addErrback(lambda failure: None)
    assert len(endpoint.attempts) == 4
    assert client.waiting == 1


def test_cancellingAScanAbortsItsConnection() -> None:
    """
    A scan cancelled (by the filter's timeout) while clamd is silent drops the connection
    and fails with CancelledError, not with a made-up result.
    """
    endpoint = FakeEndpoint()
    client = scan.ClamdClient(endpoint, maxConnections=1, clock=Clock())
    scanning = client.scan(b"data")
    _, transport = endpoint.complete(0)
    scanning.cancel()
    failures: list[Failure] = []
    scanning.addErrback(failures.append)
    assert transport.disconnecting
    assert failures and failures[0].check(CancelledError)


def test_unreachableClamdIsClamdUnavailable() -> None:
    """
    A refused connection fails the scan with ClamdUnavailable.
    """
    endpoint = FakeEndpoint()
    client = scan.ClamdClient(endpoint, clock=Clock())
    scanning = client.scan(b"data")
    endpoint.attempts[0][0].errback(ConnectionRefusedError("refused"))
    failures: list[Failure] = []
    scanning.addErrback(failures.append)
    assert failures[0].check(scan.ClamdUnavailable)


def test_pingSendsPingAndTakesPong() -> None:
    """
    A PING goes out as clamd's NUL-delimited command, outside the connection limit, and
    PONG answers it; the connection is then closed.
    """
    endpoint = FakeEndpoint()
    client = scan.ClamdClient(endpoint, maxConnections=1, clock=Clock())
    client.scan(b"busy")
    pinging = client.ping()
    assert len(endpoint.attempts) == 2
    protocol, transport = endpoint.complete(1)
    assert transport.value() == b"zPING\0"
    results: list[Any] = []
    pinging.addCallback(results.append)
    protocol.dataReceived(b"PO")
    assert results == []
    protocol.dataReceived(b"NG\0")
    assert results == [None]
    assert transport.disconnecting


def test_pingFailsOnAnythingButPong() -> None:
    """
    Another answer is a ClamdError, a connection closed without an answer or never made is
    ClamdUnavailable.
    """
    endpoint = FakeEndpoint()
    client = scan.ClamdClient(endpoint, clock=Clock())
    outcomes = [client.ping() for _ in range(3)]
    failures: list[Failure] = []
    for pinging in outcomes:
        pinging.addErrback(failures.append)
    protocol, _ = endpoint.complete(0)
    protocol.dataReceived(b"UNKNOWN COMMAND\0")
    protocol, _ = endpoint.complete(1)
    protocol.connectionLost(Failure(ConnectionError("closed")))
    endpoint.attempts[2][0].errback(ConnectionRefusedError("refused"))
    assert [f.type for f in failures] == [
        scan.ClamdError,
        scan.ClamdUnavailable,
        scan.ClamdUnavailable,
    ]
    assert "UNKNOWN COMMAND" in failures[0].getErrorMessage()
    assert "refused" in failures[2].getErrorMessage()
