"""
The client side of a session's wire: L{ClientWire} is the only writer to
the client.  It counts what it sends, dot-stuffs the retrievals it is given
(in memory, or a big message streamed chunk by chunk by a L{MessageSender}
as fast as the client reads), and registers the L{UpstreamThrottle}, so a
client that cannot keep up pauses reading from the upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from twisted.internet.interfaces import IPullProducer, IPushProducer
from zope.interface import implementer

from popproxy._directsend import sendNow
from popproxy._framing import DotStuffer, stuff
from popproxy._retrievalflow import (
    Continuation,
    Refusal,
    Relayed,
    Streamed,
    WholeMessage,
    continueStuffed,
)
from popproxy._upstream import UpstreamConnection


@implementer(IPushProducer)
class UpstreamThrottle:
    """
    When the client cannot take more, stop reading from the upstream.
    """

    def __init__(self, upstream: UpstreamConnection) -> None:
        self._upstream = upstream

    def pauseProducing(self) -> None:
        self._upstream.pauseReading()

    def resumeProducing(self) -> None:
        self._upstream.resumeReading()

    def stopProducing(self) -> None:
        self._upstream.close()


class ChunkedMessage(Protocol):
    """
    A message held out of memory (a spool), read back in chunks.
    """

    def chunks(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@implementer(IPullProducer)
class MessageSender:
    """
    Streams a message to the client, dot-stuffed on the way, one chunk each
    time the transport asks for more; calls C{sent} after the terminating
    line.
    """

    def __init__(
        self,
        source: ChunkedMessage,
        prefix: bytes,
        write: Callable[[bytes], None],
        sent: Callable[[], None],
    ) -> None:
        self._source = source
        self._chunks = source.chunks()
        self._stuffer = DotStuffer()
        self._prefix = prefix
        self._write = write
        self._sent = sent
        self._finished = False

    def resumeProducing(self) -> None:
        if self._finished:
            return
        if self._prefix:
            data, self._prefix = self._prefix, b""
        else:
            data = next(self._chunks, b"")
        if data:
            self._write(self._stuffer.feed(data))
            return
        self._finished = True
        self._write(self._stuffer.finish())
        self._source.close()
        self._sent()

    def stopProducing(self) -> None:
        self._finished = True
        self._source.close()


class ClientWire:
    """
    Writes to one client connection.

    @ivar bytesOut: octets written so far.
    """

    def __init__(self) -> None:
        self._transport: Any = None
        self._throttled = False
        self._sent: Callable[[], None] | None = None
        self.bytesOut = 0

    def attach(self, transport: object) -> None:
        """
        Write to C{transport} from now on (the session's, once connected).
        """
        self._transport = transport

    def write(self, data: bytes) -> None:
        self.bytesOut += len(data)
        sendNow(self._transport, data)

    def reply(self, line: bytes) -> None:
        """
        Write one response line (C{line} without CRLF).
        """
        self.write(line + b"\r\n")

    def throttle(self, upstream: UpstreamConnection) -> None:
        """
        Pause reading from C{upstream} whenever the client's buffer is full.
        """
        self._transport.registerProducer(UpstreamThrottle(upstream), True)
        self._throttled = True

    def unthrottle(self) -> None:
        if self._throttled and self._transport is not None:
            self._throttled = False
            self._transport.unregisterProducer()

    def deliver(self, delivery: Relayed | WholeMessage | Continuation | Refusal) -> None:
        """
        Write a retrieval's answer that is in memory, dot-stuffed where it
        is not already.
        """
        if isinstance(delivery, Relayed):
            self.write(delivery.status + b"\r\n" + delivery.wire)
        elif isinstance(delivery, WholeMessage):
            self.write(delivery.status + b"\r\n" + stuff(delivery.message))
        elif isinstance(delivery, Continuation):
            self.write(continueStuffed(delivery.rest))
        else:
            self.reply(delivery.line)

    def stream(self, delivery: Streamed, sent: Callable[[], None]) -> None:
        """
        Stream a big message, dot-stuffed chunk by chunk, as fast as the
        client reads (a pull producer in place of the throttle); call
        C{sent} once the terminating line is written.
        """
        self.write(delivery.status + b"\r\n")
        self.unthrottle()
        sender = MessageSender(delivery.source, delivery.prefix, self.write, self._streamed)
        self._sent = sent
        self._transport.registerProducer(sender, False)

    def _streamed(self) -> None:
        self._transport.unregisterProducer()
        sent, self._sent = self._sent, None
        if sent is not None:
            sent()
