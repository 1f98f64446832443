"""
The connection to one upstream POP3 server, as seen by one client session.

L{UpstreamConnection} sends command lines and hands each response, as it
arrives, to the L{ResponseHandler} given with the command: the status line,
then the (still dot-stuffed) body in chunks, then the end.  It never
interprets a response beyond its framing; the session decides what reaches
the client.  L{UpstreamConnector} turns an endpoint string into a connected,
greeted L{UpstreamConnection}, with a time limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol as TypingProtocol

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import clientFromString, wrapClientTLS
from twisted.internet.error import (
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy._directsend import sendNow
from popproxy._framing import FramingError, ResponseParser, StatusLine
from popproxy._proxyheaderbuild import ClientOrigin, buildProxyHeader
from popproxy._tls import UpstreamTarget, clientCreator


class UpstreamError(Exception):
    """
    The upstream server cannot be used; C{str()} is a short reason fit for
    a client's C{-ERR} line.

    @cvar code: the RFC 3206 response code the client gets: C{SYS/TEMP}
        when trying again later may help, C{SYS/PERM} when it will not fix
        itself (a certificate that does not verify, no STLS).
    @ivar kind: what went wrong, in one word the metrics count by
        (C{tls}, C{closed}, C{protocol}, C{timeout}, C{greeting}).
    """

    code = "SYS/TEMP"
    kind = "protocol"

    def __init__(self, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        if kind is not None:
            self.kind = kind


class UpstreamPermanentError(UpstreamError):
    """
    The upstream server cannot be used until someone changes something.
    """

    code = "SYS/PERM"


class UpstreamTimeout(UpstreamError):
    """
    The upstream server did not answer in time.
    """

    kind = "timeout"


class UpstreamRefused(UpstreamError):
    """
    The upstream server greeted with C{-ERR}.
    """

    kind = "greeting"


class ResponseHandler(TypingProtocol):
    """
    Receives one upstream response as it arrives.
    """

    def statusReceived(self, status: StatusLine) -> None: ...

    def bodyReceived(self, data: bytes) -> None: ...

    def responseFinished(self) -> None: ...


class _GreetingHandler:
    """
    Fires the connection's C{ready} Deferred when the greeting arrives.
    """

    def __init__(self, connection: UpstreamConnection) -> None:
        self._connection = connection

    def statusReceived(self, status: StatusLine) -> None:
        self._connection.greeting = status

    def bodyReceived(self, data: bytes) -> None:  # pragma: no cover - never multi-line
        pass

    def responseFinished(self) -> None:
        self._connection._greeted()


class _StartTLSHandler:
    """
    Waits for the answer to STLS.
    """

    def __init__(self, connection: UpstreamConnection) -> None:
        self._connection = connection
        self._status: StatusLine | None = None

    def statusReceived(self, status: StatusLine) -> None:
        self._status = status

    def bodyReceived(self, data: bytes) -> None:  # pragma: no cover - never multi-line
        pass

    def responseFinished(self) -> None:
        assert self._status is not None
        self._connection._stlsAnswered(self._status)


def _connectFailure(reason: Failure) -> Failure:
    """
    Why a connection ended before it was ready, as an L{UpstreamError}.
    """
    if reason.check(VerificationError):
        return Failure(
            UpstreamPermanentError(
                "the mail server's certificate does not match its name: " + str(reason.value)[:200],
                "tls",
            )
        )
    if reason.check(SSL.Error):
        detail = str(reason.value)
        if "certificate verify failed" in detail:
            return Failure(
                UpstreamPermanentError("the mail server's certificate is not trusted", "tls")
            )
        return Failure(UpstreamError(f"TLS with the mail server failed: {detail[:200]}", "tls"))
    return Failure(UpstreamError("the mail server closed the connection", "closed"))


@implementer(IHandshakeListener)
class UpstreamConnection(Protocol):
    """
    One connection to an upstream POP3 server.

    @ivar ready: fires with this connection once a positive greeting has
        arrived, fails with L{UpstreamError} otherwise.
    @ivar onLost: called with the reason when the connection ends, unless
        L{close} was called first.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        responseTimeout: float,
        startTLS: object | None = None,
        preface: bytes = b"",
        implicitTLS: object | None = None,
    ) -> None:
        """
        @param startTLS: the TLS client creator to use after STLS.
        @param preface: bytes sent first on the connection, before TLS (a
            PROXY header).
        @param implicitTLS: the TLS client creator to start right after the
            preface (implicit TLS whose endpoint is plain TCP because the
            preface must go before the handshake).
        """
        self._clock = clock
        self._startTLS = startTLS
        self._preface = preface
        self._implicitTLS = implicitTLS
        self._handshaking = False
        self._responseTimeout = responseTimeout
        self._parser = ResponseParser()
        self._handlers: deque[ResponseHandler] = deque()
        self._timer: IDelayedCall | None = None
        self._failure: UpstreamError | None = None
        self._closed = False
        self.greeting: StatusLine | None = None
        self.connected = False
        self.onLost: Callable[[Failure], None] | None = None
        self.ready: Deferred[UpstreamConnection] = Deferred(lambda d: self._abort(None))
        self.bytesReceived = 0

    # Twisted protocol methods

    def connectionMade(self) -> None:
        self.connected = True
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            try:
                setNoDelay(True)
            except OSError:  # not a TCP socket (UNIX socket, in-memory)
                pass
        if self._preface:
            self.transport.write(self._preface)  # type: ignore[union-attr]
        if self._implicitTLS is not None:
            # What was written before goes out in the clear, then the handshake.
            self.transport.startTLS(self._implicitTLS)  # type: ignore[union-attr]
        self._parser.expect(False)
        self._handlers.append(_GreetingHandler(self))
        self._startTimer()

    def dataReceived(self, data: bytes) -> None:
        self.bytesReceived += len(data)
        if self._handlers:
            self._startTimer()
        try:
            events = self._parser.feed(data)
        except FramingError as e:
            self.log.warn("upstream protocol error: {error}", error=str(e))
            self._abort(UpstreamError("the mail server sent an invalid response"))
            return
        for event in events:
            if not self._handlers:  # closed by a handler
                return
            handler = self._handlers[0]
            if isinstance(event, StatusLine):
                handler.statusReceived(event)
            elif event is None:
                self._handlers.popleft()
                # Nothing outstanding: the timer stays (the next command
                # resets it, cheaper than a new one) and ignores idleness.
                handler.responseFinished()
            else:
                handler.bodyReceived(event)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self._stopTimer()
        self._handlers.clear()
        if self._failure is not None:
            reason = Failure(self._failure)
        if not self.ready.called:
            self.ready.errback(reason if reason.check(UpstreamError) else _connectFailure(reason))
            return
        if not self._closed and self.onLost is not None:
            self.onLost(reason)

    # API for the session

    def sendCommand(self, line: bytes, multiLine: bool, handler: ResponseHandler) -> None:
        """
        Send one command line (without CRLF) and route its response to
        C{handler}.

        @param multiLine: a positive response carries a body.  A handler
            with a C{bodyScanner} (L{popproxy._framing.BodyScanner}) takes
            the body through it, in place of C{bodyReceived}.
        """
        self._parser.expect(multiLine, getattr(handler, "bodyScanner", None))
        self._handlers.append(handler)
        self._startTimer()
        sendNow(self.transport, line + b"\r\n")

    @property
    def busy(self) -> bool:
        """
        A response is outstanding.
        """
        return bool(self._handlers)

    def close(self) -> None:
        """
        Drop the connection without another word: no QUIT is sent, so the
        upstream server enters no UPDATE state and deletes nothing.
        """
        self._closed = True
        self._stopTimer()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def pauseReading(self) -> None:
        if self.transport is not None and self.connected:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeReading(self) -> None:
        if self.transport is not None and self.connected:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    # Internals

    def _greeted(self) -> None:
        assert self.greeting is not None
        if self.greeting.ok and self._startTLS is not None:
            self.sendCommand(b"STLS", False, _StartTLSHandler(self))
        elif self.greeting.ok:
            self._stopTimer()
            self.ready.callback(self)
        else:
            text = self.greeting.text.decode("ascii", "replace")[:200]
            self._abort(UpstreamRefused(f"the mail server refused the connection: {text}"))

    def _stlsAnswered(self, status: StatusLine) -> None:
        if not status.ok:
            text = status.text.decode("ascii", "replace")[:200]
            self._abort(
                UpstreamPermanentError(f"the mail server refused STLS: {text}".rstrip(": "), "tls")
            )
            return
        # The handshake starts now; its end is handshakeCompleted().
        self._handshaking = True
        self._startTimer()
        self.transport.startTLS(self._startTLS)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        """
        TLS is up (IHandshakeListener): after STLS the connection is ready.
        """
        if self._handshaking:
            self._handshaking = False
            self._stopTimer()
            self.ready.callback(self)

    def _abort(self, failure: UpstreamError | None) -> None:
        if failure is not None and self._failure is None:
            self._failure = failure
        self._stopTimer()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _startTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._responseTimeout)
        else:
            self._timer = self._clock.callLater(self._responseTimeout, self._timedOut)

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        if not self._handlers and not self._handshaking:
            return  # idle, waiting for the client's next command
        self._abort(UpstreamTimeout("the mail server did not answer in time"))


def failureCode(failure: Failure) -> str:
    """
    The response code for a failed upstream connection: C{SYS/PERM} or
    C{SYS/TEMP}.
    """
    if failure.check(UpstreamError):
        return failure.value.code
    return "SYS/TEMP"


def failureKind(failure: Failure) -> str:
    """
    What kind of failure ended or prevented an upstream connection, in one
    word fit for a metric label: C{refused}, C{dns}, C{timeout}, C{tls},
    C{closed}, C{greeting}, C{protocol} or C{other}.
    """
    if failure.check(UpstreamError):
        return failure.value.kind
    if failure.check(ConnectionRefusedError):
        return "refused"
    if failure.check(DNSLookupError):
        return "dns"
    if failure.check(TimeoutError, CancelledError):
        return "timeout"
    return "other"


def describeFailure(failure: Failure) -> str:
    """
    A short, client-safe reason for a failed upstream connection.
    """
    if failure.check(UpstreamError):
        return str(failure.value)
    if failure.check(ConnectionRefusedError):
        return "the mail server refused the connection"
    if failure.check(DNSLookupError):
        return "the mail server's name does not resolve"
    if failure.check(TimeoutError, CancelledError):
        return "the mail server did not answer in time"
    return "the mail server cannot be reached"


class _QuietFactory(ClientFactory):
    """
    Hands out one prepared connection, without logging each connection.
    """

    noisy = False

    def __init__(self, connection: UpstreamConnection) -> None:
        self._connection = connection

    def buildProtocol(self, addr: object) -> UpstreamConnection:
        return self._connection


class UpstreamConnector:
    """
    Connects to upstream servers named by client endpoint strings, sending
    a PROXY header first where C{client_address} asks for one (XCLIENT is
    L{popproxy._xclient}'s, after the connection is made).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        connectTimeout: float,
        responseTimeout: float,
        endpointFactory: Callable[[str], IStreamClientEndpoint] | None = None,
    ) -> None:
        self._reactor = reactor
        self._connectTimeout = connectTimeout
        self._responseTimeout = responseTimeout
        self._endpointFactory = endpointFactory or (
            lambda description: clientFromString(reactor, description)
        )
        self._endpoints: dict[UpstreamTarget, IStreamClientEndpoint] = {}

    def _endpoint(self, target: UpstreamTarget, tlsBelow: bool) -> IStreamClientEndpoint:
        endpoint = self._endpoints.get(target)
        if endpoint is None:
            endpoint = self._endpointFactory(target.endpoint)
            if tlsBelow:
                endpoint = wrapClientTLS(clientCreator(target.tls), endpoint)  # type: ignore[arg-type]
            self._endpoints[target] = endpoint
        return endpoint

    def connect(
        self, target: UpstreamTarget, origin: ClientOrigin | None = None
    ) -> Deferred[UpstreamConnection]:
        """
        Connect (with TLS as C{target} says), send a PROXY header first if
        C{target} wants one, and wait for a positive greeting (and STLS),
        within the connect timeout.

        @param origin: the client's addresses (C{None}: unknown), for the
            PROXY header.
        """
        mode = target.clientAddress
        preface = b""
        if mode in ("proxy-v1", "proxy-v2"):
            preface = buildProxyHeader(int(mode[-1]), origin or ClientOrigin(None, None))
        implicit = target.tls.mode == "implicit" and not target.endpoint.startswith("tls:")
        # The PROXY header must precede the handshake: then TLS is started
        # by the connection itself, not by an endpoint wrapper.
        endpoint = self._endpoint(target, implicit and not preface)
        connection = UpstreamConnection(
            self._reactor,
            self._responseTimeout,
            startTLS=clientCreator(target.tls) if target.tls.mode == "starttls" else None,
            preface=preface,
            implicitTLS=clientCreator(target.tls) if implicit and preface else None,
        )

        def greeted(protocol: object) -> Deferred[UpstreamConnection]:
            return connection.ready

        connecting: Deferred[UpstreamConnection] = endpoint.connect(
            _QuietFactory(connection)
        ).addCallback(greeted)
        connecting.addTimeout(self._connectTimeout, self._reactor)

        def timedOut(failure: Failure) -> Failure:
            if failure.check(TimeoutError, CancelledError):
                connection.close()
                return Failure(UpstreamTimeout("the mail server did not answer in time"))
            return failure

        connecting.addErrback(timedOut)
        return connecting
