"""
The scan plugin's clamd sessions: the parts of one message share one connection (IDSESSION).

Sans I/O (plugins/scan/_idsession.py): request numbers and which reply answers which, an
answer kept when unexpected octets follow it. Over in-memory transports
(plugins/scan/_sessionclient.py): the session's octets, a new connection after clamd ends one or
answers before a stream ended, a cancelled scan closing cleanly. Against the real clamd,
through a counting relay and the daemon's filter chain: many parts over one connection with
the verdicts of before, an oversize part, a session clamd closed between two parts (scanned
again in a new one), clamd gone mid-session and a clamd that never answers, every connection
ended with zEND.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from popproxy.message import Message
from tests.peers.clamd import EICAR_SIGNATURE, ClamdPeer, StallingServer
from tests.peers.relay import Relay, RelayedConnection
from tests.test_plugin_scan import (
    HEADER,
    TEXT,
    Case,
    attachmentPart,
    buildMessage,
    eicarAttachment,
    quarantined,
    runChains,
    scan,
    splitStamp,
    textPart,
)
from tests.test_plugin_scan_client import FakeEndpoint

# Sans I/O: numbering and attribution.


def test_eachRequestGetsTheNextNumberAndItsOwnAnswer() -> None:
    """
    Requests are numbered from 1; a reply is the answer of the request it names, without
    its number, whatever chunks it arrives in.
    """
    exchange = scan.SessionExchange()
    assert exchange.request() == b"zINSTREAM\0"
    assert exchange.feed(b"1: stream: O") is None
    assert exchange.feed(b"K\0") == b"stream: OK"
    exchange.request()
    assert exchange.outstanding == 2
    assert exchange.feed(b"2: stream: X FOUND\0") == b"stream: X FOUND"
    assert exchange.outstanding is None


def test_aReplyToAnAnsweredRequestIsNotTheNextOnesAnswer() -> None:
    """
    A second reply carrying an earlier request's number is not taken as the answer of the
    request now outstanding: attribution is by number, not by order.
    """
    exchange = scan.SessionExchange()
    exchange.request()
    exchange.feed(b"1: stream: OK\0")
    exchange.request()
    assert exchange.feed(b"1: stream: Late FOUND\0") is None
    assert exchange.feed(b"2: stream: OK\0") == b"stream: OK"


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"3: stream: OK\0", "clamd answered request 3, only 1 sent"),
        (b"0: stream: OK\0", "clamd answered request 0, only 1 sent"),
        (b"Command invalid inside IDSESSION. ERROR\0", "clamd: Command invalid inside IDSESSION"),
        (b"stream: OK\0", "clamd: stream: OK"),
    ],
)
def test_aReplyWithoutAFittingNumberIsAnError(reply: bytes, message: str) -> None:
    """
    A reply naming a request never sent, or no request, is a ClamdError naming it.
    """
    exchange = scan.SessionExchange()
    exchange.request()
    with pytest.raises(scan.ClamdError, match=re.escape(message)):
        exchange.feed(reply)


@pytest.mark.parametrize(
    "after",
    [b"not clamd\0", b"x" * 20000],
    ids=["unnumbered reply", "overlong tail"],
)
def test_anAnswerBeforeUnexpectedOctetsIsKept(after: bytes) -> None:
    """
    The outstanding request's answer followed, in the same octets, by what no session reply
    can be: the error raised still carries that answer, so what it found is not lost.
    """
    exchange = scan.SessionExchange()
    exchange.request()
    with pytest.raises(scan.UnexpectedReply) as raised:
        exchange.feed(b"1: stream: Popproxy.Test FOUND\0" + after)
    assert raised.value.answer == b"stream: Popproxy.Test FOUND"


def test_aSecondRequestWaitsForTheFirstAnswer() -> None:
    """
    One request at a time: asking for another before the answer is a programming error.
    """
    exchange = scan.SessionExchange()
    exchange.request()
    with pytest.raises(RuntimeError, match="request 1 is still unanswered"):
        exchange.request()


def test_onlyAReusedSessionLostBeforeAnyAnswerOctetMaySendItsRequestAgain() -> None:
    """
    A connection lost under the first request of a session is clamd's failure; under a later
    one, before any octet came back, it may be a session clamd closed as idle, so the request
    may be sent again; once an octet of the answer came, it may not.
    """
    exchange = scan.SessionExchange()
    exchange.request()
    assert not exchange.resendable
    exchange.feed(b"1: stream: OK\0")
    assert not exchange.resendable
    exchange.request()
    assert exchange.resendable
    exchange.feed(b"2: str")
    assert not exchange.resendable
    exchange.feed(b"eam: OK\0")
    exchange.request()
    assert exchange.resendable


# The Twisted session over in-memory transports.


def drain(transport: Any) -> None:
    """Let the registered frame producer write everything."""
    while (producer := transport.registeredProducer()) is not None:
        IPullProducer(producer).resumeProducing()


def test_sessionScansOneAfterAnotherOnOneConnection() -> None:
    """
    Two scans on one session: one connection, IDSESSION first, each INSTREAM with its frames,
    each answer to its own scan; closing sends zEND and closes the connection.
    """
    endpoint = FakeEndpoint()
    session = scan.ClamdClient(endpoint, chunkSize=4, clock=Clock()).session()
    first = session.scan(b"abcdef")
    protocol, transport = endpoint.complete(0)
    drain(transport)
    results: list[Any] = []
    first.addCallback(results.append)
    protocol.dataReceived(b"1: stream: OK\0")
    second = session.scan(b"xy")
    drain(transport)
    second.addCallback(results.append)
    protocol.dataReceived(b"2: stream: Popproxy.Test FOUND\0")
    assert len(endpoint.attempts) == 1
    assert transport.value() == (
        b"zIDSESSION\0zINSTREAM\0\0\0\0\x04abcd\0\0\0\x02ef\0\0\0\0zINSTREAM\0\0\0\0\x02xy\0\0\0\0"
    )
    assert [r.names for r in results] == [(), ("Popproxy.Test",)]
    closing = session.close()
    assert transport.value().endswith(b"\0\0\0\0zEND\0") and transport.disconnecting
    assert not closing.called
    protocol.connectionLost(Failure(ConnectionError("closed")))
    assert closing.called


def test_anErrorEndsTheSessionAndTheNextScanOpensAnother() -> None:
    """
    clamd's size-limit refusal fails that scan only (StreamTooLarge); the session is ended
    from this side too (zEND), and the next scan connects anew and is numbered 1 there.
    """
    endpoint = FakeEndpoint()
    session = scan.ClamdClient(endpoint, maxConnections=1, chunkSize=4, clock=Clock()).session()
    failures: list[Failure] = []
    session.scan(b"x" * 40).addErrback(failures.append)
    protocol, transport = endpoint.complete(0)
    IPullProducer(transport.producer).resumeProducing()
    protocol.dataReceived(b"1: INSTREAM size limit exceeded. ERROR\0")
    assert failures[0].check(scan.StreamTooLarge)
    assert transport.value().endswith(b"zEND\0") and transport.disconnecting
    session.scan(b"next")
    # The one connection slot is still held until the ended connection is gone.
    assert len(endpoint.attempts) == 1
    protocol.connectionLost(Failure(ConnectionError("closed")))
    again, transportAgain = endpoint.complete(1)
    drain(transportAgain)
    assert transportAgain.value() == b"zIDSESSION\0zINSTREAM\0\0\0\0\x04next\0\0\0\0"


def test_anAnswerBeforeTheStreamEndedEndsTheSession() -> None:
    """
    clamd answering while the stream is still being sent: the answer is the scan's result,
    and the session is ended (the stream gets its end marker, then zEND) rather than kept,
    since clamd would read a next zINSTREAM as more of the unfinished stream; the next scan
    goes to a new connection.
    """
    endpoint = FakeEndpoint()
    session = scan.ClamdClient(endpoint, chunkSize=4, clock=Clock()).session()
    results: list[Any] = []
    session.scan(b"x" * 40).addCallback(results.append)
    protocol, transport = endpoint.complete(0)
    IPullProducer(transport.producer).resumeProducing()
    protocol.dataReceived(b"1: stream: Popproxy.Test FOUND\0")
    assert results[0].names == ("Popproxy.Test",)
    session.scan(b"next")
    assert transport.value() == b"zIDSESSION\0zINSTREAM\0\0\0\0\x04xxxx\0\0\0\0zEND\0"
    assert transport.producer is None and transport.disconnecting
    assert len(endpoint.attempts) == 2
    _, transportAgain = endpoint.complete(1)
    drain(transportAgain)
    assert transportAgain.value() == b"zIDSESSION\0zINSTREAM\0\0\0\0\x04next\0\0\0\0"


@pytest.mark.parametrize(
    "answer, found",
    [(b"1: stream: Popproxy.Test FOUND\0", ("Popproxy.Test",)), (b"1: stream: OK\0", None)],
    ids=["FOUND", "OK"],
)
def test_aSignatureFoundWinsOverUnexpectedOctetsAfterIt(
    answer: bytes, found: tuple[str, ...] | None
) -> None:
    """
    An answer followed in one read by a reply without a number: a FOUND answer is still the
    scan's result (any signature found wins), an OK one gives way to the ClamdError; either
    way the session is ended (zEND), its octets no longer to be trusted.
    """
    endpoint = FakeEndpoint()
    session = scan.ClamdClient(endpoint, clock=Clock()).session()
    outcomes: list[Any] = []
    session.scan(b"data").addBoth(outcomes.append)
    protocol, transport = endpoint.complete(0)
    drain(transport)
    protocol.dataReceived(answer + b"garbage\0")
    if found is None:
        assert isinstance(outcomes[0], Failure) and outcomes[0].check(scan.ClamdError)
        assert "clamd: garbage" in outcomes[0].getErrorMessage()
    else:
        assert outcomes[0].names == found
    assert transport.value().endswith(b"zEND\0") and transport.disconnecting


def test_cancellingAScanMidStreamEndsTheSessionCleanly() -> None:
    """
    A scan cancelled while its stream is still being sent (its time is up): the stream gets
    its end marker, then zEND, then the connection is closed; if the peer does not take
    them within the grace the connection is dropped.
    """
    clock = Clock()
    endpoint = FakeEndpoint()
    session = scan.ClamdClient(endpoint, chunkSize=4, clock=clock).session()
    scanning = session.scan(b"x" * 40)
    protocol, transport = endpoint.complete(0)
    IPullProducer(transport.producer).resumeProducing()
    scanning.cancel()
    failures: list[Failure] = []
    scanning.addErrback(failures.append)
    assert failures[0].check(CancelledError)
    assert transport.value() == b"zIDSESSION\0zINSTREAM\0\0\0\0\x04xxxx\0\0\0\0zEND\0"
    assert transport.producer is None and transport.disconnecting
    assert not transport.disconnected
    clock.advance(scan._sessionclient.CLOSE_GRACE)
    assert transport.disconnected


def test_clamdClosingMidSessionIsUnavailable() -> None:
    """
    The connection lost while a scan waits for its answer: that scan fails with
    ClamdUnavailable (the on_failure policy), and the session's slot is free again.
    """
    endpoint = FakeEndpoint()
    client = scan.ClamdClient(endpoint, maxConnections=1, clock=Clock())
    session = client.session()
    scanning: Deferred[Any] = session.scan(b"data")
    protocol, transport = endpoint.complete(0)
    drain(transport)
    failures: list[Failure] = []
    scanning.addErrback(failures.append)
    protocol.connectionLost(Failure(ConnectionError("reset by peer")))
    assert failures[0].check(scan.ClamdUnavailable)
    assert "without an answer (reset by peer)" in failures[0].getErrorMessage()
    client.scan(b"other")
    assert len(endpoint.attempts) == 2


def test_aReusedSessionFoundClosedSendsTheScanAgainInANewOne() -> None:
    """
    clamd closes an idle session silently: the next scan, sent on it, meets the closed
    connection before any answer. It is sent again, whole, in a new session (with the one
    connection slot, freed by the lost connection), and its answer there is the result.
    """
    endpoint = FakeEndpoint()
    session = scan.ClamdClient(endpoint, maxConnections=1, clock=Clock()).session()
    session.scan(b"first")
    protocol, transport = endpoint.complete(0)
    drain(transport)
    protocol.dataReceived(b"1: stream: OK\0")
    results: list[Any] = []
    session.scan(b"second").addBoth(results.append)
    drain(transport)
    protocol.connectionLost(Failure(ConnectionError("reset by peer")))
    assert results == [] and len(endpoint.attempts) == 2
    again, transportAgain = endpoint.complete(1)
    drain(transportAgain)
    assert transportAgain.value() == b"zIDSESSION\0zINSTREAM\0\0\0\0\x06second\0\0\0\0"
    again.dataReceived(b"1: stream: Popproxy.Test FOUND\0")
    assert results[0].names == ("Popproxy.Test",)


@pytest.mark.parametrize(
    "answered, partial",
    [(b"", b""), (b"1: stream: OK\0", b"2: str")],
    ids=["first request", "answer begun"],
)
def test_aLossTheSessionCannotExplainIsNotRetried(answered: bytes, partial: bytes) -> None:
    """
    The connection lost under a session's first request, or after part of the answer came:
    the scan fails with ClamdUnavailable (the on_failure policy) and nothing is sent again.
    """
    endpoint = FakeEndpoint()
    session = scan.ClamdClient(endpoint, clock=Clock()).session()
    scanning = session.scan(b"first")
    protocol, transport = endpoint.complete(0)
    drain(transport)
    if answered:
        protocol.dataReceived(answered)
        scanning = session.scan(b"second")
        drain(transport)
    failures: list[Failure] = []
    scanning.addErrback(failures.append)
    protocol.dataReceived(partial)
    protocol.connectionLost(Failure(ConnectionError("reset by peer")))
    assert len(endpoint.attempts) == 1
    assert failures[0].check(scan.ClamdUnavailable)
    assert "without an answer (reset by peer)" in failures[0].getErrorMessage()


# The real clamd, through a counting relay and the daemon's filter chain.


@pytest.fixture
def clamdRelay(clamd: ClamdPeer) -> Iterator[Relay]:
    """A counting relay in front of the session's clamd."""
    host, port = clamd.tcpAddress.split(":")[1:]
    relay = Relay((host, int(port)))
    try:
        yield relay
    finally:
        relay.stop()


def endedCleanly(connection: RelayedConnection) -> bool:
    """
    The client opened a session and ended it with zEND, and the connection is gone (which
    side the relay saw close first is a race: clamd closes at once on zEND).
    """
    sent = bytes(connection.fromClient)
    return sent.startswith(b"zIDSESSION\0") and sent.endswith(b"zEND\0") and connection.finished


def manyParts(count: int, infected: tuple[int, ...]) -> bytes:
    """A message of C{count} attachments, EICAR in those at the C{infected} positions."""
    parts = [
        eicarAttachment() if number in infected else textPart(f"Part {number}.\n")
        for number in range(count)
    ]
    return buildMessage(*parts)


def test_manyPartsShareOneConnectionWithTheSameVerdicts(
    clamd: ClamdPeer, clamdRelay: Relay, tmp_path: Any
) -> None:
    """
    A message of 60 parts, EICAR in two: clamd scans all 60 over one connection (one source
    port in its log, one connection at the relay, ended with zEND), the two infected parts are
    replaced and quarantined, and a clean message is stamped clean, unchanged, on a second
    connection of its own.
    """
    raw = manyParts(60, (7, 41))
    clean = manyParts(5, ())
    [[infected, delivered]] = runChains(
        Case({"address": clamdRelay.address}, (raw, clean), quarantine=tmp_path / "q")
    )
    assert infected.output is not None, infected.tempfail
    stamp, rest = splitStamp(infected.output)
    assert stamp == f"popproxy/clamd; infected parts replaced ({EICAR_SIGNATURE}.UNOFFICIAL)"
    assert sorted(record.data["path"] for _, record in quarantined(tmp_path / "q").values()) == [
        [7],
        [41],
    ]
    assert Message.fromBytes(rest).partAt((8,)).text() == "Part 8.\r\n"
    assert delivered.output == HEADER + b"clean\r\n" + clean
    connections = clamdRelay.settled()
    assert len(connections) == 2
    assert all(endedCleanly(connection) for connection in connections)
    assert sorted(connection.replies for connection in connections) == [5, 60]
    ports = re.findall(r"instream\(127\.0\.0\.1@(\d+)\)", clamd.log())
    assert len(ports) == 65 and len(set(ports)) == 2


def test_anOversizePartEndsItsSessionAndTheRestIsStillScanned(
    clamd: ClamdPeer, clamdRelay: Relay, tmp_path: Any
) -> None:
    """
    A part over clamd's StreamMaxLength (sent: max_stream is above it) ends that session;
    the parts after it are scanned in a new one and EICAR there is still removed; the stamp
    says which part went unchecked. Both connections are closed.
    """
    big = attachmentPart(b"z" * (clamd.streamMaxLength + 4096), "big.bin")
    raw = buildMessage(TEXT, big, eicarAttachment(), textPart("After.\n"))
    settings = {"address": clamdRelay.address, "max_stream": 4 * clamd.streamMaxLength}
    [[delivery]] = runChains(Case(settings, (raw,), quarantine=tmp_path / "q"))
    assert delivery.output is not None, delivery.tempfail
    stamp, _ = splitStamp(delivery.output)
    assert "too large for clamd's StreamMaxLength" in stamp
    assert f"infected parts replaced ({EICAR_SIGNATURE}.UNOFFICIAL)" in stamp
    connections = clamdRelay.settled()
    assert [connection.replies for connection in connections] == [2, 2]
    assert all(connection.finished for connection in connections)
    assert endedCleanly(connections[1])


def test_aSessionClosedBetweenTwoPartsIsScannedAgainInANewOne(
    clamd: ClamdPeer, tmp_path: Any
) -> None:
    """
    clamd's connection cut after three answers, as clamd does to a session idle past its
    IdleTimeout: the fourth part, sent on it, is sent again in a new session, and every part
    after it is scanned there; EICAR in the eighth part is found and replaced, the message is
    not left unchecked, and both connections are closed (the second with zEND).
    """
    host, port = clamd.tcpAddress.split(":")[1:]
    relay = Relay((host, int(port)), cutAfterReplies=3, cuts=1)
    try:
        raw = manyParts(10, (7,))
        [[delivery]] = runChains(
            Case({"address": relay.address}, (raw,), quarantine=tmp_path / "q")
        )
        connections = relay.settled()
    finally:
        relay.stop()
    assert delivery.output is not None, delivery.tempfail
    stamp, _ = splitStamp(delivery.output)
    assert stamp == f"popproxy/clamd; infected parts replaced ({EICAR_SIGNATURE}.UNOFFICIAL)"
    assert [record.data["path"] for _, record in quarantined(tmp_path / "q").values()] == [[7]]
    assert [(c.replies, c.cut) for c in connections] == [(3, True), (7, False)]
    assert endedCleanly(connections[1])


@pytest.mark.parametrize(
    "settings, expected",
    [({}, None), ({"on_failure": "deliver"}, b"unchecked (clamd unreachable)\r\n")],
    ids=["tempfail", "deliver"],
)
def test_clamdGoneMidSessionFollowsThePolicy(
    clamd: ClamdPeer, settings: dict[str, str], expected: bytes | None
) -> None:
    """
    clamd's connection cut after three answers and every connection after that closed at
    once (clamd gone): the fourth part is tried once more in a new session, which is lost
    too; the message is not called clean: by default a temporary failure (unreachable), with
    on_failure = "deliver" it arrives marked unchecked; no further part is tried.
    """
    host, port = clamd.tcpAddress.split(":")[1:]
    relay = Relay((host, int(port)), cutAfterReplies=3, refuseAfterCut=True)
    try:
        raw = manyParts(10, ())
        [[delivery]] = runChains(Case({"address": relay.address, **settings}, (raw,)))
        connections = relay.settled()
    finally:
        relay.stop()
    if expected is None:
        assert delivery.tempfail is not None and "unreachable" in delivery.tempfail
    else:
        assert delivery.output == HEADER + expected + raw
    assert [(c.replies, c.cut) for c in connections] == [(3, True), (0, True)]


def test_aClamdThatNeverAnswersTimesOutAndIsClosed(
    clamdStalling: StallingServer, tmp_path: Any
) -> None:
    """
    A clamd that takes the session and never answers: the message's time limit gives the
    on_failure policy (a temporary failure saying so), and the session is ended with zEND
    and closed before the verdict, not left open.
    """
    relay = Relay((clamdStalling.host, clamdStalling.port))
    try:
        [[delivery]] = runChains(
            Case({"address": relay.address, "timeout": 1}, (manyParts(3, ()),)), timeout=20
        )
        [connection] = relay.settled()
    finally:
        relay.stop()
    assert delivery.tempfail is not None and "did not answer in time" in delivery.tempfail
    assert 1.0 <= delivery.elapsed < 1.0 + scan._sessionclient.CLOSE_GRACE
    assert endedCleanly(connection)
