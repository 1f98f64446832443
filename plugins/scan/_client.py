"""
The Twisted client of clamd: INSTREAM scans streamed as fast as clamd reads
them, one per connection, or many on one in a session (L{ClamdSession}), at
most C{maxConnections} connections at once; and a PING, to learn whether
clamd is there.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from ._connection import Connection, FrameProducer, OneProtocolFactory, noDelay
from ._sessionclient import ClamdSession
from ._wire import (
    DEFAULT_CHUNK_SIZE,
    INSTREAM_COMMAND,
    PING_COMMAND,
    ClamdError,
    ClamdUnavailable,
    OverlongReply,
    ReplyParser,
    ScanResult,
    instreamFrames,
    interpretPong,
    interpretReplies,
)

T = TypeVar("T")


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
        self._producer: FrameProducer | None = None
        self._error: ClamdError | None = None
        self.finished: Deferred[ScanResult] = Deferred()

    @property
    def _connection(self) -> Connection:
        return cast(Connection, self.transport)

    def connectionMade(self) -> None:
        noDelay(self.transport)
        self._connection.write(INSTREAM_COMMAND)
        frames = instreamFrames(self._data, self._chunkSize)
        # The data is only referenced by the frame iterator from now on.
        self._data = b""
        self._producer = FrameProducer(self._connection, frames)
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
        except OverlongReply as e:
            # What the replies before it found still counts.
            self._replies.extend(e.complete)
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
        if self._error is not None and not _found(self._replies):
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


def _found(replies: list[bytes]) -> bool:
    """
    Whether C{replies} name a signature (which wins over any error).
    """
    try:
        return interpretReplies(replies).infected
    except (ClamdError, ClamdUnavailable):
        return False


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
        cast(Connection, self.transport).write(PING_COMMAND)

    def abort(self) -> None:
        if self.transport is not None:
            cast(Connection, self.transport).abortConnection()

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
        self._connecting = endpoint.connect(OneProtocolFactory(protocol))  # type: ignore[arg-type]
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
