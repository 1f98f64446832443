"""
The Twisted client of clamd: INSTREAM scans streamed as fast as clamd reads
them, one per connection or many in a session (IDSESSION) on one, at most
C{maxConnections} connections at once; and a PING, to learn whether clamd
is there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPullProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._idsession import (
    END_COMMAND,
    IDSESSION_COMMAND,
    SessionExchange,
    StaleSession,
    UnexpectedReply,
)
from ._wire import (
    DEFAULT_CHUNK_SIZE,
    END_OF_STREAM,
    INSTREAM_COMMAND,
    PING_COMMAND,
    ClamdError,
    ClamdUnavailable,
    ReplyParser,
    ScanResult,
    instreamFrames,
    interpretPong,
    interpretReplies,
)

T = TypeVar("T")

log = Logger()

#: Seconds a closing session may take to flush its last octets before its
#: connection is dropped (a peer that stopped reading).
CLOSE_GRACE = 2.0


class _Connection(Protocol):
    """
    What the scan needs of its transport (TCP and UNIX transports alike).
    """

    def write(self, data: bytes) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def abortConnection(self) -> None: ...

    def loseConnection(self) -> None: ...


@implementer(IPullProducer)
class _FrameProducer:
    """
    Writes the next INSTREAM frame each time the transport has sent what it
    had, so a big stream is never buffered whole a second time.
    """

    def __init__(self, consumer: _Connection, frames: Iterator[bytes]) -> None:
        self._consumer = consumer
        self._frames = frames
        self.done = False

    def resumeProducing(self) -> None:
        if self.done:
            return
        frame = next(self._frames)
        self._consumer.write(frame)
        if frame == END_OF_STREAM:
            self.stopProducing()

    def stopProducing(self) -> None:
        if not self.done:
            self.done = True
            self._consumer.unregisterProducer()


class InstreamProtocol(TwistedProtocol):
    """
    One INSTREAM scan on one connection.

    @ivar finished: fires with the L{ScanResult} when clamd has answered
        and closed the connection, or fails with L{ClamdError},
        L{StreamTooLarge} or L{ClamdUnavailable}.
    """

    def __init__(self, data: bytes, chunkSize: int = DEFAULT_CHUNK_SIZE) -> None:
        self._data = data
        self._chunkSize = chunkSize
        self._parser = ReplyParser()
        self._replies: list[bytes] = []
        self._producer: _FrameProducer | None = None
        self._error: ClamdError | None = None
        self.finished: Deferred[ScanResult] = Deferred()

    @property
    def _connection(self) -> _Connection:
        return cast(_Connection, self.transport)

    def connectionMade(self) -> None:
        _noDelay(self.transport)
        self._connection.write(INSTREAM_COMMAND)
        frames = instreamFrames(self._data, self._chunkSize)
        # The data is only referenced by the frame iterator from now on.
        self._data = b""
        self._producer = _FrameProducer(self._connection, frames)
        self._connection.registerProducer(self._producer, False)

    def abort(self) -> None:
        """
        Drop the connection now, if there is one (a cancelled scan).
        """
        if self.transport is not None:
            self._connection.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        try:
            self._replies.extend(self._parser.feed(data))
        except ClamdError as e:
            self._error = e
            self._stopSending()
            self.abort()
            return
        if self._replies:
            # clamd answers once the stream ended, or early to refuse it
            # (size limit): either way there is nothing more to send.
            self._stopSending()

    def _stopSending(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopSending()
        if self._error is not None:
            self.finished.errback(self._error)
            return
        replies = list(self._replies)
        if self._parser.pending.strip():
            replies.append(self._parser.pending)
        try:
            result = interpretReplies(replies)
        except ClamdUnavailable:
            self.finished.errback(
                ClamdUnavailable(
                    f"clamd closed the connection without an answer ({reason.getErrorMessage()})"
                )
            )
        except ClamdError as e:
            self.finished.errback(e)
        else:
            self.finished.callback(result)


def _noDelay(transport: object) -> None:
    """
    Send small frames at once: without it the small last frame of a stream
    waits for clamd's delayed ACK (Nagle's algorithm), about 40 ms per scan.
    """
    if ITCPTransport.providedBy(transport):
        try:
            cast(ITCPTransport, transport).setTcpNoDelay(True)
        except OSError:
            pass  # a UNIX socket


class SessionProtocol(TwistedProtocol):
    """
    One clamd session (IDSESSION) on one connection: INSTREAM scans one
    after another, each answer attributed to its request by number, and a
    clean end (C{zEND}) however the session stops.

    @ivar closed: fires with C{None} once the connection is gone.
    """

    def __init__(self, chunkSize: int, clock: IReactorTime) -> None:
        self._chunkSize = chunkSize
        self._clock = clock
        self._exchange = SessionExchange()
        self._pending: Deferred[ScanResult] | None = None
        self._producer: _FrameProducer | None = None
        self._ending = False
        self._abortLater: IDelayedCall | None = None
        self.closed: Deferred[None] = Deferred()

    @property
    def _connection(self) -> _Connection:
        return cast(_Connection, self.transport)

    @property
    def usable(self) -> bool:
        """
        Whether another scan can be sent: connected, not ending, idle.
        """
        return (
            self.transport is not None
            and not self._ending
            and not self.closed.called
            and self._pending is None
        )

    def connectionMade(self) -> None:
        _noDelay(self.transport)
        self._connection.write(IDSESSION_COMMAND)

    def scan(self, data: bytes) -> Deferred[ScanResult]:
        """
        Send C{data} as the session's next INSTREAM.  Cancelling the
        Deferred ends the session (clamd's answer could no longer be
        told from the next one's if it were kept).
        """
        if not self.usable:
            raise RuntimeError("the session cannot take a scan now")
        self._connection.write(self._exchange.request())
        self._producer = _FrameProducer(self._connection, instreamFrames(data, self._chunkSize))
        self._connection.registerProducer(self._producer, False)
        self._pending = Deferred(self._cancelScan)
        return self._pending

    def _cancelScan(self, _: Deferred[ScanResult]) -> None:
        self._pending = None
        self.end()

    def dataReceived(self, data: bytes) -> None:
        try:
            reply = self._exchange.feed(data)
        except UnexpectedReply as e:
            self._settleAfterEnd(_foundBefore(e))
            return
        if reply is None:
            return
        # An answer before the stream's end marker went out: clamd would
        # read the next request as more of this stream, so the session ends.
        early = self._producer is not None and not self._producer.done
        try:
            result = interpretReplies([reply])
        except (ClamdError, ClamdUnavailable) as e:
            # clamd closes a session after an ERROR: end it from this side too.
            self._stopSending()
            self._settleAfterEnd(Failure(e))
            return
        if early:
            self._settleAfterEnd(result)
            return
        self._stopSending()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.callback(result)

    def _settleAfterEnd(self, outcome: ScanResult | Failure) -> None:
        # End first: the scan's continuation must find the session unusable.
        pending, self._pending = self._pending, None
        self.end()
        if pending is None:
            return
        if isinstance(outcome, Failure):
            pending.errback(outcome)
        else:
            pending.callback(outcome)

    def end(self) -> None:
        """
        Close the session: a stream cut short gets its end marker (so
        clamd reads C{zEND} as a command), then C{zEND}, then the
        connection is closed once that is sent, or dropped after
        L{CLOSE_GRACE} seconds if the peer does not read it.
        """
        if self._ending or self.transport is None or self.closed.called:
            return
        self._ending = True
        if self._producer is not None and not self._producer.done:
            self._stopSending()
            self._connection.write(END_OF_STREAM)
        self._connection.write(END_COMMAND)
        self._connection.loseConnection()
        self._abortLater = self._clock.callLater(CLOSE_GRACE, self._connection.abortConnection)

    def _stopSending(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopSending()
        self._ending = True
        if self._abortLater is not None and self._abortLater.active():
            self._abortLater.cancel()
        pending, self._pending = self._pending, None
        self.closed.callback(None)
        if pending is None:
            return
        why = reason.getErrorMessage()
        if self._exchange.resendable:
            pending.errback(StaleSession(f"clamd had closed the session ({why})"))
        else:
            pending.errback(ClamdUnavailable(f"clamd closed the session without an answer ({why})"))


def _foundBefore(error: UnexpectedReply) -> ScanResult | Failure:
    """
    The outcome of a scan whose session broke: a signature found in the
    answer that came before wins, as any signature found wins over an
    error (L{interpretReplies}); anything else is the error.
    """
    if error.answer is not None:
        try:
            result = interpretReplies([error.answer])
        except (ClamdError, ClamdUnavailable):
            return Failure(error)
        if result.infected:
            return result
    return Failure(error)


class ClamdSession:
    """
    The scans of one message on one clamd connection (an IDSESSION), one
    scan at a time.  The connection is opened at the first scan, holding
    one of the client's connection slots until it is closed, and opened
    again at the next scan if clamd ended it (it does after an ERROR).  A
    scan that finds the session's connection closed before any octet of
    its answer (clamd ends a session idle past its IdleTimeout) is sent
    once more, in a new session.

    Cancelling a scan (its time is up) ends the session; L{close} ends it
    when the message is done.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        slots: DeferredSemaphore,
        chunkSize: int,
        clock: IReactorTime,
    ) -> None:
        self._endpoint = endpoint
        self._slots = slots
        self._chunkSize = chunkSize
        self._clock = clock
        self._protocol: SessionProtocol | None = None
        self._closing = False

    def scan(self, data: bytes) -> Deferred[ScanResult]:
        """
        Send C{data} to clamd with INSTREAM in this session.

        @return: a Deferred firing with a L{ScanResult}, or failing with
            L{ClamdUnavailable}, L{ClamdError} or L{StreamTooLarge}.
        """
        return Deferred.fromCoroutine(self._scan(data))

    async def _scan(self, data: bytes) -> ScanResult:
        if self._closing:
            raise RuntimeError("the session is closed")
        protocol = self._protocol
        if protocol is not None and protocol.usable:
            try:
                return await protocol.scan(data)
            except StaleSession as e:
                log.info("{reason}: the scan is sent again in a new session", reason=str(e))
        protocol = await self._open()
        return await protocol.scan(data)

    async def _open(self) -> SessionProtocol:
        """
        A new session connection, once a connection slot is free.
        """
        await self._slots.acquire()
        protocol = SessionProtocol(self._chunkSize, self._clock)
        try:
            await self._endpoint.connect(_OneProtocolFactory(protocol))
        except (CancelledError, ConnectingCancelledError):
            self._slots.release()
            raise CancelledError() from None
        except Exception as e:
            self._slots.release()
            raise ClamdUnavailable(f"cannot reach clamd: {e}") from None
        protocol.closed.addCallback(self._released)
        self._protocol = protocol
        return protocol

    def _released(self, _: object) -> None:
        self._slots.release()

    def close(self) -> Deferred[None]:
        """
        End the session (C{zEND}) if one is open.

        @return: a Deferred firing once its connection is gone.
        """
        self._closing = True
        protocol, self._protocol = self._protocol, None
        done: Deferred[None] = Deferred()
        if protocol is None or protocol.closed.called:
            done.callback(None)
            return done
        protocol.closed.addCallback(done.callback)
        protocol.end()
        return done


class PingProtocol(TwistedProtocol):
    """
    One PING on one connection.

    @ivar finished: fires with C{None} when clamd answered C{PONG}, or
        fails with L{ClamdError} (another answer) or L{ClamdUnavailable}
        (no answer).
    """

    def __init__(self) -> None:
        self._parser = ReplyParser()
        self.finished: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        cast(_Connection, self.transport).write(PING_COMMAND)

    def abort(self) -> None:
        if self.transport is not None:
            cast(_Connection, self.transport).abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        try:
            replies = self._parser.feed(data)
        except ClamdError:
            self.finished.errback()
            self.abort()
            return
        if replies:
            self._settle(replies)
            self.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.finished.called:
            pending = self._parser.pending.strip()
            self._settle([pending] if pending else [])

    def _settle(self, replies: list[bytes]) -> None:
        try:
            interpretPong(replies)
        except (ClamdError, ClamdUnavailable):
            self.finished.errback()
        else:
            self.finished.callback(None)


class ClamdClient:
    """
    Scans octets with the clamd at C{endpoint}: one connection per scan
    (L{scan}), or many scans on one (L{session}); at most C{maxConnections}
    connections at once, further scans wait.

    A scan has no time limit of its own: cancel its Deferred (e.g. with
    C{addTimeout}) and the connection, or the attempt to connect, is
    abandoned and its slot freed.

    @param clock: times the grace of a closing session (see
        L{SessionProtocol.end}), so a clamd that stopped reading cannot
        hold a session's connection open; required (the reactor, or a
        C{Clock} in tests), since any client can open sessions.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        maxConnections: int = 4,
        chunkSize: int = DEFAULT_CHUNK_SIZE,
        *,
        clock: IReactorTime,
    ) -> None:
        if maxConnections < 1:
            raise ValueError("maxConnections must be at least 1")
        self._endpoint = endpoint
        self._slots = DeferredSemaphore(maxConnections)
        self._chunkSize = chunkSize
        self._clock = clock

    @property
    def waiting(self) -> int:
        """
        How many scans wait for a free connection.
        """
        return len(self._slots.waiting)

    def scan(self, data: bytes) -> Deferred[ScanResult]:
        """
        Send C{data} to clamd with INSTREAM.

        @return: a Deferred firing with a L{ScanResult}, or failing with
            L{ClamdUnavailable}, L{ClamdError} or L{StreamTooLarge}.
        """
        return self._slots.run(self._scanNow, data)

    def session(self) -> ClamdSession:
        """
        A session for the scans of one message: they share one connection
        (and one connection slot) until it is closed.
        """
        return ClamdSession(self._endpoint, self._slots, self._chunkSize, self._clock)

    def ping(self) -> Deferred[None]:
        """
        Ask clamd whether it is there (outside the connection limit: it
        is one short exchange).

        @return: a Deferred firing with C{None} on C{PONG}, or failing with
            L{ClamdUnavailable} or L{ClamdError}; no time limit of its own
            (cancel it to give up).
        """
        return _PendingScan[None](self._endpoint, PingProtocol()).result

    def _scanNow(self, data: bytes) -> Deferred[ScanResult]:
        scan = InstreamProtocol(data, self._chunkSize)
        return _PendingScan[ScanResult](self._endpoint, scan).result


class _Exchange(Protocol[T]):
    """
    What L{_PendingScan} needs of a protocol: one answer per connection.
    """

    @property
    def transport(self) -> object: ...

    @property
    def finished(self) -> Deferred[T]: ...

    def abort(self) -> None: ...


class _PendingScan(Generic[T]):
    """
    One exchange (a scan or a PING) from connecting to its answer.
    Cancelling C{result} abandons the connection, or the attempt to
    connect, and nothing more is delivered.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, protocol: _Exchange[T]) -> None:
        self._protocol = protocol
        self._cancelled = False
        self.result: Deferred[T] = Deferred(self._cancel)
        self._connecting = endpoint.connect(_OneProtocolFactory(protocol))  # type: ignore[arg-type]
        self._connecting.addCallbacks(self._connected, self._notConnected)

    def _cancel(self, result: Deferred[T]) -> None:
        self._cancelled = True
        if self._protocol.transport is None:
            self._connecting.cancel()
        else:
            self._protocol.abort()

    def _deliver(self, outcome: T | Failure) -> None:
        if self._cancelled:
            return
        if isinstance(outcome, Failure):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)

    def _connected(self, _: object) -> None:
        self._protocol.finished.addBoth(self._deliver)

    def _notConnected(self, failure: Failure) -> None:
        reason = f"cannot reach clamd: {failure.getErrorMessage()}"
        self._deliver(Failure(ClamdUnavailable(reason)))


class _OneProtocolFactory(Factory):
    """
    Hands out one given protocol, quietly (a factory logs every start and
    stop unless told otherwise).
    """

    noisy = False

    def __init__(self, protocol: TwistedProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> TwistedProtocol:
        return self._protocol
