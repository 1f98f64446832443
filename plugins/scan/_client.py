"""
The Twisted client of clamd: one INSTREAM scan per connection, streamed as
fast as clamd reads it, at most C{maxConnections} connections at once; and
a PING, to learn whether clamd is there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import (
    IAddress,
    IPullProducer,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

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


class _Connection(Protocol):
    """
    What the scan needs of its transport (TCP and UNIX transports alike).
    """

    def write(self, data: bytes) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def abortConnection(self) -> None: ...


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
        if ITCPTransport.providedBy(self.transport):
            # Without it the small last frame waits for clamd's delayed ACK
            # (Nagle's algorithm): about 40 ms more per scan.
            try:
                cast(ITCPTransport, self.transport).setTcpNoDelay(True)
            except OSError:
                pass  # a UNIX socket
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
    Scans octets with the clamd at C{endpoint}, one connection per scan, at
    most C{maxConnections} connections at once; further scans wait.

    A scan has no time limit of its own: cancel its Deferred (e.g. with
    C{addTimeout}) and the connection, or the attempt to connect, is
    abandoned and its slot freed.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        maxConnections: int = 4,
        chunkSize: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if maxConnections < 1:
            raise ValueError("maxConnections must be at least 1")
        self._endpoint = endpoint
        self._slots = DeferredSemaphore(maxConnections)
        self._chunkSize = chunkSize

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
