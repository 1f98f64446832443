"""
The client side of the proxy: one POP3 session, relayed to its upstream.

L{ClientSession} is a protocol shell: it frames the client's commands
strictly (CRLF only, 255 octets), checks each against the RFC 1939 state it
is in (L{popproxy._commandsyntax}), runs them one at a time and in order
(pipelined commands wait in a bounded queue), and owns the session's
lifecycle: greeting, idle timeout, STLS, the end.  A command goes to the
C{do_*} method of its state's room (L{Authorization} before login,
L{Transaction} after), which returns what the session runs; CAPA, QUIT and
STLS are the session's own C{do_*} methods.  The collaborators never hold
the session:

  - L{UpstreamSlot}: the one upstream connection (connect, reconnect, drop
    without QUIT), and L{UpstreamLink}: request methods over it;
  - L{Authorization}: the login commands (USER/PASS, AUTH and APOP) checked
    and carried upstream by the L{LoginExchange}, each ending in a
    L{LoginAnswer} (failed logins are counted and delayed there);
  - L{ClientTLS}: whether the client's connection is encrypted, whether
    logins wait for TLS, and STLS;
  - L{CapabilityAnswer}: CAPA, from the upstream, its cached answer or the
    proxy alone;
  - L{Transaction}: the TRANSACTION state's mail commands checked, each
    coming to one step to run: a relayed answer, listings rewritten over
    the L{MailboxView}, or a L{RetrievalFlow}'s delivery;
  - L{Relay} and L{UidRecorder}: responses passed on as they arrive;
  - L{SessionRecord}: who the session is and what it did (its log lines,
    metrics and the snapshot the process's registry of open sessions reads).

Responses stream back to the client; a slow client pauses reading from the
upstream (L{UpstreamThrottle}), so no mailbox is ever held in memory.

Mail is never lost: DELE and QUIT reach the upstream only when the client
sends them, and a session that ends any other way drops the upstream
connection without QUIT, so the upstream server deletes nothing.  A
retrieval that fails half-way is cut off without the terminating dot line,
so no client stores a truncated message as complete.  The send step
(C{_sendDelivery}) is the only place that dot-stuffs and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from popproxy._authorization import Authorization, LoginRun
from popproxy._capabilityanswer import CapabilityAnswer
from popproxy._clienttls import ClientTLS
from popproxy._clientwire import ClientWire
from popproxy._commandqueue import CommandQueue
from popproxy._commandsyntax import (
    AUTHORIZATION,
    TRANSACTION,
    UPDATE,
    parseCommand,
)
from popproxy._framing import CommandLine, FramingError
from popproxy._loginexchange import LoginAnswer, LoginExchange
from popproxy._mailboxview import MailboxView
from popproxy._printable import PrintableLogger
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._responserelay import Relay, UidRecorder
from popproxy._retrievalflow import Cut, Delivery, Filtered, Spool, Streamed
from popproxy._sessionguard import SessionGuard
from popproxy._sessionrecord import SessionRecord, SessionSnapshot, describePeer
from popproxy._sessionsettings import SessionSettings
from popproxy._transaction import Exchange, Forward, Retrieve, Step, Transaction
from popproxy._upstream import UpstreamConnection, describeFailure
from popproxy._upstreamlink import Collector, UpstreamLink
from popproxy._upstreamslot import UpstreamSlot

__all__ = [
    "AUTHORIZATION",
    "TRANSACTION",
    "UPDATE",
    "ClientSession",
    "SessionFactory",
    "SessionSettings",
]

#: Seconds a cut-off client gets to read what was relayed before it.
LINGER = 60.0

#: What a client is told when the proxy stops between its commands (RFC
#: 2449: a temporary condition, so the client tries again later).
STOPPING = b"-ERR [SYS/TEMP] the proxy is stopping\r\n"

#: What an upstream response is handed to.
Handler = Relay | Spool | Collector


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
        self._queue = CommandQueue(self._pauseReading, self._resumeReading)
        self._pumping = False
        self._busy = False
        self._closing = False
        #: The proxy is stopping: no new command runs.
        self._draining = False
        self.state = AUTHORIZATION
        self._handler: Handler | None = None
        self._wire = ClientWire()
        self._write = self._wire.write
        self._reply = self._wire.reply
        self.record = SessionRecord(
            clock=settings.clock,
            upstream=lambda: self._slot.address,
            bytesOut=lambda: self._wire.bytesOut,
            listener=settings.listener,
            metrics=settings.metrics,
        )
        self._slot = UpstreamSlot(
            settings.connect,
            session=self.record.sessionId,
            closing=self._isClosing,
            attached=self._wire.throttle,
            detached=self._wire.unthrottle,
            lost=self._upstreamLost,
            connectFailed=settings.metrics.upstreamConnectFailed,
        )
        self._link = UpstreamLink(self._relay)
        self._mailbox: MailboxView[Filtered] = MailboxView(settings.chain.cacheBytes)
        self._guard = SessionGuard(settings, end=self._end, releaseUpstream=self._releaseUpstream)
        self._furnishStates(settings, self.record.sessionId)

    def _furnishStates(self, settings: SessionSettings, session: str) -> None:
        """
        The rooms the session hands each state's commands to: the login
        commands and TLS before login, the mail commands after, CAPA in
        both.
        """
        self._login = LoginExchange.forSession(settings, self._slot, self._link, session)
        self._tls = ClientTLS(
            settings.serverTLS,
            implicitTLS=settings.implicitTLS,
            requireTLS=settings.requireTLS,
            session=session,
            reply=self._reply,
            startTLS=self._startTLS,
        )
        self._authorization = Authorization(
            self._login,
            session=session,
            write=self._write,
            lineLimit=self._queue.limitLine,
            loginsAllowed=self._tls.loginsAllowed,
            attempted=self._guard.loginCommand,
            loggedIn=self._enterTransaction,
            countInvalid=self._guard.enforced,
        )
        self._transaction = Transaction.forSession(
            settings,
            self._link,
            self._mailbox,
            reply=self._reply,
            write=self._write,
            closing=self._isClosing,
            contextFor=self.record.filterContext,
        )
        #: Each state's room of commands, and the step that runs what its
        #: do_ methods return.
        self._rooms: dict[str, tuple[object, Callable[[Any], None]]] = {
            AUTHORIZATION: (self._authorization, self._logIn),
            TRANSACTION: (self._transaction, self._run),
        }
        self._capa = CapabilityAnswer(
            connect=self._slot.ensure,
            isUsable=self._slot.isUsable,
            ask=self._link.capabilities,
            cache=settings.capabilities,
            sharedUpstream=settings.router.default if settings.router.static else None,
            cacheFirst=self._guard.enforced,
        )

    # Lifecycle

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._wire.attach(self.transport)
        peer = self.transport.getPeer()
        self.record.client = describePeer(peer)
        self._login.clientAddress = str(getattr(peer, "host", peer))
        self._slot.origin = ClientOrigin.of(peer, self.transport.getHost())
        # Commands that arrive before the answer wait for the greeting.
        self._busy = True
        self._guard.admit(getattr(peer, "host", None), self.record.client).addCallback(
            self._admitted
        )

    def _admitted(self, refusal: bytes | None) -> None:
        assert self.transport is not None
        if not self.connected:
            return
        if refusal is not None:
            self._closing = True
            self._write(refusal)
            self.transport.loseConnection()
            return
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            try:
                setNoDelay(True)
            except OSError:
                pass
        self.record.opened()
        self._tls.connected(self.transport)
        self.setTimeout(self._settings.idleTimeout)
        if self._settings.stop is not None:
            self._settings.stop.opened(self)
            if self._closing:
                return
        self._guard.opened()
        router = self._settings.router
        if router.static and router.default is not None and self._guard.connectToGreet():
            # One upstream for everybody: connect now and greet once it has
            # greeted, with its APOP timestamp, so that a client's APOP
            # digest relays unchanged and CAPA tells the truth before login.
            self._busy = True
            self._slot.ensure(router.default).addBoth(self._greet)
        else:
            self._greet(None)

    def _greet(self, upstream: UpstreamConnection | Failure | None) -> None:
        if self._closing:
            return
        greeting = upstream.greeting if isinstance(upstream, UpstreamConnection) else None
        line = self._authorization.greeting(greeting.line if greeting is not None else None)
        self._busy = False
        if not self._draining:
            self._reply(line)
        self._holdUpstream()
        self._pump()

    def dataReceived(self, data: bytes) -> None:
        self.record.bytesIn += len(data)
        if self._closing:
            return
        try:
            completed = self._queue.feed(data)
        except FramingError:
            self._queue.clear()
            self._end("client sent an overlong line", b"-ERR line too long, closing\r\n")
            return
        if self._guard.fed(completed, self._queue.partial) and not self._busy:
            self.resetTimeout()
        self._pump()

    def _pauseReading(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _resumeReading(self) -> None:
        assert self.transport is not None
        self.transport.resumeProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.setTimeout(None)
        self._closing = True
        self._queue.clear()
        self._slot.close()
        self._guard.closed()
        if self._guard.refused:
            return
        if self._mailbox.peakCachedBytes:
            self.log.info(
                "session {session} cache: peak {peak} of {budget} bytes",
                session=self.record.sessionId,
                peak=self._mailbox.peakCachedBytes,
                budget=self._mailbox.cacheBudget,
            )
        # Drop what the session holds, so a closed session frees its
        # filtered messages now rather than when the cycle collector runs.
        self._mailbox.clear()
        self._handler = None
        pending = self._login.pending
        self.record.closed(pending.login if pending else None)
        if self._settings.sessionClosed is not None:
            self._settings.sessionClosed()
        if self._settings.stop is not None:
            self._settings.stop.closed(self)

    def snapshot(self) -> SessionSnapshot:
        """
        This session as it stands now (for the process's list of open ones).
        """
        return self.record.snapshot()

    def timeoutConnection(self) -> None:
        if self._busy and not self._closing:
            # Waiting for the upstream or the chain, which have their own
            # time limits: the client is not idle.
            self.setTimeout(self.timeOut)
            return
        self._end("idle timeout (autologout)", b"-ERR [SYS/PERM] autologout: idle for too long\r\n")

    def _holdUpstream(self) -> None:
        """
        Before login, an upstream connection with no command running is
        kept only for C{[limits] upstream_hold} seconds.
        """
        if self.state == AUTHORIZATION and self._slot.connection is not None:
            self._guard.upstreamIdle()

    def _releaseUpstream(self) -> None:
        if (
            self.state != AUTHORIZATION
            or self._closing
            or self._busy
            or self._authorization.midLogin
        ):
            return
        self.log.info(
            "session {session}: no login command yet; upstream connection released",
            session=self.record.sessionId,
        )
        self._slot.drop()
        self._guard.upstreamReleased()

    def finishThenClose(self) -> None:
        """
        The proxy is stopping: end the session once the command in flight
        is answered, or now if none is, with L{STOPPING} (commands the
        client sent meanwhile are not run; no QUIT upstream).
        """
        self._draining = True
        self._pump()

    def cut(self) -> None:
        """
        The stop's grace period is over: close the client connection at
        once, dropping what was not yet sent (a response in flight never
        gets its terminating line), and the upstream connection (no QUIT).
        """
        self._closing = True
        self.record.ending = "proxy stopping: cut when the grace period ended"
        self._queue.clear()
        self._slot.close()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _isClosing(self) -> bool:
        return self._closing

    def _end(self, why: str, lastWords: bytes = b"") -> None:
        """
        End the session: say C{lastWords}, close the client connection, drop
        the upstream connection without QUIT.
        """
        if self._closing:
            return
        self._closing = True
        self.record.ending = why
        self._queue.clear()
        if lastWords:
            self._write(lastWords)
        self._slot.close()
        # A transport closes only once its producer is gone: with the
        # upstream still registered (and paused by a slow client), the
        # connection would never close after its buffer drained.
        self._wire.unthrottle()
        if self.transport is not None:
            self.transport.loseConnection()

    def _hangUp(self, why: str) -> None:
        """
        Close the client connection once what was written is flushed, the
        upstream connection at once (no QUIT).
        """
        self._closing = True
        self.record.ending = why
        self._slot.drop()
        assert self.transport is not None
        self.transport.loseConnection()

    # Command dispatch

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._queue and not self._busy and not self._closing and not self._draining:
                self._dispatch(self._queue.take())
        finally:
            self._pumping = False
        if self._draining and not self._busy:
            self._end("proxy stopping", STOPPING)
        if not self._closing:
            self._queue.caughtUp()

    def _dispatch(self, command: CommandLine) -> None:
        if self._authorization.saslWaiting:
            self._logIn(self._authorization.saslResponse(command))
            return
        self.record.commands += 1
        if command.tooLong:
            self._refuseCommand(b"-ERR command line too long", "too_long")
            return
        parsed = parseCommand(command.line, self.state)
        if isinstance(parsed, bytes):
            self._refuseCommand(parsed)
            return
        # The state's room answers its commands, and the session runs what
        # it returns; CAPA, QUIT and STLS are the session's own do_ methods.
        name = f"do_{parsed.name}"
        room, run = self._rooms.get(self.state, (None, None))
        handler = getattr(room, name, None)
        if handler is not None and run is not None:
            run(handler(parsed.arguments))
        else:
            getattr(self, name)(parsed.arguments)

    def _refuseCommand(self, line: bytes, reason: str = "invalid") -> None:
        """
        Refuse an invalid command; before login, with C{[limits]}, it
        counts (and is delayed) as a failed login.
        """
        if self.state != AUTHORIZATION:
            self._reply(line)
            return
        if self._guard.enforced:
            self._settings.metrics.invalidCommandBeforeLogin(reason)
        self._logIn(self._authorization.refuse(line))

    def _commandDone(self) -> None:
        self._handler = None
        self._busy = False
        if self.state == UPDATE:
            return
        if not self._closing:
            self.setTimeout(self._settings.idleTimeout)
        self._holdUpstream()
        self._pump()

    def _relay(self, line: bytes, multiLine: bool = False, handler: Handler | None = None) -> None:
        """
        Send C{line} upstream and relay the response to the client (or hand
        it to C{handler}).
        """
        upstream = self._slot.connection
        if upstream is None or not upstream.connected:
            self._reply(b"-ERR [SYS/TEMP] lost the connection to the mail server")
            self._end("upstream connection lost")
            return
        # The idle timer keeps running (re-armed while busy, see
        # timeoutConnection): cheaper than a new timer for every command.
        self._busy = True
        self._handler = handler or Relay(self._write, self._commandDone)
        upstream.sendCommand(line, multiLine, self._handler)

    def _answer(self, exchange: Coroutine[Deferred[Any], Any, bytes]) -> None:
        """
        Run one command's exchange with the upstream (an C{async} method
        that awaits L{UpstreamLink} requests) and send the bytes it ends
        with.
        """
        self._busy = True
        Deferred.fromCoroutine(exchange).addCallbacks(self._answered, self._exchangeBroke)

    def _answered(self, data: bytes) -> None:
        if not self._closing:
            self._write(data)
            self._commandDone()

    def _exchangeBroke(self, failure: Failure) -> None:
        self.log.failure(
            "session {session}: command failed", failure, session=self.record.sessionId
        )
        self._end("command failed", b"-ERR [SYS/TEMP] the command failed\r\n")

    # The upstream connection

    def _upstreamLost(self, reason: Failure) -> None:
        if self._closing:
            return
        self._settings.metrics.upstreamLost()
        why = describeFailure(reason)
        self.log.warn(
            "session {session}: upstream {upstream} lost: {reason}",
            session=self.record.sessionId,
            upstream=str(self._slot.address),
            reason=reason.getErrorMessage(),
        )
        handler = self._handler
        if handler is not None and handler.inBody:
            # Half a response has reached the client: end the connection
            # without the terminating line, so it cannot pass for complete.
            # What was relayed is still flushed; a client that stopped
            # reading is cut off after a while.
            self._closing = True
            self.record.ending = f"upstream lost mid-response: {why}"
            assert self.transport is not None
            self.transport.loseConnection()
            transport = self.transport
            self._settings.clock.callLater(LINGER, self._abortIfConnected, transport)
        elif self._busy:
            self._end(f"upstream lost: {why}", f"-ERR [SYS/TEMP] {why}\r\n".encode("ascii"))
        elif self.state == TRANSACTION:
            self._end(f"upstream lost: {why}")
        # Before login a new USER reconnects.

    def _abortIfConnected(self, transport: object) -> None:
        if self.connected:
            transport.abortConnection()  # type: ignore[attr-defined]

    # Either state

    def do_CAPA(self, arguments: bytes) -> None:
        if arguments:
            self._reply(b"-ERR CAPA takes no arguments")
            return
        beforeLogin = self.state == AUTHORIZATION
        answering = self._capa.answer(
            self._slot.address,
            beforeLogin=beforeLogin,
            loginsAllowed=self._tls.loginsAllowed(),
            offerSTLS=self._tls.offersSTLS() and beforeLogin,
        )
        self._answer(answering)

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
        Deferred.fromCoroutine(self._quit()).addErrback(self._exchangeBroke)

    async def _quit(self) -> None:
        status = await self._link.shortCommand(b"QUIT")
        self._reply(status.line)
        self._busy = False
        self._hangUp("client quit" if status.ok else "client quit; upstream update failed")

    # AUTHORIZATION state (its login commands: L{Authorization})

    def do_STLS(self, arguments: bytes) -> None:
        self._tls.stls(arguments)

    def _startTLS(self, creator: object) -> None:
        # RFC 2595 section 4: forget what the client said before TLS.  The
        # commands it pipelined behind STLS arrived in clear text and may
        # have been injected by a man in the middle: they are discarded,
        # never executed once TLS is up (the CVE-2011-0411 class).
        self._queue.restart()
        self._authorization.forget()
        assert self.transport is not None
        self.transport.startTLS(creator)  # type: ignore[attr-defined]

    def _logIn(self, exchange: LoginRun | None) -> None:
        """
        Run a login command's exchange, if it has one, and act on how it
        ended.
        """
        if exchange is not None:
            self._busy = True
            answering = Deferred.fromCoroutine(exchange)
            answering.addCallbacks(self._loginAnswered, self._exchangeBroke)

    def _loginAnswered(self, answer: LoginAnswer) -> None:
        if self._closing:
            return
        hangUp = self._authorization.answered(answer)
        if hangUp is None:
            self._commandDone()
        else:
            self._end(hangUp)

    def _enterTransaction(self, login: str) -> None:
        self.state = TRANSACTION
        self._guard.loggedIn()
        self.record.user = login

    # TRANSACTION state (its mail commands: L{Transaction})

    def _run(self, step: Step | None) -> None:
        """
        Run the step a TRANSACTION command came to (none: it was refused).
        """
        if isinstance(step, Forward):
            handler = None
            if step.notesUids:
                handler = UidRecorder(self._write, self._commandDone, self._mailbox, step.multiLine)
            self._relay(step.line, step.multiLine, handler)
        elif isinstance(step, Exchange):
            self._answer(step.answer)
        elif isinstance(step, Retrieve):
            self._busy = True
            retrieving = Deferred.fromCoroutine(step.delivery)
            retrieving.addCallbacks(self._sendDelivery, self._retrievalBroke)

    # The send step

    def _sendDelivery(self, delivery: Delivery | None) -> None:
        """
        Send what a retrieval delivers (the wire dot-stuffs it), or hang up.
        """
        if delivery is None or self._closing:
            return
        if isinstance(delivery, Cut):
            self._hangUp(f"filter failed during keepalive: {delivery.reason}")
        elif isinstance(delivery, Streamed):
            self._busy = True
            self._wire.stream(delivery, self._streamed)
        else:
            self._wire.deliver(delivery)
            self._commandDone()

    def _streamed(self) -> None:
        if self._slot.connection is not None and not self._closing:
            self._wire.throttle(self._slot.connection)
        self._commandDone()

    def _retrievalBroke(self, failure: Failure) -> None:
        self.log.failure(
            "session {session}: retrieval failed", failure, session=self.record.sessionId
        )
        self._end("retrieval failed", b"-ERR [SYS/TEMP] the message could not be retrieved\r\n")


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
