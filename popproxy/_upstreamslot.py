"""
A session's one upstream connection: L{UpstreamSlot} connects on demand
(callers asking for the address being connected share that attempt),
reconnects when a login routes elsewhere, and drops the connection without
QUIT (so the upstream deletes nothing).  It is given the connect function and
the callables to run when a connection is attached, detached or lost; it
never holds the session.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from popproxy._printable import PrintableLogger
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._tls import UpstreamTarget
from popproxy._upstream import UpstreamConnection

#: Connects to an upstream on behalf of the client at an origin.
Connect = Callable[[UpstreamTarget, ClientOrigin | None], Deferred[UpstreamConnection]]


class UpstreamSlot:
    """
    Holds at most one upstream connection, and at most one attempt to make
    one.

    @ivar connection: the connection in use, or C{None}.
    @ivar address: where the last connection in use went (kept after it is
        lost, for the logs), or C{None}.
    @ivar origin: the client's addresses, passed to every connect (set by
        the session once its connection is made).
    """

    log = PrintableLogger()

    def __init__(
        self,
        connect: Connect,
        *,
        session: str,
        closing: Callable[[], bool],
        attached: Callable[[UpstreamConnection], None],
        detached: Callable[[], None],
        lost: Callable[[Failure], None],
        connectFailed: Callable[[Failure], None] | None = None,
    ) -> None:
        """
        @param session: the session id, for the logs.
        @param closing: whether the session is ending (a connection made
            then is closed at once).
        @param attached: called with each new connection in use.
        @param detached: called when the connection in use is dropped or
            lost.
        @param lost: called with the reason after an unrequested loss.
        @param connectFailed: called with the reason when a connection the
            session still wants cannot be made (not one it gave up on).
        """
        self._connect = connect
        self._session = session
        self._closing = closing
        self._attached = attached
        self._detached = detached
        self._lost = lost
        self._connectFailed = connectFailed
        self.connection: UpstreamConnection | None = None
        self.address: UpstreamTarget | None = None
        self.origin: ClientOrigin | None = None
        self._connecting: Deferred[UpstreamConnection] | None = None
        self._connectingAddress: UpstreamTarget | None = None
        self._waiters: list[Deferred[UpstreamConnection]] = []

    def isUsable(self, address: UpstreamTarget) -> bool:
        """
        Whether the connection in use goes to C{address} and is up.
        """
        connection = self.connection
        return connection is not None and bool(connection.connected) and self.address == address

    def ensure(self, address: UpstreamTarget) -> Deferred[UpstreamConnection]:
        """
        The connection to C{address}, connecting (or reconnecting) if need be.
        """
        waiter: Deferred[UpstreamConnection] = Deferred()
        connection = self.connection
        if connection is not None and connection.connected and self.address == address:
            waiter.callback(connection)
            return waiter
        if self._connecting is not None and self._connectingAddress == address:
            self._waiters.append(waiter)
            return waiter
        if self._connecting is not None:
            # Superseded: its failure says nothing about its upstream.
            superseded, self._connecting = self._connecting, None
            self._connectingAddress = None
            superseded.cancel()
        if self.connection is not None:
            self.drop()
        self._waiters.append(waiter)
        self._connectingAddress = address
        connecting = self._connecting = self._connect(address, self.origin)
        connecting.addBoth(self._connected, address)
        return waiter

    def _connected(self, result: UpstreamConnection | Failure, address: UpstreamTarget) -> None:
        current = self._connectingAddress == address
        if current:
            self._connecting = None
            self._connectingAddress = None
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            if current and not self._closing():
                self.log.warn(
                    "session {session}: cannot use upstream {upstream}: {reason}",
                    session=self._session,
                    upstream=str(address),
                    reason=result.getErrorMessage(),
                )
                if self._connectFailed is not None:
                    self._connectFailed(result)
        elif self._closing():
            result.close()
            result = Failure(ConnectionAbortedError("session closed"))
        else:
            self.connection = result
            self.address = address
            result.onLost = self._connectionLost
            self._attached(result)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _connectionLost(self, reason: Failure) -> None:
        self.connection = None
        self._detached()
        self._lost(reason)

    def drop(self) -> None:
        """
        Close the connection in use (no QUIT), without calling C{lost}.
        """
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        self._detached()

    def close(self) -> None:
        """
        The session is ending: cancel a connect in progress and close the
        connection in use (no QUIT), calling nothing back.
        """
        if self._connecting is not None:
            self._connecting.cancel()
        if self.connection is not None:
            self.connection.onLost = None
            self.connection.close()
            self.connection = None
        self._waiters = []
