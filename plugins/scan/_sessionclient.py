"""
The Twisted client of a clamd session (IDSESSION): the scans of one message
one after another on one connection, each answer attributed to its own
scan, the session opened again when clamd ended it and ended with C{zEND}
however the scanning stops.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._connection import Connection, FrameProducer, OneProtocolFactory, noDelay
from ._idsession import (
    END_COMMAND,
    IDSESSION_COMMAND,
    SessionExchange,
    StaleSession,
    UnexpectedReply,
)
from ._wire import (
    END_OF_STREAM,
    ClamdError,
    ClamdUnavailable,
    ScanResult,
    instreamFrames,
    interpretReplies,
)

log = Logger()

#: Seconds a closing session may take to flush its last octets before its
#: connection is dropped (a peer that stopped reading).
CLOSE_GRACE = 2.0


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
        self._producer: FrameProducer | None = None
        self._ending = False
        self._abortLater: IDelayedCall | None = None
        self.closed: Deferred[None] = Deferred()

    @property
    def _connection(self) -> Connection:
        return cast(Connection, self.transport)

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
        noDelay(self.transport)
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
        self._producer = FrameProducer(self._connection, instreamFrames(data, self._chunkSize))
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
            await self._endpoint.connect(OneProtocolFactory(protocol))
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
