"""
The Twisted client of spamd: one request and its answer per connection,
without blocking, within a timeout (a check, or a PING to learn whether
spamd is there); and the few words saying why a check failed.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.python.failure import Failure

from ._settings import DEFAULT_TIMEOUT, DEFAULT_USER
from ._spamd import (
    PING_REQUEST,
    SpamdAnswer,
    SpamdAnswerParser,
    SpamdError,
    checkPong,
    spamdRequest,
)


class _SpamdConnection(StreamProtocol):
    """
    One request and its answer on one connection (spamd closes it after
    answering).
    """

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._parser = SpamdAnswerParser()
        self.answered: Deferred[SpamdAnswer] = Deferred(self._cancel)

    def connectionMade(self) -> None:
        self.transport.write(self._request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.answered.called:
            return
        try:
            answer = self._parser.feed(data)
        except SpamdError:
            self.answered.errback()
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if answer is not None:
            self.answered.callback(answer)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.answered.called:
            return
        try:
            answer = self._parser.finish()
        except SpamdError:
            self.answered.errback()
        else:
            self.answered.callback(answer)

    def _cancel(self, answered: Deferred[SpamdAnswer]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class _SpamdPing(StreamProtocol):
    """
    One PING and its PONG on one connection.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.answered: Deferred[None] = Deferred(self._cancel)

    def connectionMade(self) -> None:
        self.transport.write(PING_REQUEST)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.answered.called:
            return
        self._buffer += data
        try:
            complete = checkPong(self._buffer)
        except SpamdError:
            self.answered.errback()
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if complete:
            self.answered.callback(None)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answered.called:
            self.answered.errback(SpamdError("spamd closed the connection without a PONG"))

    def _cancel(self, answered: Deferred[None]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class SpamChecker(Protocol):
    """
    What the filter needs from a spamd client (tests give it a fake).
    """

    def check(self, message: bytes) -> Deferred[SpamdAnswer]: ...

    def ping(self) -> Deferred[None]: ...


class SpamdClient:
    """
    Asks spamd about messages, one connection per message, without
    blocking.

    @param endpoint: where spamd listens (TCP or a UNIX socket).
    @param clock: for the timeout.
    @param timeout: seconds for the whole exchange (connecting included).
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        timeout: float = DEFAULT_TIMEOUT,
        user: str = DEFAULT_USER,
    ) -> None:
        self._endpoint = endpoint
        self._clock = clock
        self._timeout = timeout
        self._user = user

    def check(self, message: bytes) -> Deferred[SpamdAnswer]:
        """
        What spamd says about C{message}.

        @return: a Deferred failing with L{SpamdError} (an error answer),
            L{twisted.internet.defer.TimeoutError} (no answer within the
            timeout; the connection is aborted), or a connection error;
            cancelling it aborts the connection.
        """
        connection = _SpamdConnection(spamdRequest(message, self._user))
        connecting = self._endpoint.connect(_QuietFactory(connection))
        answered: Deferred[SpamdAnswer] = connecting.addCallback(lambda _: connection.answered)
        return answered.addTimeout(self._timeout, self._clock)

    def ping(self) -> Deferred[None]:
        """
        Ask spamd whether it is there.

        @return: a Deferred firing with C{None} on PONG, or failing as
            L{check} does.
        """
        connection = _SpamdPing()
        connecting = self._endpoint.connect(_QuietFactory(connection))
        answered: Deferred[None] = connecting.addCallback(lambda _: connection.answered)
        return answered.addTimeout(self._timeout, self._clock)


class _QuietFactory(Factory):
    """
    Hands out one prepared connection without logging every connection.
    """

    noisy = False

    def __init__(self, connection: StreamProtocol) -> None:
        self._connection = connection

    def buildProtocol(self, addr: object) -> StreamProtocol:
        return self._connection


def failureReason(failure: Exception, timeout: float) -> str:
    if isinstance(failure, DeferredTimeoutError | error.TimeoutError):
        return f"no answer from spamd within {timeout:g} s"
    if isinstance(failure, error.ConnectionRefusedError):
        return "spamd refused the connection"
    if isinstance(failure, SpamdError):
        return str(failure)
    if isinstance(failure, error.ConnectError):
        return f"cannot connect to spamd: {failure}"
    if isinstance(failure, error.ConnectionLost | error.ConnectionDone):
        return "spamd closed the connection"
    return f"{failure.__class__.__name__}: {failure}"
