"""
The client side of the proxy: one POP3 session, relayed to its upstream.

L{ClientSession} frames the client's commands strictly (CRLF only, 255
octets), checks each against the RFC 1939 state it is in, answers what it
can itself (syntax errors, CAPA, QUIT before login) and relays the rest, one
command at a time and in order, to the L{UpstreamConnection} chosen by the
L{Router}.  Pipelined commands wait in a bounded queue.  Responses stream
back to the client; a slow client pauses reading from the upstream
(producer/consumer), so no mailbox is ever held in memory.

Mail is never lost: DELE and QUIT reach the upstream only when the client
sends them, and a session that ends any other way drops the upstream
connection without QUIT, so the upstream server deletes nothing.  A
retrieval that fails half-way is cut off without the terminating dot line,
so no client stores a truncated message as complete.

What one filtered RETR or TOP delivers is decided by
L{popproxy._retrievalflow.RetrievalFlow}, which asks the upstream through
L{popproxy._upstreamlink.UpstreamLink}; the session's send step
(C{_sendDelivery}) is the only place that dot-stuffs and writes it.  The
commands that answer from what the upstream said (login steps, CAPA, and
STAT, LIST, DELE, QUIT) are C{async} methods awaiting the same link.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy import __version__
from popproxy._capabilities import UpstreamCapabilities
from popproxy._config import ChainConfig
from popproxy._directsend import sendNow
from popproxy._framing import (
    MAX_COMMAND_LINE,
    CommandFramer,
    CommandLine,
    DotStuffer,
    FramingError,
    StatusLine,
    stuff,
)
from popproxy._loginlines import MAX_SASL_LINE, LoginCommands
from popproxy._loginplan import (
    LoginPlan,
    LoginRefusal,
    NeedCapabilities,
    PendingPass,
    passAsPlain,
    planApop,
    planPass,
    planSasl,
    planUser,
    saslIdentity,
)
from popproxy._loginpolicy import loginsNeedTLS, originOf
from popproxy._mailboxview import MAX_LISTING_OCTETS, MailboxView
from popproxy._printable import PrintableLogger
from popproxy._retrieval import MessageHook, PassThrough
from popproxy._retrievalflow import (
    ChunkSource,
    Continuation,
    Cut,
    Delivery,
    Filtered,
    Relayed,
    RetrievalFlow,
    RetrievalRequest,
    Spool,
    Streamed,
    WholeMessage,
    continueStuffed,
)
from popproxy._routing import NoRoute, Route, Router
from popproxy._sasl import MECHANISMS, Challenge, Credentials, SaslServer, SaslStep
from popproxy._tls import UpstreamTarget
from popproxy._upstream import UpstreamConnection, describeFailure, failureCode
from popproxy._upstreamlink import Collector, UpstreamLink
from popproxy._verdicts import FilterContext

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

#: Commands allowed in each state (RFC 1939); others get -ERR locally.
ALLOWED = {
    AUTHORIZATION: frozenset({"USER", "PASS", "QUIT", "CAPA", "STLS", "AUTH", "APOP"}),
    TRANSACTION: frozenset(
        {"STAT", "LIST", "UIDL", "RETR", "DELE", "NOOP", "RSET", "TOP", "QUIT", "CAPA"}
    ),
    UPDATE: frozenset(),
}
KNOWN = frozenset().union(*ALLOWED.values())

#: Seconds a cut-off client gets to read what was relayed before it.
LINGER = 60.0

#: Pipelined command lines held before the proxy stops reading the client.
MAX_QUEUED = 64

_NUMBER = re.compile(rb"[0-9]{1,9}\Z")
_TIMESTAMP = re.compile(rb"<[!-;=?-~]+>")
_DIGEST = re.compile(rb"[0-9a-fA-F]{32}\Z")

#: Capabilities relayed verbatim from the upstream: they describe the
#: upstream mailbox's policy, which applies through the proxy as well.
_POLICY_CAPABILITIES = (b"LOGIN-DELAY", b"EXPIRE")

_sessionIds = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """
    What every session of one listener shares (read-only).
    """

    router: Router
    connect: Callable[[UpstreamTarget], Deferred[UpstreamConnection]]
    clock: IReactorTime
    hook: MessageHook = PassThrough()
    idleTimeout: float = 600.0
    maxFailedLogins: int = 3
    #: The proxy's certificate: STLS is offered when set.
    serverTLS: object | None = None
    #: The listener speaks TLS from the first byte (port 995 style).
    implicitTLS: bool = False
    #: C{"auto"} (required unless the client is on this host, as
    #: L{popproxy._loginpolicy} decides), C{"always"} or C{"never"}: whether
    #: logins need TLS first.
    requireTLS: str = "auto"
    #: Seconds to hold back the answer to a failed login (slows guessing).
    loginFailureDelay: float = 1.0
    #: How RETR and TOP go through the filter chain: TOP mode, keepalive,
    #: per-session cache, spooling and size limits (the [chain] settings).
    chain: ChainConfig = ChainConfig()
    #: Called when a session has ended and dropped what it held (the
    #: proxy gives freed memory back to the system then).
    sessionClosed: Callable[[], None] | None = None


def _message(text: str) -> bytes:
    return text.encode("ascii")


@implementer(IPushProducer)
class _UpstreamThrottle:
    """
    Registered as the producer on the client's transport: when the client
    cannot take more, stop reading from the upstream.
    """

    def __init__(self, upstream: UpstreamConnection) -> None:
        self._upstream = upstream

    def pauseProducing(self) -> None:
        self._upstream.pauseReading()

    def resumeProducing(self) -> None:
        self._upstream.resumeReading()

    def stopProducing(self) -> None:
        self._upstream.close()


class _Relay:
    """
    Relays one upstream response to the client as it arrives.

    @ivar onStatus: called with the status line before it is relayed.
    """

    def __init__(
        self,
        session: ClientSession,
        onStatus: Callable[[StatusLine], None] | None = None,
    ) -> None:
        self._session = session
        self._onStatus = onStatus
        self._statusLine = b""
        self.inBody = False

    def statusReceived(self, status: StatusLine) -> None:
        if self._onStatus is not None:
            self._onStatus(status)
        # Held back to go out with the body's first piece: one send(), and
        # one segment for the client, instead of two.
        self._statusLine = status.line + b"\r\n"

    def bodyReceived(self, data: bytes) -> None:
        if self._statusLine:
            data = self._statusLine + data
            self._statusLine = b""
        self.inBody = True  # from now on the client has part of a response
        self._session._write(data)

    def responseFinished(self) -> None:
        if self._statusLine:
            self._session._write(self._statusLine)
            self._statusLine = b""
        self.inBody = False
        self._session._commandDone()


class _UidRecorder(_Relay):
    """
    Relays a C{UIDL} response verbatim and notes the UIDs in it (message
    numbers and UIDs do not change during a POP3 session).
    """

    def __init__(self, session: ClientSession, mailbox: MailboxView[Filtered]) -> None:
        super().__init__(session, onStatus=self._statusSeen)
        self._mailbox = mailbox
        self._body: list[bytes] = []
        self._bodySize = 0

    def _statusSeen(self, status: StatusLine) -> None:
        # "+OK 3 uid" (UIDL n) names one message.
        if status.ok:
            self._mailbox.noteUidAnswer(status.line)

    def bodyReceived(self, data: bytes) -> None:
        super().bodyReceived(data)
        self._bodySize += len(data)
        if self._bodySize <= MAX_LISTING_OCTETS:
            self._body.append(data)

    def responseFinished(self) -> None:
        if self._bodySize <= MAX_LISTING_OCTETS:
            self._mailbox.noteUidListing(b"".join(self._body))
        self._body = []
        super().responseFinished()


class ClientSession(Protocol, TimeoutMixin):
    """
    One client's POP3 session.
    """

    #: Every text field of its events is escaped: user names and AUTH
    #: identities come from the client.
    log = PrintableLogger()

    def __init__(self, settings: SessionSettings) -> None:
        self._settings = settings
        self.callLater = settings.clock.callLater  # type: ignore[method-assign,assignment]
        self._framer = CommandFramer()
        self._queue: deque[CommandLine] = deque()
        self._pumping = False
        self._busy = False
        self._readingPaused = False
        self._closing = False
        self.state = AUTHORIZATION
        self.secure = False
        self._tlsRequired = False
        self.sessionId = f"{next(_sessionIds):x}"
        self.client = "?"
        self.user: str | None = None
        self._pendingLogin: PendingPass | None = None
        self._failedLogins = 0
        self._upstream: UpstreamConnection | None = None
        self._upstreamAddress: UpstreamTarget | None = None
        self._connecting: Deferred[UpstreamConnection] | None = None
        self._connectingAddress: UpstreamTarget | None = None
        self._waiters: list[Deferred[UpstreamConnection]] = []
        self._handler: _Relay | Spool | Collector | None = None
        self._link = UpstreamLink(self._relay)
        self._throttled = False
        self._sasl = SaslServer()
        self._mailbox: MailboxView[Filtered] = MailboxView(settings.chain.cacheBytes)
        self._apopTimestamp: bytes | None = None
        self._greeted = False
        self._ending = "client closed the connection"
        self.commands = 0
        self.bytesIn = 0
        self.bytesOut = 0

    # Twisted protocol methods

    def connectionMade(self) -> None:
        assert self.transport is not None
        peer = self.transport.getPeer()
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if host is None:
            self.client = str(peer)
        else:
            self.client = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        origin = originOf(self.transport)
        balancerTLS = origin.balancerTLS
        # TLS the balancer terminated is TLS already: logins need no STLS,
        # and STLS is neither offered nor accepted, as on 995-style listeners.
        self.secure = self._settings.implicitTLS or balancerTLS is not None
        self._tlsRequired = loginsNeedTLS(
            self._settings.requireTLS, self._settings.serverTLS is not None, origin
        )
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            try:
                setNoDelay(True)
            except OSError:
                pass
        self.log.info(
            "session {session} opened by {client}", session=self.sessionId, client=self.client
        )
        if balancerTLS is not None:
            self.log.info(
                "session {session}: TLS terminated by the balancer ({version})",
                session=self.sessionId,
                version=balancerTLS.version or "version not sent",
            )
        self.setTimeout(self._settings.idleTimeout)
        router = self._settings.router
        if router.static and router.default is not None:
            # One upstream for everybody: connect now and greet once it has
            # greeted, with its APOP timestamp, so that a client's APOP
            # digest relays unchanged and CAPA tells the truth before login.
            self._busy = True
            self._ensureUpstream(router.default).addBoth(self._greet)
        else:
            self._greet(None)

    def _greet(self, upstream: UpstreamConnection | Failure | None) -> None:
        if self._closing:
            return
        line = b"+OK popproxy ready"
        if isinstance(upstream, UpstreamConnection) and upstream.greeting is not None:
            found = _TIMESTAMP.search(upstream.greeting.line)
            if found is not None:
                self._apopTimestamp = found.group()
                line += b" " + self._apopTimestamp
        self._greeted = True
        self._busy = False
        self._reply(line)
        self._pump()

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        if self._closing:
            return
        if not self._busy:
            self.resetTimeout()
        try:
            lines = self._framer.feed(data)
        except FramingError:
            self._queue.clear()
            self._end("client sent an overlong line", b"-ERR line too long, closing\r\n")
            return
        self._queue.extend(lines)
        if len(self._queue) > MAX_QUEUED and not self._readingPaused:
            self._readingPaused = True
            assert self.transport is not None
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._pump()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.setTimeout(None)
        self._closing = True
        self._queue.clear()
        if self._connecting is not None:
            self._connecting.cancel()
        if self._upstream is not None:
            self._upstream.onLost = None
            self._upstream.close()
            self._upstream = None
        # Drop what the session holds, so a closed session frees its
        # filtered messages now rather than when the cycle collector runs.
        self._mailbox.clear()
        self._handler = None
        self._waiters = []
        self.log.info(
            "session {session} closed: {ending}; client={client} user={user} "
            "upstream={upstream} commands={commands} bytesIn={bytesIn} bytesOut={bytesOut}",
            session=self.sessionId,
            ending=self._ending,
            client=self.client,
            user=self.user or (self._pendingLogin.login if self._pendingLogin else None),
            upstream=str(self._upstreamAddress) if self._upstreamAddress else None,
            commands=self.commands,
            bytesIn=self.bytesIn,
            bytesOut=self.bytesOut,
        )
        if self._settings.sessionClosed is not None:
            self._settings.sessionClosed()

    def timeoutConnection(self) -> None:
        if self._busy and not self._closing:
            # Waiting for the upstream or the chain, which have their own
            # time limits: the client is not idle.
            self.setTimeout(self.timeOut)
            return
        self._end("idle timeout (autologout)", b"-ERR [SYS/PERM] autologout: idle for too long\r\n")

    # Command dispatch

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._queue and not self._busy and not self._closing:
                self._dispatch(self._queue.popleft())
        finally:
            self._pumping = False
        if self._readingPaused and len(self._queue) < MAX_QUEUED // 2 and not self._closing:
            self._readingPaused = False
            assert self.transport is not None
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def _dispatch(self, command: CommandLine) -> None:
        if self._sasl.waiting:
            self._framer.maxLine = MAX_COMMAND_LINE
            self._answerSasl(
                self._sasl.tooLong() if command.tooLong else self._sasl.feed(command.line)
            )
            return
        self.commands += 1
        if command.tooLong:
            self._reply(b"-ERR command line too long")
            return
        line = command.line
        if b"\r" in line or b"\n" in line or b"\0" in line:
            self._reply(b"-ERR malformed command")
            return
        keyword, _, arguments = line.partition(b" ")
        name = keyword.decode("ascii", "replace").upper()
        if name not in KNOWN or not keyword.isalpha():
            self._reply(b"-ERR unknown command")
            return
        if name not in ALLOWED[self.state]:
            self._reply(_message(f"-ERR {name} is not valid in the {self.state} state"))
            return
        getattr(self, f"do_{name}")(arguments)

    def _reply(self, line: bytes) -> None:
        self._write(line + b"\r\n")

    def _write(self, data: bytes) -> None:
        self.bytesOut += len(data)
        sendNow(self.transport, data)

    def _commandDone(self) -> None:
        self._handler = None
        self._busy = False
        if self.state == UPDATE:
            return
        if not self._closing:
            self.setTimeout(self._settings.idleTimeout)
        self._pump()

    def _relay(
        self,
        line: bytes,
        multiLine: bool = False,
        handler: _Relay | Spool | Collector | None = None,
    ) -> None:
        """
        Send C{line} upstream and relay the response to the client.
        """
        upstream = self._upstream
        if upstream is None or not upstream.connected:
            self._reply(b"-ERR [SYS/TEMP] lost the connection to the mail server")
            self._end("upstream connection lost")
            return
        # The idle timer keeps running (re-armed while busy, see
        # timeoutConnection): cheaper than a new timer for every command.
        self._busy = True
        self._handler = handler or _Relay(self)
        upstream.sendCommand(line, multiLine, self._handler)

    def _run(self, exchange: Coroutine[Deferred[object], object, None]) -> None:
        """
        Run one command's exchange with the upstream (an C{async} method
        that awaits L{UpstreamLink} requests) up to its first request now,
        and on as each answer arrives.
        """
        Deferred.fromCoroutine(exchange).addErrback(self._exchangeBroke)

    def _exchangeBroke(self, failure: Failure) -> None:
        self.log.failure("session {session}: command failed", failure, session=self.sessionId)
        self._end("command failed", b"-ERR [SYS/TEMP] the command failed\r\n")

    def _end(self, why: str, lastWords: bytes = b"") -> None:
        """
        End the session: say C{lastWords}, close the client connection, drop
        the upstream connection without QUIT.
        """
        if self._closing:
            return
        self._closing = True
        self._ending = why
        self._queue.clear()
        if lastWords:
            self._write(lastWords)
        if self._upstream is not None:
            self._upstream.close()
        if self.transport is not None:
            self.transport.loseConnection()

    # Upstream connection management

    def _ensureUpstream(self, address: UpstreamTarget) -> Deferred[UpstreamConnection]:
        """
        The connection to C{address}, connecting (or reconnecting) if need be.
        """
        waiter: Deferred[UpstreamConnection] = Deferred()
        upstream = self._upstream
        if upstream is not None and upstream.connected and self._upstreamAddress == address:
            waiter.callback(upstream)
            return waiter
        if self._connecting is not None and self._connectingAddress == address:
            self._waiters.append(waiter)
            return waiter
        if self._connecting is not None:
            self._connecting.cancel()
        if upstream is not None:
            self._dropUpstream()
        self._waiters.append(waiter)
        self._connectingAddress = address
        connecting = self._connecting = self._settings.connect(address)
        connecting.addBoth(self._connected, address)
        return waiter

    def _connected(self, result: UpstreamConnection | Failure, address: UpstreamTarget) -> None:
        if self._connectingAddress == address:
            self._connecting = None
            self._connectingAddress = None
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            if not self._closing:
                self.log.warn(
                    "session {session}: cannot use upstream {upstream}: {reason}",
                    session=self.sessionId,
                    upstream=str(address),
                    reason=result.getErrorMessage(),
                )
        elif self._closing:
            result.close()
            result = Failure(ConnectionAbortedError("session closed"))
        else:
            self._upstream = result
            self._upstreamAddress = address
            result.onLost = self._upstreamLost
            assert self.transport is not None
            self.transport.registerProducer(_UpstreamThrottle(result), True)  # type: ignore[attr-defined]
            self._throttled = True
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _unthrottle(self) -> None:
        if self._throttled and self.transport is not None:
            self._throttled = False
            self.transport.unregisterProducer()  # type: ignore[attr-defined]

    def _dropUpstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None
        self._unthrottle()

    def _upstreamLost(self, reason: Failure) -> None:
        self._upstream = None
        self._unthrottle()
        if self._closing:
            return
        why = describeFailure(reason)
        self.log.warn(
            "session {session}: upstream {upstream} lost: {reason}",
            session=self.sessionId,
            upstream=str(self._upstreamAddress),
            reason=reason.getErrorMessage(),
        )
        handler = self._handler
        if handler is not None and handler.inBody:
            # Half a response has reached the client: end the connection
            # without the terminating line, so it cannot pass for complete.
            # What was relayed is still flushed; a client that stopped
            # reading is cut off after a while.
            self._closing = True
            self._ending = f"upstream lost mid-response: {why}"
            assert self.transport is not None
            self.transport.loseConnection()
            transport = self.transport
            self._settings.clock.callLater(LINGER, self._abortIfConnected, transport)
        elif self._busy:
            self._end(f"upstream lost: {why}", _message(f"-ERR [SYS/TEMP] {why}\r\n"))
        elif self.state == TRANSACTION:
            self._end(f"upstream lost: {why}")
        # Before login a new USER reconnects.

    def _abortIfConnected(self, transport: object) -> None:
        if self.connected:
            transport.abortConnection()  # type: ignore[attr-defined]

    def _withUpstream(
        self,
        address: UpstreamTarget,
        then: Callable[[UpstreamConnection], None],
        otherwise: Callable[[], None] | None = None,
    ) -> None:
        """
        Run C{then} once connected to C{address}.  On failure run
        C{otherwise} (which answers the client), or tell the client why.
        """
        self._busy = True  # the idle timer re-arms meanwhile (timeoutConnection)
        self._ensureUpstream(address).addCallbacks(
            self._upstreamReady,
            self._upstreamFailed,
            callbackArgs=(then,),
            errbackArgs=(otherwise,),
        )

    def _upstreamReady(
        self, upstream: UpstreamConnection, then: Callable[[UpstreamConnection], None]
    ) -> None:
        self._busy = False
        if not self._closing:
            then(upstream)
            self._pump()

    def _upstreamFailed(self, failure: Failure, otherwise: Callable[[], None] | None) -> None:
        self._busy = False
        if self._closing:
            return
        if otherwise is not None:
            otherwise()
        else:
            code = failureCode(failure)
            self._reply(_message(f"-ERR [{code}] {describeFailure(failure)}"))
        self._commandDone()

    # AUTHORIZATION state

    def do_CAPA(self, arguments: bytes) -> None:
        if arguments:
            self._reply(b"-ERR CAPA takes no arguments")
            return
        address = self._upstreamAddress
        if self.state == AUTHORIZATION and self._settings.router.static:
            address = self._settings.router.default
        if address is None:
            self._sendCapabilities(None)
            return

        # An upstream that cannot be reached still gets the client an answer:
        # the proxy's own list.
        self._withUpstream(
            address, self._relayCapabilities, functools.partial(self._sendCapabilities, None)
        )

    def _relayCapabilities(self, upstream: UpstreamConnection) -> None:
        self._run(self._capabilities())

    async def _capabilities(self) -> None:
        self._sendCapabilities(await self._upstreamCapabilities())
        self._commandDone()

    async def _upstreamCapabilities(self) -> UpstreamCapabilities:
        status, body = await self._link.longCommand(b"CAPA")
        return UpstreamCapabilities.fromResponse(status, body)

    def _sendCapabilities(self, upstream: UpstreamCapabilities | None) -> None:
        """
        Send the proxy's own capability list.

        @param upstream: the upstream's capabilities, or C{None} when the
            upstream is not known yet
            (then TOP and UIDL, which nearly every server has, are
            announced; the list after login is exact).
        """
        lines = []
        if upstream is None:
            lines += [b"TOP", b"UIDL"]
        else:
            lines += [name for name in (b"TOP", b"UIDL") if name in upstream]
            policy = (upstream.line(name) for name in _POLICY_CAPABILITIES)
            lines += [line for line in policy if line is not None]
        loginsAllowed = self.secure or not self._tlsRequired
        if loginsAllowed:
            lines.append(b"USER")
            lines.append(b"SASL " + b" ".join(MECHANISMS))
        if self._settings.serverTLS is not None and not self.secure and self.state == AUTHORIZATION:
            lines.append(b"STLS")
        lines += [b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE"]
        lines.append(_message(f"IMPLEMENTATION popproxy-{__version__}"))
        self._write(
            b"+OK capability list follows\r\n"
            + b"".join(line + b"\r\n" for line in lines)
            + b".\r\n"
        )

    def do_STLS(self, arguments: bytes) -> None:
        if arguments:
            self._reply(b"-ERR STLS takes no arguments")
            return
        if self.secure:
            self._reply(b"-ERR TLS is already active")
            return
        creator = self._settings.serverTLS
        if creator is None:
            self._reply(b"-ERR STLS is not available here")
            return
        self._reply(b"+OK begin TLS negotiation")
        # RFC 2595 section 4: forget what the client said before TLS.  The
        # commands it pipelined behind STLS arrived in clear text and may
        # have been injected by a man in the middle: they are discarded,
        # never executed once TLS is up (the CVE-2011-0411 class).
        self._queue.clear()
        self._framer.reset()
        self._pendingLogin = None
        self.secure = True
        assert self.transport is not None
        self.transport.startTLS(creator)  # type: ignore[attr-defined]
        self.log.info("session {session}: TLS started (STLS)", session=self.sessionId)

    def _refuseWithoutTLS(self) -> bool:
        """
        Refuse a login command before TLS when the policy requires TLS.
        """
        if self._tlsRequired and not self.secure:
            self._reply(b"-ERR [AUTH] TLS is required first: use STLS")
            return True
        return False

    def _routeFor(self, login: str) -> Route | None:
        """
        The route of C{login}, or C{None} (and -ERR sent) if there is none.
        """
        try:
            return self._settings.router.route(login)
        except NoRoute:
            self._reply(b"-ERR [AUTH] no mail server is configured for that user")
            return None

    def do_USER(self, arguments: bytes) -> None:
        if self._refuseWithoutTLS():
            return
        if not arguments or arguments.startswith(b" "):
            self._reply(b"-ERR USER needs a name")
            return
        login = arguments.decode("utf-8", "surrogateescape")
        self._pendingLogin = None
        route = self._routeFor(login)
        if route is None:
            return
        user = planUser(route)
        if isinstance(user, LoginRefusal):
            self._refuseLogin(login, user)
            return
        self._withUpstream(route.upstream, functools.partial(self._sendUser, login, route, user))

    def _sendUser(
        self, login: str, route: Route, user: LoginCommands, upstream: UpstreamConnection
    ) -> None:
        self._run(self._user(login, route, user.lines[0]))

    async def _user(self, login: str, route: Route, line: bytes) -> None:
        status = await self._link.shortCommand(line)
        if status.ok:
            self._pendingLogin = PendingPass(login, route)
            self._reply(status.line)
        # An upstream may offer SASL only (no USER in its CAPA): then PASS
        # can still log in, with AUTH PLAIN.
        elif passAsPlain(await self._upstreamCapabilities()):
            # The upstream refused USER and offers only SASL PLAIN: PASS
            # logs in with AUTH PLAIN instead (RFC 5034).
            self._pendingLogin = PendingPass(login, route, asPlain=True)
            self._reply(b"+OK send PASS (the mail server takes it as AUTH PLAIN)")
        else:
            self._reply(status.line)
        self._commandDone()

    def do_PASS(self, arguments: bytes) -> None:
        # RFC 1939: the whole rest of the line is the password, spaces too.
        if self._refuseWithoutTLS():
            return
        if self._pendingLogin is None:
            self._reply(b"-ERR send USER first")
            return
        pending, self._pendingLogin = self._pendingLogin, None
        self._followPlan(pending.login, pending.route, planPass(pending, arguments))

    def _followPlan(self, login: str, route: Route, plan: LoginPlan) -> None:
        """
        Send a planned login upstream, or refuse it.
        """
        if isinstance(plan, LoginRefusal):
            self._refuseLogin(login, plan)
        elif isinstance(plan, LoginCommands):
            self._run(self._logIn(login, route, plan.lines))
        else:
            raise AssertionError(f"a login plan still needs capabilities: {plan!r}")

    async def _logIn(self, login: str, route: Route, lines: tuple[bytes, ...]) -> None:
        """
        Send login lines upstream in turn, each after the previous one was
        accepted (C{+OK} or a SASL continuation); the last answer, or the
        first refusal, decides and is relayed to the client.

        @param lines: of a L{LoginCommands} made by L{popproxy._loginlines},
            which refuses values that would not stay one value of one line.
        """
        for line in lines:
            status = await self._link.shortCommand(line)
            if not (status.ok or status.continuation):
                break
        self._loginAnswered(status, login, route)

    def _loginAnswered(self, status: StatusLine, login: str, route: Route) -> None:
        if status.ok:
            self.state = TRANSACTION
            self.user = login
            self.log.info(
                "session {session}: {user} logged in at {upstream}",
                session=self.sessionId,
                user=login,
                upstream=str(route.upstream),
            )
            self._reply(status.line)
            self._commandDone()
            return
        if status.continuation:
            # The upstream wants more SASL steps than PLAIN has: give up.
            status = StatusLine(b"-ERR [AUTH] the mail server's login failed")
            self._dropUpstream()
        self._loginFailed(status, login)

    def _refuseLogin(self, login: str, refusal: LoginRefusal) -> None:
        """
        A login cannot go upstream (see L{popproxy._loginplan}): refuse it,
        with nothing of it sent; a value the proxy cannot send counts as a
        failed login.
        """
        if not refusal.failedLogin:
            self._reply(refusal.line)
            self._commandDone()
            return
        self.log.warn(
            "session {session}: login values refused for {user}: {reason}",
            session=self.sessionId,
            user=login,
            reason=refusal.reason,
        )
        self._busy = True  # nothing else is answered until the refusal is
        self._loginFailed(StatusLine(refusal.line), login)

    def _loginFailed(self, status: StatusLine, login: str) -> None:
        """
        Count a failed login and relay C{status} after the failure delay;
        hang up once there were too many.
        """
        self._failedLogins += 1
        self.log.info(
            "session {session}: login failed for {user}", session=self.sessionId, user=login
        )
        if self._settings.loginFailureDelay > 0:
            self._settings.clock.callLater(
                self._settings.loginFailureDelay, self._relayLoginFailure, status
            )
        else:
            self._relayLoginFailure(status)

    def _relayLoginFailure(self, status: StatusLine) -> None:
        if self._closing:
            return
        self._reply(status.line)
        # Hang up on a guesser once the reason has been relayed.
        if self._failedLogins >= self._settings.maxFailedLogins:
            self._busy = False
            self._end(f"{self._failedLogins} failed logins")
        else:
            self._commandDone()

    def do_AUTH(self, arguments: bytes) -> None:
        if not arguments:
            self._write(b"+OK\r\n" + b"".join(m + b"\r\n" for m in MECHANISMS) + b".\r\n")
            return
        if self._refuseWithoutTLS():
            return
        self._answerSasl(self._sasl.start(arguments))

    def _answerSasl(self, step: SaslStep) -> None:
        """
        Answer the client as the SASL exchange says: a challenge (its
        response may be a longer line), a refusal, or log in.
        """
        if isinstance(step, Credentials):
            self._authenticate(step)
            return
        if isinstance(step, Challenge):
            self._framer.maxLine = MAX_SASL_LINE
        self._reply(step.line)

    def _authenticate(self, credentials: Credentials) -> None:
        """
        Log in upstream with SASL PLAIN if it offers it, else USER/PASS.
        The authorization identity, if given, else the authentication
        identity, chooses the route.
        """
        identity = saslIdentity(credentials)
        route = self._routeFor(identity)
        if route is None:
            return
        plan = planSasl(route, credentials, None)
        if isinstance(plan, NeedCapabilities):
            ask = functools.partial(self._askCapabilities, identity, route, credentials)
            self._withUpstream(route.upstream, ask)
        else:
            self._followPlan(identity, route, plan)

    def _askCapabilities(
        self, identity: str, route: Route, credentials: Credentials, upstream: UpstreamConnection
    ) -> None:
        self._run(self._saslLogin(identity, route, credentials))

    async def _saslLogin(self, identity: str, route: Route, credentials: Credentials) -> None:
        capabilities = await self._upstreamCapabilities()
        self._followPlan(identity, route, planSasl(route, credentials, capabilities))

    def do_APOP(self, arguments: bytes) -> None:
        if self._refuseWithoutTLS():
            return
        if self._apopTimestamp is None:
            self._reply(b"-ERR APOP is not available here: use USER/PASS or AUTH")
            return
        name, _, digest = arguments.rpartition(b" ")
        if not name or not _DIGEST.match(digest):
            self._reply(b"-ERR APOP needs a name and an MD5 digest")
            return
        login = name.decode("utf-8", "surrogateescape")
        route = self._routeFor(login)
        if route is None:
            return
        if not self._showedGreetingOf(route):
            # The digest covers the timestamp of the connection we showed.
            self._reply(b"-ERR [SYS/TEMP] the mail server connection was reset; reconnect")
            return
        self._followPlan(login, route, planApop(route, digest))

    def _showedGreetingOf(self, route: Route) -> bool:
        """
        Whether the connection to C{route}'s upstream is up and is the one
        whose APOP timestamp the client was shown.
        """
        upstream = self._upstream
        greeting = upstream.greeting if upstream is not None else None
        return (
            upstream is not None
            and bool(upstream.connected)
            and route.upstream == self._upstreamAddress
            and greeting is not None
            and self._apopTimestamp is not None
            and self._apopTimestamp in greeting.line
        )

    def do_QUIT(self, arguments: bytes) -> None:
        if arguments:
            self._reply(b"-ERR QUIT takes no arguments")
            return
        if self.state == AUTHORIZATION:
            self._reply(b"+OK popproxy signing off")
            self._end("client quit")
            return
        # TRANSACTION: the upstream enters its UPDATE state and deletes what
        # the client marked with DELE; its answer says whether that worked.
        self.state = UPDATE
        self._queue.clear()
        self._run(self._quit())

    async def _quit(self) -> None:
        status = await self._link.shortCommand(b"QUIT")
        self._ending = "client quit" if status.ok else "client quit; upstream update failed"
        self._reply(status.line)
        self._busy = False
        self._closing = True
        self._dropUpstream()
        assert self.transport is not None
        self.transport.loseConnection()

    # TRANSACTION state

    def _numbers(self, arguments: bytes, minimum: int, maximum: int) -> list[int] | None:
        """
        Parse space-separated decimal arguments; reply -ERR and return
        C{None} if they are malformed.
        """
        parts = arguments.split(b" ") if arguments else []
        if not minimum <= len(parts) <= maximum or not all(_NUMBER.match(p) for p in parts):
            self._reply(b"-ERR invalid arguments")
            return None
        return [int(part) for part in parts]

    def _messageNumbers(self, arguments: bytes, minimum: int, maximum: int) -> list[int] | None:
        numbers = self._numbers(arguments, minimum, maximum)
        if numbers and numbers[0] == 0:
            self._reply(b"-ERR no such message")
            return None
        return numbers

    def do_STAT(self, arguments: bytes) -> None:
        if self._numbers(arguments, 0, 0) is None:
            return
        if self._mailbox.rewritesListings:
            self._run(self._stat())
        else:
            self._relay(b"STAT")

    async def _stat(self) -> None:
        status = await self._link.shortCommand(b"STAT")
        self._reply(self._mailbox.rewriteStat(status.line) if status.ok else status.line)
        self._commandDone()

    def do_NOOP(self, arguments: bytes) -> None:
        if self._numbers(arguments, 0, 0) is not None:
            self._relay(b"NOOP")

    def do_RSET(self, arguments: bytes) -> None:
        if self._numbers(arguments, 0, 0) is not None:
            self._mailbox.reset()
            self._relay(b"RSET")

    def do_LIST(self, arguments: bytes) -> None:
        numbers = self._messageNumbers(arguments, 0, 1)
        if numbers is None:
            return
        if not self._mailbox.rewritesListings:
            self._relay(b"LIST %d" % numbers[0] if numbers else b"LIST", not numbers)
        elif numbers:
            # Report the size RETR delivers for messages the chain changed.
            self._run(self._listLine(numbers[0]))
        else:
            self._run(self._listing())

    async def _listLine(self, index: int) -> None:
        status = await self._link.shortCommand(b"LIST %d" % index)
        self._reply(self._mailbox.rewriteListLine(status.line) if status.ok else status.line)
        self._commandDone()

    async def _listing(self) -> None:
        status, body = await self._link.longCommand(b"LIST")
        if status.ok:
            listing = self._mailbox.rewriteListing(body)
            self._write(status.line + b"\r\n" + listing + b".\r\n")
        else:
            self._reply(status.line)
        self._commandDone()

    def do_UIDL(self, arguments: bytes) -> None:
        numbers = self._messageNumbers(arguments, 0, 1)
        if numbers is None:
            return
        line = b"UIDL %d" % numbers[0] if numbers else b"UIDL"
        # Most clients list UIDs before they retrieve: remember them, and
        # the chain's context needs no "UIDL n" per message.
        handler = _UidRecorder(self, self._mailbox) if self._settings.hook.active else None
        self._relay(line, not numbers, handler)

    def do_DELE(self, arguments: bytes) -> None:
        numbers = self._messageNumbers(arguments, 1, 1)
        if numbers is not None:
            self._run(self._delete(numbers[0]))

    async def _delete(self, index: int) -> None:
        status = await self._link.shortCommand(b"DELE %d" % index)
        if status.ok:
            self._mailbox.markDeleted(index)
        self._reply(status.line)
        self._commandDone()

    def do_RETR(self, arguments: bytes) -> None:
        numbers = self._messageNumbers(arguments, 1, 1)
        if numbers is not None:
            self._retrieve(b"RETR %d" % numbers[0], "RETR", numbers[0], None)

    def do_TOP(self, arguments: bytes) -> None:
        numbers = self._messageNumbers(arguments, 2, 2)
        if numbers is not None:
            index, lines = numbers
            self._retrieve(b"TOP %d %d" % (index, lines), "TOP", index, lines)

    def _retrieve(self, line: bytes, command: str, index: int, lines: int | None) -> None:
        if not self._settings.hook.active:
            self._relay(line, multiLine=True)
            return
        self._busy = True
        flow = RetrievalFlow(
            RetrievalRequest(command, index, lines, self._contextFor(command, index, lines)),
            hook=self._settings.hook,
            mailbox=self._mailbox,
            chain=self._settings.chain,
            upstream=self._link,
            write=self._write,
            clock=self._settings.clock,
            closing=self._isClosing,
        )
        retrieving = Deferred.fromCoroutine(flow.run())
        retrieving.addCallbacks(self._sendDelivery, self._retrievalBroke)

    def _contextFor(self, command: str, index: int, lines: int | None) -> FilterContext:
        return FilterContext(
            command=command,
            index=index,
            lines=lines,
            user=self.user or "",
            client=self.client,
            upstream=str(self._upstreamAddress or ""),
            session=self.sessionId,
        )

    def _isClosing(self) -> bool:
        return self._closing

    def _sendDelivery(self, delivery: Delivery | None) -> None:
        """
        The send step: the only place a retrieval's answer is dot-stuffed
        and written.
        """
        if delivery is None or self._closing:
            return
        if isinstance(delivery, Streamed):
            self._write(delivery.status + b"\r\n")
            self._send(delivery.source, delivery.prefix)
            return
        if isinstance(delivery, Cut):
            self._cut(delivery.reason)
            return
        if isinstance(delivery, Relayed):
            self._write(delivery.status + b"\r\n" + delivery.wire)
        elif isinstance(delivery, WholeMessage):
            self._write(delivery.status + b"\r\n" + stuff(delivery.message))
        elif isinstance(delivery, Continuation):
            self._write(continueStuffed(delivery.rest))
        else:
            self._reply(delivery.line)
        self._commandDone()

    def _cut(self, reason: str) -> None:
        self._closing = True
        self._ending = f"filter failed during keepalive: {reason}"
        self._dropUpstream()
        assert self.transport is not None
        self.transport.loseConnection()

    def _retrievalBroke(self, failure: Failure) -> None:
        self.log.failure("session {session}: retrieval failed", failure, session=self.sessionId)
        self._end("retrieval failed", b"-ERR [SYS/TEMP] the message could not be retrieved\r\n")

    def _send(self, source: ChunkSource | Spool, prefix: bytes) -> None:
        """
        Stream a big message to the client, dot-stuffed chunk by chunk, as
        fast as the client reads (a pull producer on its transport).
        """
        self._busy = True
        self._unthrottle()
        sender = _Sender(self, source, prefix)
        assert self.transport is not None
        self.transport.registerProducer(sender, False)  # type: ignore[attr-defined]

    def _sent(self) -> None:
        assert self.transport is not None
        self.transport.unregisterProducer()  # type: ignore[attr-defined]
        if self._upstream is not None and not self._closing:
            self.transport.registerProducer(_UpstreamThrottle(self._upstream), True)  # type: ignore[attr-defined]
            self._throttled = True
        self._commandDone()


@implementer(IPullProducer)
class _Sender:
    """
    Streams a message to the client, dot-stuffed on the way, one chunk each
    time the transport asks for more.
    """

    def __init__(self, session: ClientSession, source: ChunkSource | Spool, prefix: bytes):
        self._session = session
        self._source = source
        self._chunks = source.chunks()
        self._stuffer = DotStuffer()
        self._prefix = prefix
        self._finished = False

    def resumeProducing(self) -> None:
        if self._finished:
            return
        if self._prefix:
            data, self._prefix = self._prefix, b""
        else:
            data = next(self._chunks, b"")
        if data:
            self._session._write(self._stuffer.feed(data))
            return
        self._finished = True
        self._session._write(self._stuffer.finish())
        self._source.close()
        self._session._sent()

    def stopProducing(self) -> None:
        self._finished = True
        self._source.close()


class SessionFactory(ServerFactory):
    """
    Makes a L{ClientSession} for each client connection.
    """

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings

    def buildProtocol(self, addr: object) -> ClientSession:
        session = ClientSession(self.settings)
        session.factory = self
        return session
