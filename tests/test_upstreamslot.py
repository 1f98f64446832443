"""
Tests for popproxy._upstreamslot: one upstream connection per session,
connected on demand and shared by callers asking for the same address,
replaced when a login routes elsewhere, dropped without QUIT.  Real
UpstreamConnections on StringTransports; the connect attempts are
Deferreds the test fires.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._tls import UpstreamTarget
from popproxy._upstream import UpstreamConnection
from popproxy._upstreamslot import UpstreamSlot

A = UpstreamTarget("tcp:a:110")
B = UpstreamTarget("tcp:b:110")


class Attempt:
    """
    One connect attempt the slot made, fired by the test.
    """

    def __init__(self, address: UpstreamTarget, origin: ClientOrigin | None = None) -> None:
        self.address = address
        self.origin = origin
        self.cancelled = False
        self.deferred: Deferred[UpstreamConnection] = Deferred(self._cancel)

    def _cancel(self, deferred: Deferred[UpstreamConnection]) -> None:
        self.cancelled = True

    def succeed(self) -> UpstreamConnection:
        """
        The connection is up and greeted.
        """
        connection = UpstreamConnection(Clock(), 60.0)
        connection.makeConnection(StringTransport())
        connection.dataReceived(b"+OK ready\r\n")
        self.deferred.callback(connection)
        return connection


class Slot:
    """
    An UpstreamSlot with its connect attempts and callbacks recorded.
    """

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.closing = False
        self.events: list[object] = []
        self.slot = UpstreamSlot(
            self.connect,
            session="s1",
            closing=lambda: self.closing,
            attached=lambda c: self.events.append(("attached", c)),
            detached=lambda: self.events.append("detached"),
            lost=lambda reason: self.events.append(("lost", reason.type)),
        )

    def connect(
        self, address: UpstreamTarget, origin: ClientOrigin | None
    ) -> Deferred[UpstreamConnection]:
        attempt = Attempt(address, origin)
        self.attempts.append(attempt)
        return attempt.deferred


def outcome(deferred: Deferred[UpstreamConnection]) -> list[object]:
    """
    What C{deferred} fires with: a connection, or the failure's type.
    """
    seen: list[object] = []
    deferred.addCallbacks(seen.append, lambda f: seen.append(f.type))
    return seen


def aborted(connection: UpstreamConnection) -> bool:
    transport = connection.transport
    # None ruled out first: mypy-zope takes isinstance() of an optional
    # interface for always false (Shoobx/mypy-zope#91) and mypy would check
    # nothing after it.
    assert transport is not None and isinstance(transport, StringTransport)
    return bool(transport.disconnecting) and transport.value() == b""


def test_sharedAttempt() -> None:
    """
    Two callers asking for the same address while it connects share one
    attempt and both get its connection; the connection is attached once.
    """
    s = Slot()
    first, second = outcome(s.slot.ensure(A)), outcome(s.slot.ensure(A))
    assert [a.address for a in s.attempts] == [A]
    assert first == second == []
    connection = s.attempts[0].succeed()
    assert first == second == [connection]
    assert s.events == [("attached", connection)]
    assert s.slot.connection is connection
    assert s.slot.address == A
    assert s.slot.isUsable(A) and not s.slot.isUsable(B)


def test_originPassedToEveryConnect() -> None:
    """
    The client's addresses the session set are given to every connect,
    reconnects to another upstream included (for client_address).
    """
    s = Slot()
    origin = ClientOrigin(IPv4Address("TCP", "203.0.113.7", 51234), None)
    s.slot.origin = origin
    s.slot.ensure(A)
    s.attempts[0].succeed()
    s.slot.ensure(B)
    assert [(a.address, a.origin) for a in s.attempts] == [(A, origin), (B, origin)]


def test_connectedAddressAnsweredAtOnce() -> None:
    """
    Asking again for the address in use fires at once with its
    connection; no new attempt is made.
    """
    s = Slot()
    s.slot.ensure(A)
    connection = s.attempts[0].succeed()
    assert outcome(s.slot.ensure(A)) == [connection]
    assert len(s.attempts) == 1


def test_otherAddressCancelsTheAttempt() -> None:
    """
    Asking for another address while one is connecting cancels that
    attempt (its callers fail) and connects to the new address.
    """
    s = Slot()
    s.closing = True  # keep the cancelled attempt out of the log for this test
    first = outcome(s.slot.ensure(A))
    s.closing = False
    second = outcome(s.slot.ensure(B))
    assert s.attempts[0].cancelled
    assert first == [CancelledError]
    assert [a.address for a in s.attempts] == [A, B]
    connection = s.attempts[1].succeed()
    assert second == [connection]
    assert s.slot.address == B
    assert s.events == [("attached", connection)]


def test_supersededAttemptNotLoggedAsFailure() -> None:
    """
    An attempt cancelled because a login routed elsewhere is not a failure
    of that upstream: no warning says it cannot be used.
    """
    s = Slot()
    with capturedLogs() as events:
        outcome(s.slot.ensure(A))
        outcome(s.slot.ensure(B))
    assert [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn] == []


def test_otherAddressDropsTheConnection() -> None:
    """
    Asking for another address drops the connection in use without a
    word to it (no QUIT) and without calling lost, then connects anew.
    """
    s = Slot()
    s.slot.ensure(A)
    old = s.attempts[0].succeed()
    s.slot.ensure(B)
    assert aborted(old)
    assert s.slot.connection is None
    assert [a.address for a in s.attempts] == [A, B]
    new = s.attempts[1].succeed()
    old.connectionLost(Failure(ConnectionLost()))
    assert s.events == [("attached", old), "detached", ("attached", new)]
    assert s.slot.connection is new


def test_failureLoggedAndErrbacked() -> None:
    """
    A failed attempt fails every caller waiting for it and is logged as a
    warning naming the session, the upstream and the reason; the next
    ensure() tries again.
    """
    s = Slot()
    with capturedLogs() as events:
        first, second = outcome(s.slot.ensure(A)), outcome(s.slot.ensure(A))
        s.attempts[0].deferred.errback(ConnectionRefusedError("nobody home"))
    assert first == second == [ConnectionRefusedError]
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0].startswith("session s1: cannot use upstream tcp:a:110: ")
    assert "nobody home" in warnings[0]
    assert s.events == [] and s.slot.connection is None
    s.slot.ensure(A)
    assert len(s.attempts) == 2


def test_failureWhileClosingNotLogged() -> None:
    """
    An attempt that fails once the session is ending is not worth a
    warning; its callers still fail.
    """
    s = Slot()
    with capturedLogs() as events:
        waiting = outcome(s.slot.ensure(A))
        s.closing = True
        s.attempts[0].deferred.errback(ConnectionRefusedError())
    assert waiting == [ConnectionRefusedError]
    assert [e for e in events if e["log_level"] == LogLevel.warn] == []


def test_connectionAfterClosingIsClosed() -> None:
    """
    A connection that arrives once the session is ending is closed at once
    (no QUIT), never attached, and its callers fail.
    """
    s = Slot()
    waiting = outcome(s.slot.ensure(A))
    s.closing = True
    connection = s.attempts[0].succeed()
    assert aborted(connection)
    assert waiting == [ConnectionAbortedError]
    assert s.events == []
    assert s.slot.connection is None and not s.slot.isUsable(A)


def test_lostDetachesThenReports() -> None:
    """
    An upstream that goes away unasked: the slot lets go of it, calls
    detached, then lost with the reason; the next ensure() reconnects.
    """
    s = Slot()
    s.slot.ensure(A)
    connection = s.attempts[0].succeed()
    connection.connectionLost(Failure(ConnectionLost("gone")))
    assert s.events == [("attached", connection), "detached", ("lost", ConnectionLost)]
    assert s.slot.connection is None
    assert s.slot.address == A  # kept for the logs
    assert not s.slot.isUsable(A)
    s.slot.ensure(A)
    assert len(s.attempts) == 2


def test_drop() -> None:
    """
    drop() closes the connection in use without QUIT and calls detached,
    never lost.
    """
    s = Slot()
    s.slot.ensure(A)
    connection = s.attempts[0].succeed()
    s.slot.drop()
    connection.connectionLost(Failure(ConnectionLost()))
    assert aborted(connection)
    assert s.events == [("attached", connection), "detached"]


def test_closeCancelsAndCallsNothingBack() -> None:
    """
    close() while connecting cancels the attempt; a connection in use is
    closed without QUIT; neither detached nor lost is called, even when
    the connection's end arrives afterwards.
    """
    s = Slot()
    s.slot.ensure(A)
    connection = s.attempts[0].succeed()
    s.closing = True
    s.slot.close()
    connection.connectionLost(Failure(ConnectionLost()))
    assert aborted(connection)
    assert s.events == [("attached", connection)]
    assert s.slot.connection is None

    s = Slot()
    s.closing = True
    waiting = outcome(s.slot.ensure(A))
    s.slot.close()
    assert s.attempts[0].cancelled
    assert waiting == [CancelledError]
    assert s.events == []
